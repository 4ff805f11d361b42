#!/bin/bash
# Same-run compression times of calderalab's caldera rank-64 row against GPTQModel GPTQ (the README's
# "Speed" table): each configuration made afresh, one after the other, on a machine with nothing else
# running. Earlier outputs and stores of these rows are moved under $CACHE/aside/ so that nothing is reused.
#
#     benchmarks/speed_pairs.sh [CACHE] [all|fast|cli]
#
# CACHE: peers.py --cache (default ~/.cache/calderalab/peers). all (default): GPTQModel, the fast row
# (--hessian-dtype bfloat16 --svd randomized) and the default row at 3 and 4 bits, then both on Ray at one
# thread per task (3 bits). fast: GPTQModel and the fast rows only (local at 3 and 4 bits, Ray at 3).
# cli: 3 bits only, GPTQModel and the fast row local and on Ray. Each ends with the fast 3-bit row as a
# user runs it, `calderalab compress` (the model opened layer by layer, Hessians captured as the layers
# stream), timed whole, locally and on Ray at one thread per task.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${1:-$HOME/.cache/calderalab/peers}
WHICH=${2:-all}
case "$WHICH" in all|fast|cli) ;; *) echo "speed_pairs.sh: second argument must be all, fast or cli, got '$WHICH'" >&2; exit 2;; esac
PY=${PYTHON:-.venv/bin/python}
ASIDE="$CACHE/aside/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$ASIDE"
shopt -s nullglob
BITS="3 4"
GPTQ="$CACHE/outputs/gptqmodel-*-b[34]-g64-*"
old_stores="$CACHE/calderalab/*-caldera-b[34]-grow-h1-d0.01-r64-lr4-o4-i3-s0*"
hessians="$CACHE/hessians-*.pt"
if [ "$WHICH" != all ]; then  # only the fast rows are remade, so only their (bfloat16) Hessians are retimed
  old_stores="$CACHE/calderalab/*-caldera-b[34]-grow-h1-d0.01-r64-lr4-o4-i3-s0-rsvd*"
  hessians="$CACHE/hessians-*-bfloat16.pt"
fi
if [ "$WHICH" = cli ]; then
  BITS=3
  GPTQ="$CACHE/outputs/gptqmodel-*-b3-g64-*"
  old_stores="$CACHE/calderalab/*-caldera-b3-grow-h1-d0.01-r64-lr4-o4-i3-s0-rsvd*"
fi
for old in $GPTQ $old_stores $hessians; do  # collected again, and timed
  mv "$old" "$ASIDE/"
done
ROW="--methods caldera --ranks 64 --groups row --codebooks scalar"
FAST="--hessian-dtype bfloat16 --svd randomized"
RAY="--executor ray --threads 1"
run() { PYTHONPATH=src "$PY" benchmarks/peers.py --cache "$CACHE" --plot /tmp/speed-pairs.png "$@"; }
for b in $BITS; do
  run --peers gptqmodel --methods "" --bits $b
  run --peers "" $ROW --bits $b $FAST
  if [ "$WHICH" = all ]; then run --peers "" $ROW --bits $b; fi
done
run --peers "" $ROW --bits 3 $FAST $RAY
if [ "$WHICH" = all ]; then run --peers "" $ROW --bits 3 $RAY; fi
cli() {
  local out started
  out=$(mktemp -d)
  started=$(date +%s.%N)
  PYTHONPATH=src "$PY" -m calderalab compress smollm2 --out "$out/store" --bits 3 --rank 64 --lr-bits 4 \
    --calib ../shared/data/wikitext-2/valid.txt --calib-samples 128 --seq-len 512 $FAST "$@" > "$out/log" 2>&1
  echo "calderalab compress smollm2 (3-bit rank 64, $FAST${1:+ $*}): $("$PY" -c "print(f'{$(date +%s.%N) - $started:.0f}')") s whole"
  rm -rf "$out"
}
cli
cli $RAY
# Each run prints its row with the time; `peers.py --replot FILE` on a table of these rows prints the
# speed lines (the README's came that way).

#!/bin/bash
# Same-run compression times of calderalab's caldera rank-64 row against GPTQModel GPTQ (the README's
# "Speed" table): each configuration made afresh, one after the other, on a machine with nothing else
# running. Earlier outputs and stores of these rows are moved under $CACHE/aside/ so that nothing is reused.
#
#     benchmarks/speed_pairs.sh [CACHE] [all|fast]
#
# CACHE: peers.py --cache (default ~/.cache/calderalab/peers). all (default): GPTQModel, the fast row
# (--hessian-dtype bfloat16 --svd randomized) and the default row at 3 and 4 bits, then both on Ray at one
# thread per task (3 bits). fast: GPTQModel and the fast rows only (local at 3 and 4 bits, Ray at 3). Both
# end with the fast 3-bit row as a user runs it, `calderalab compress` (the model opened layer by layer,
# Hessians captured as the layers stream), timed whole.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${1:-$HOME/.cache/calderalab/peers}
WHICH=${2:-all}
case "$WHICH" in all|fast) ;; *) echo "speed_pairs.sh: second argument must be all or fast, got '$WHICH'" >&2; exit 2;; esac
PY=${PYTHON:-.venv/bin/python}
ASIDE="$CACHE/aside/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$ASIDE"
shopt -s nullglob
old_stores="$CACHE/calderalab/*-caldera-b[34]-grow-h1-d0.01-r64-lr4-o4-i3-s0*"
[ "$WHICH" = fast ] && old_stores="$CACHE/calderalab/*-caldera-b[34]-grow-h1-d0.01-r64-lr4-o4-i3-s0-rsvd*"
for old in "$CACHE"/outputs/gptqmodel-*-b[34]-g64-* $old_stores; do
  mv "$old" "$ASIDE/"
done
rm -f "$CACHE"/hessians-*.pt  # collected again, and timed
ROW="--methods caldera --ranks 64 --groups row --codebooks scalar"
FAST="--hessian-dtype bfloat16 --svd randomized"
run() { PYTHONPATH=src "$PY" benchmarks/peers.py --cache "$CACHE" --plot /tmp/speed-pairs.png "$@"; }
for b in 3 4; do
  run --peers gptqmodel --methods "" --bits $b
  run --peers "" $ROW --bits $b $FAST
  if [ "$WHICH" = all ]; then run --peers "" $ROW --bits $b; fi
done
run --peers "" $ROW --bits 3 $FAST --executor ray --threads 1
if [ "$WHICH" = all ]; then run --peers "" $ROW --bits 3 --executor ray --threads 1; fi
OUT=$(mktemp -d)
started=$(date +%s.%N)
PYTHONPATH=src "$PY" -m calderalab compress smollm2 --out "$OUT/store" --bits 3 --rank 64 --lr-bits 4 \
  --calib ../shared/data/wikitext-2/valid.txt --calib-samples 128 --seq-len 512 $FAST > "$OUT/log" 2>&1
echo "calderalab compress smollm2 (3-bit rank 64, $FAST, local): $("$PY" -c "print(f'{$(date +%s.%N) - $started:.0f}')") s whole"
rm -rf "$OUT"
# Each run prints its row with the time; `peers.py --replot FILE` on a table of these rows prints the
# speed lines (the README's came that way).

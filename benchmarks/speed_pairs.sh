#!/bin/bash
# Same-run compression times of calderalab's caldera rank-64 row against GPTQModel GPTQ (the README's
# "Speed" table): each configuration made afresh, one after the other, on a machine with nothing else
# running. Earlier outputs and stores of these rows are moved under $CACHE/aside/ so that nothing is reused.
#
#     benchmarks/speed_pairs.sh [CACHE]      (CACHE: peers.py --cache, default ~/.cache/calderalab/peers)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${1:-$HOME/.cache/calderalab/peers}
PY=${PYTHON:-.venv/bin/python}
ASIDE="$CACHE/aside/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$ASIDE"
shopt -s nullglob
for old in "$CACHE"/outputs/gptqmodel-*-b[34]-g64-* "$CACHE"/calderalab/*-caldera-b[34]-grow-h1-d0.01-r64-lr4-o4-i3-s0*; do
  mv "$old" "$ASIDE/"
done
rm -f "$CACHE"/hessians-*.pt  # collected again, and timed
ROW="--methods caldera --ranks 64 --groups row --codebooks scalar"
FAST="--hessian-dtype bfloat16 --svd randomized"
run() { PYTHONPATH=src "$PY" benchmarks/peers.py --cache "$CACHE" --plot /tmp/speed-pairs.png "$@"; }
for b in 3 4; do
  run --peers gptqmodel --methods "" --bits $b
  run --peers "" $ROW --bits $b $FAST
  run --peers "" $ROW --bits $b
done
run --peers "" $ROW --bits 3 $FAST --executor ray --threads 1
run --peers "" $ROW --bits 3 --executor ray --threads 1
# Each run prints its row with the time; `peers.py --replot FILE` on a table of these rows prints the
# speed lines (the README's came that way).

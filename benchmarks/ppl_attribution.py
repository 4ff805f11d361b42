"""Where does a compressed model's perplexity loss come from? Restore parts, re-measure.

For one artifact store (e.g. a row of benchmarks/ppl.py, cached under its --cache), measures the
WikiText-2 test perplexity of the fully compressed model, then with one module kind restored to
the original weights in every layer (q, k, v, o, gate, up, down), then with one band of layers
restored. The share of the loss a part explains is (ppl_all - ppl_part_restored) / (ppl_all - base).
Also prints the paired per-window spread of the loss, so a difference between two rows can be read
against the noise of the token sample:

    PYTHONPATH=src python benchmarks/ppl_attribution.py /tmp/runs/bench-cache/30L-caldera-b4-...

No compression happens here: the store's modules are assembled once and swapped in by subsets.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

from calderalab import core, models
from calderalab.artifacts import ArtifactStore, assemble_weights
from calderalab.eval.perplexity import perplexity, ratio_interval
from calderalab.plans import parse_layer_set

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="+", help="artifact store(s); the first is broken down, the rest only compared")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", default=str(DATA / "test.txt"))
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--stride", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=8192)
    parser.add_argument("--bands", default="0-4,5-9,10-14,15-19,20-24,25-29", help="layer bands to restore one at a time")
    parser.add_argument("--no-breakdown", action="store_true", help="only compare the stores (paired spread)")
    args = parser.parse_args()

    model, tokenizer = models.load_model(args.model)
    text = Path(args.data).read_text(encoding="utf-8")

    def measure(weights=None):
        with contextlib.nullcontext() if weights is None else models.swapped_weights(model, weights):
            return perplexity(model, tokenizer, text, args.context, args.stride, args.max_tokens)

    t0 = time.perf_counter()
    base = measure()
    print(f"{args.model}: {base.n_scored_tokens} scored tokens in {base.n_windows} windows (context {args.context}, "
          f"stride {args.stride}); baseline ppl {base.perplexity:.3f} ({time.perf_counter() - t0:.1f}s per evaluation)")
    full = {}
    print()
    print("| store | ppl | vs baseline | 95% interval (window bootstrap) | vs first store | 95% interval |")
    print("|---|---|---|---|---|---|")
    for path in args.stores:
        weights = assemble_weights(ArtifactStore(path), model)
        full[path] = (weights, measure(weights))
        result = full[path][1]
        r, lo, hi = ratio_interval(base, result)
        r1, lo1, hi1 = ratio_interval(full[args.stores[0]][1], result)
        print(f"| {Path(path).name} | {result.perplexity:.3f} | {100 * (r - 1):+.1f}% | {100 * (lo - 1):+.1f}% .. "
              f"{100 * (hi - 1):+.1f}% | {r1:.4f} | {lo1:.4f} .. {hi1:.4f} |", flush=True)
    if args.no_breakdown:
        return

    weights, result = full[args.stores[0]]
    loss = result.perplexity - base.perplexity
    print(f"\nbreakdown of {Path(args.stores[0]).name}: ppl {result.perplexity:.3f}, loss {loss:+.3f} over baseline")
    print("| restored to original | ppl | share of the loss explained |")
    print("|---|---|---|")
    for name in core.MODULE_NAMES:
        part = {key: W for key, W in weights.items() if key[1] != name}
        value = measure(part).perplexity
        print(f"| all {name} | {value:.3f} | {100 * (result.perplexity - value) / loss:.0f}% |", flush=True)
    n_layers = models.num_layers(model)
    for band in args.bands.split(","):
        layers = set(parse_layer_set(band, n_layers))
        part = {key: W for key, W in weights.items() if key[0] not in layers}
        value = measure(part).perplexity
        print(f"| layers {band} | {value:.3f} | {100 * (result.perplexity - value) / loss:.0f}% |", flush=True)


if __name__ == "__main__":
    main()

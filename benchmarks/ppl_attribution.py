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
import math
import time
from pathlib import Path

import torch

from calderalab import core, models
from calderalab.artifacts import ArtifactStore, assemble_weights
from calderalab.eval.perplexity import _window_nll, sliding_windows

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"


def window_nlls(model, ids: torch.Tensor, context: int, stride: int) -> torch.Tensor:
    """(n_windows,) float64: summed NLL of each window's scored tokens (same windows as perplexity())."""
    windows = sliding_windows(ids.numel(), context, stride)
    with torch.no_grad():
        return torch.tensor([_window_nll(model, ids, [w], torch.device("cpu")) for w in windows], dtype=torch.float64)


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
    model.eval()
    ids = tokenizer(Path(args.data).read_text(encoding="utf-8"), return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    ids = ids[: args.max_tokens]
    windows = sliding_windows(ids.numel(), args.context, args.stride)
    n_scored = sum(w[2] for w in windows)
    print(f"{args.model}: {n_scored} scored tokens in {len(windows)} windows (context {args.context}, stride {args.stride})")

    def measure(weights) -> torch.Tensor:
        with models.swapped_weights(model, weights):
            return window_nlls(model, ids, args.context, args.stride)

    def ppl(nll: torch.Tensor) -> float:
        return math.exp(float(nll.sum()) / n_scored)

    t0 = time.perf_counter()
    base = window_nlls(model, ids, args.context, args.stride)
    print(f"baseline ppl {ppl(base):.3f} ({time.perf_counter() - t0:.1f}s per evaluation)")

    # Paired spread: the per-token loss difference per window, bootstrapped over windows (seeded).
    gen = torch.Generator().manual_seed(0)
    draws = torch.randint(len(windows), (2000, len(windows)), generator=gen)
    tokens = torch.tensor([w[2] for w in windows], dtype=torch.float64)
    full = {}
    print()
    print("| store | ppl | vs baseline | 95% CI of ppl ratio (window bootstrap) |")
    print("|---|---|---|---|")
    for path in args.stores:
        store = ArtifactStore(path)
        weights = assemble_weights(store, model)
        full[path] = (weights, measure(weights))
        diff = full[path][1] - base  # (n_windows,)
        ratios = torch.exp(diff[draws].sum(1) / tokens[draws].sum(1))
        lo, hi = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
        print(f"| {Path(path).name} | {ppl(full[path][1]):.3f} | {100 * (ppl(full[path][1]) / ppl(base) - 1):+.1f}% "
              f"| {100 * (lo - 1):+.1f}% .. {100 * (hi - 1):+.1f}% |")
    if len(args.stores) >= 2:
        a, b = full[args.stores[0]][1], full[args.stores[1]][1]
        ratios = torch.exp((b - a)[draws].sum(1) / tokens[draws].sum(1))
        lo, hi = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
        print(f"\nsecond vs first store: ppl ratio {ppl(b) / ppl(a):.4f}, 95% CI {lo:.4f} .. {hi:.4f}")
    if args.no_breakdown:
        return

    weights, nll_all = full[args.stores[0]]
    loss = ppl(nll_all) - ppl(base)
    print(f"\nbreakdown of {Path(args.stores[0]).name}: ppl {ppl(nll_all):.3f}, loss {loss:+.3f} over baseline")
    print("| restored to original | ppl | share of the loss explained |")
    print("|---|---|---|")
    for name in core.MODULE_NAMES:
        part = {key: W for key, W in weights.items() if key[1] != name}
        value = ppl(measure(part))
        print(f"| all {name} | {value:.3f} | {100 * (ppl(nll_all) - value) / loss:.0f}% |", flush=True)
    from calderalab.plans import parse_layer_set

    n_layers = models.num_layers(model)
    for band in args.bands.split(","):
        layers = set(parse_layer_set(band, n_layers))
        part = {key: W for key, W in weights.items() if key[0] not in layers}
        value = ppl(measure(part))
        print(f"| layers {band} | {value:.3f} | {100 * (ppl(nll_all) - value) / loss:.0f}% |", flush=True)


if __name__ == "__main__":
    main()

"""Does the KL plan's predictor predict the KL? Predicted against measured, for whole stores and for one
module type at a time.

    PYTHONPATH=src python benchmarks/kl_predictor.py STORE [STORE ...] [--by-type STORE]

The predictor is the one `compress --plan kl` allocates with (calderalab.kl_budget): per module, the
output sensitivity (calib.fisher, ½ mean G_ii) times tr(ΔW H ΔWᵀ), summed. Measured: mean KL(original ‖
compressed) per token on the peer benchmark's windows (40 × 512 tokens of WikiText-2 test), with its
window-bootstrap interval. Same calibration (128 × 512 tokens of valid.txt), Hessians, Fisher and
reference as benchmarks/peers.py, read from its cache (--cache); a store's whole-model score is the
peer table's own when it is cached there.

--by-type STORE swaps in only the modules of one type (q, k, v, o, gate, up, down; the rest stay
original) and measures each: whether the predictor holds per type is what decides whether the
allocation, which moves bits between types, can trust it. The allocation needs the right order and
ratio, not the right level: a constant factor between predicted and measured does not change the plan.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calderalab import core, kl_budget, models  # noqa: E402
from calderalab.artifacts import ArtifactStore, assemble_weights  # noqa: E402
from calderalab.calib import CalibConfig, load_calibration  # noqa: E402
from calderalab.eval.fidelity import load_or_build_reference, measure_against  # noqa: E402
from calderalab.eval.perplexity import token_ids  # noqa: E402
from peers import DATA, Timings, cached_result, cached_sensitivity, score_path, timed_hessians  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stores", nargs="*", help="artifact store directories (of --model, calibrated like peers.py)")
    p.add_argument("--by-type", default=None, help="a store to measure one module type at a time")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--windows", type=int, default=40)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "calderalab" / "peers"))
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    return p.parse_args(argv)


def predicted(sensitivity, hessians: dict, model, weights: dict) -> float:
    """Σ over the swapped modules of sensitivity · tr(ΔW H ΔWᵀ), nats per token."""
    return sum(sensitivity[(layer, name)] * kl_budget.h_energy(
        W_hat.double() - models.target_linear(model, layer, name).weight.double(), hessians[layer][name])
        for (layer, name), W_hat in weights.items())


def main() -> None:
    args = parse_args()
    if not args.stores and not args.by_type:
        raise SystemExit("give at least one STORE or --by-type STORE")
    cache = Path(args.cache).expanduser()
    model, tokenizer = models.load_model(args.model)
    ids = token_ids(tokenizer, (DATA / "test.txt").read_text(encoding="utf-8"), args.windows * args.context)
    reference = load_or_build_reference(model, ids, args.context, args.context, cache / "reference")
    calib = load_calibration(model, tokenizer, CalibConfig(str(DATA / "valid.txt"), args.calib_samples, args.seq_len))
    timings = Timings(cache / "timings.json")
    hessians = dict(timed_hessians(model, calib, cache, timings))
    sensitivity = cached_sensitivity(model, calib, kl_budget.KLBudgetSettings(4.0).fisher, cache, timings)

    def measure(weights: dict):
        with models.swapped_weights(model, weights):
            return measure_against(model, reference, ids)

    cases = [(Path(s).name, Path(s), None) for s in args.stores]
    if args.by_type:
        cases += [(f"{Path(args.by_type).name} [{t} only]", Path(args.by_type), t) for t in core.MODULE_NAMES]
    rows = []
    print("| store | modules | predicted KL | measured KL (95%) | measured / predicted |")
    print("|---|---|---|---|---|")
    for label, store_dir, only in cases:
        weights = assemble_weights(ArtifactStore(str(store_dir)), model)
        if only is not None:
            weights = {k: v for k, v in weights.items() if k[1] == only}
        pred = predicted(sensitivity, hessians, model, weights)
        score = score_path(store_dir, reference)
        result = cached_result(score, lambda: measure(weights)) if only is None else measure(weights)
        kl, lo, hi = result.kl_interval()
        rows.append({"store": label, "modules": len(weights), "predicted": pred, "kl": kl, "kl_lo": lo, "kl_hi": hi})
        print(f"| {label} | {len(weights)} | {pred:.4f} | {kl:.4f} ({lo:.4f} .. {hi:.4f}) | {kl / pred:.2f} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()

"""Calibration size and source against KL: the measurement behind the calibration defaults.

    PYTHONPATH=src python benchmarks/calibration.py [--methods ldlq,caldera] [--sizes 32x256,64x256,128x512]
        [--sources gsm8k,wikitext,self] [--seeds 0,1,2] [--windows 24]

Each row is one calibration set (a source, n × seq_len tokens, the sampling seed) → Hessians → the
embedded SmolLM2 compressed at 3 bits with it (ldlq; caldera rank 32 at the experiments' 2 outer /
1 inner iterations, `experiments.config.default_spec`) → KL(original ‖ compressed) per token over
the full vocabulary on two held-out sets that no source calibrates on: WikiText-2 test and GSM8K
test (question and worked answer, the domain of the probes). Each KL has a 95% window-bootstrap
interval; each row reports what its calibration cost (building the tokens: sampling for "self",
then the Hessians) and the compression.

Sources: gsm8k = GSM8K train questions (the "auto" default of `compress` and the study), wikitext =
WikiText-2 valid.txt, self = text sampled from the model itself (the fallback without data files).
The summary gives, per source, size and method, the mean KL over seeds with the seed spread (sd),
so a difference between two calibrations is read against how much the seed alone moves it.

Stores, Hessians, references and scores are cached under --cache and keyed by the calibration
tokens' sha256 (stores also refuse another calibration themselves), so a rerun only re-prints.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from calderalab import models, plans
from calderalab.artifacts import ArtifactStore, assemble_weights
from calderalab.calib import CalibConfig, load_calibration
from calderalab.calib.sources import SELF_SOURCE
from calderalab.compress import compress_model
from calderalab.eval.fidelity import FidelityResult, load_or_build_reference, measure_against
from calderalab.eval.perplexity import token_ids
from calderalab.experiments.config import default_spec
from calderalab.plans import spec_with
from peers import Timings, cached_result, score_path
from ppl import cached_hessians

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = {"gsm8k": str(DATA / "gsm8k" / "train.jsonl"), "wikitext": str(DATA / "wikitext-2" / "valid.txt"),
           "self": SELF_SOURCE}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--methods", default="ldlq,caldera", help="ldlq (3-bit) and/or caldera (3-bit rank 32)")
    p.add_argument("--sizes", default="32x256,64x256,128x512", help="calibration sizes, n_samples x seq_len")
    p.add_argument("--sources", default="gsm8k,wikitext,self", help=f"any of {', '.join(SOURCES)}")
    p.add_argument("--seeds", default="0,1,2", help="calibration sampling seeds")
    p.add_argument("--windows", type=int, default=24, help="held-out windows per evaluation set")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "calderalab" / "calib-bench"))
    args = p.parse_args(argv)
    for source in args.sources.split(","):
        if source not in SOURCES:
            p.error(f"--sources: unknown source {source!r}; known: {', '.join(SOURCES)}")
    try:
        args.size_list = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    except ValueError:
        p.error(f"--sizes {args.sizes!r}: give n_samples x seq_len pairs, e.g. 32x256,128x512")
    return args


def method_spec(method: str):
    """3-bit: "ldlq" (rank 0) or "caldera" (the experiments' base spec, rank 32, 2 outer / 1 inner)."""
    if method == "ldlq":
        return spec_with(default_spec(), method="ldlq", rank=0)
    if method == "caldera":
        return default_spec()
    raise ValueError(f"unknown method {method!r}: ldlq or caldera")


def gsm8k_text(path: Path) -> str:
    """GSM8K test rows as running text: each question, then its worked answer."""
    import json

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return "\n\n".join(f"{r['question']}\n{r['answer']}" for r in rows)


@dataclass(frozen=True)
class Measured:
    source: str
    n_samples: int
    seq_len: int
    seed: int
    method: str
    kl: dict[str, tuple[float, float, float]]  # eval set -> (KL, low, high)
    top1: dict[str, float]
    calib_seconds: float  # tokens + Hessians
    compress_seconds: float


def summary(rows: list[Measured], sets: list[str]) -> list[str]:
    """Per (source, size, method): mean KL over seeds ± sd, and the calibration's mean cost."""
    groups: dict[tuple, list[Measured]] = {}
    for r in rows:
        groups.setdefault((r.method, r.source, r.n_samples, r.seq_len), []).append(r)
    lines = ["| method | source | size | seeds | " + " | ".join(f"KL {s} mean ± sd" for s in sets)
             + " | calibration s | compress s |", "|---|---|---|---|" + "---|" * len(sets) + "---|---|"]
    for (method, source, n, seq), group in sorted(groups.items()):
        cells = []
        for s in sets:
            values = [g.kl[s][0] for g in group]
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            cells.append(f"{statistics.fmean(values):.4f} ± {sd:.4f}")
        lines.append(f"| {method} | {source} | {n}×{seq} | {len(group)} | " + " | ".join(cells)
                     + f" | {statistics.fmean(g.calib_seconds for g in group):.0f}"
                     + f" | {statistics.fmean(g.compress_seconds for g in group):.0f} |")
    return lines


def main() -> None:
    args = parse_args()
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    timings = Timings(cache / "timings.json")
    model, tokenizer = models.load_model(args.model)
    n_layers = models.num_layers(model)
    n_tokens = args.windows * args.context
    eval_sets = {"wikitext-test": token_ids(tokenizer, (DATA / "wikitext-2" / "test.txt").read_text(encoding="utf-8"), n_tokens),
                 "gsm8k-test": token_ids(tokenizer, gsm8k_text(DATA / "gsm8k" / "test.jsonl"), n_tokens)}
    references = {name: load_or_build_reference(model, ids, args.context, args.context, cache / "reference")
                  for name, ids in eval_sets.items()}
    for name, ref in references.items():
        print(f"{name}: original ppl {ref.baseline.perplexity:.3f} on {ref.baseline.n_scored_tokens} tokens", flush=True)
    rows: list[Measured] = []
    for source in args.sources.split(","):
        for n, seq in args.size_list:
            for seed in (int(s) for s in args.seeds.split(",")):
                t0 = time.perf_counter()
                calib = load_calibration(model, tokenizer, CalibConfig(SOURCES[source], n, seq, seed=seed))
                hessians = cached_hessians(model, calib, cache)
                calib_key = f"calib-{calib.sha256[:16]}"
                if timings.get(calib_key) is None:
                    timings.put(calib_key, time.perf_counter() - t0)
                for method in args.methods.split(","):
                    spec = method_spec(method)
                    store_dir = cache / "stores" / f"{n_layers}L-{calib.sha256[:12]}-{spec.key()}"
                    t0 = time.perf_counter()
                    report = compress_model(model, plans.uniform_plan(n_layers, spec), ArtifactStore(str(store_dir)),
                                            calib, hessians=hessians)
                    if report.n_resumed == 0:
                        timings.put(store_dir.name, time.perf_counter() - t0)
                    fresh = report.n_resumed < len(report.modules)
                    results: dict[str, FidelityResult] = {}
                    for name, ids in eval_sets.items():
                        def measure(ids=ids, name=name) -> FidelityResult:
                            with models.swapped_weights(model, assemble_weights(ArtifactStore(str(store_dir)), model)):
                                return measure_against(model, references[name], ids)
                        score = score_path(store_dir, references[name])
                        results[name] = cached_result(score, measure, fresh)
                    row = Measured(source, n, seq, seed, method, {k: r.kl_interval() for k, r in results.items()},
                                   {k: r.top1_interval()[0] for k, r in results.items()},
                                   timings.get(calib_key), timings.get(store_dir.name) or float("nan"))
                    rows.append(row)
                    print(f"{method:8s} {source:9s} {n}x{seq} seed {seed}: " + ", ".join(
                        f"KL {k} {v[0]:.4f} ({v[1]:.4f} .. {v[2]:.4f})" for k, v in row.kl.items())
                        + f"; calibration {row.calib_seconds:.0f}s, compress {row.compress_seconds:.0f}s", flush=True)
    print()
    print(f"{args.model}, 3 bits; KL(original ‖ compressed) nats/token on {args.windows} windows × {args.context} "
          f"tokens of each held-out set; torch {torch.__version__}")
    print("\n".join(summary(rows, list(eval_sets))))


if __name__ == "__main__":
    main()

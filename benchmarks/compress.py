"""Wall time and peak memory (RSS) of compressing SmolLM2 at 3-bit rank 64 (one process, local executor).

    PYTHONPATH=src python benchmarks/compress.py [--calib FILE|self] [--executor ray]

Peak RSS includes the float32 model itself (≈0.5 GB for SmolLM2); the table also gives the
RSS right after loading, so the difference is what calibration + compression add.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from calderalab import core, models, plans
from calderalab.artifacts import ArtifactStore
from calderalab.calib import CalibConfig
from calderalab.compress import CalibrationReady, LayerCompressed, compress_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--calib", default=str(DATA / "valid.txt"))
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--executor", default="local")
    parser.add_argument("--out", default=None, help="keep the artifact store here (e.g. for `calderalab validate`)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    model, tokenizer = models.load_model(args.model)
    t_load = time.perf_counter() - t0
    rss_loaded = rss_mib()
    spec = core.CompressionSpec("caldera", args.bits, rank=args.rank)
    plan = plans.uniform_plan(models.num_layers(model), spec)
    marks = {}

    def on_event(event) -> None:
        if isinstance(event, CalibrationReady):
            marks["calib"] = time.perf_counter()
        elif isinstance(event, LayerCompressed):
            marks.setdefault("first_layer", time.perf_counter())

    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or scratch
        t1 = time.perf_counter()
        report = compress_model(model, plan, ArtifactStore(out), CalibConfig(args.calib, args.calib_samples, args.seq_len),
                                executor=args.executor, progress=on_event, tokenizer=tokenizer)
        t_total = time.perf_counter() - t1
    print(f"| {args.model} caldera {args.bits}-bit rank {args.rank} ({args.executor}) | value |")
    print("|---|---|")
    print(f"| model load | {t_load:.1f} s |")
    print(f"| calibration data ({args.calib_samples} x {args.seq_len} tokens) | {marks['calib'] - t1:.1f} s |")
    print(f"| Hessians + decompositions + writes ({len(report.modules)} modules) | {t_total - (marks['calib'] - t1):.1f} s |")
    print(f"| total compress_model wall time | {t_total:.1f} s |")
    print(f"| RSS after model load | {rss_loaded:.0f} MiB |")
    print(f"| peak RSS (whole process) | {peak_rss_mib():.0f} MiB |")
    print(f"| mean weight correlation / plan bpw | {report.mean_weight_correlation:.4f} / {report.plan_bpw.bpw_compressed_only:.3f} |")


if __name__ == "__main__":
    main()

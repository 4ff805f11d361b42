"""The coherence check (artifacts.coherence) on SmolLM2: stored compressions, and the first store
broken in ways the per-module correlation check does not see or that a loader bug would cause.

    PYTHONPATH=src python benchmarks/coherence.py STORE [STORE ...] [--names a,b] [--cases stored,permuted,scaled]

Each STORE is checked as is (named by --names, else its folder). --cases, on the first store: stored
(as is), permuted (the stored Ŵ of layers 10-13 with their rows shuffled: a transposed or mis-ordered
load), scaled (the stored down projections of layers 10-19 times 3: a wrong scale; weight correlation
stays exactly as before). Prints each case's numbers, verdict and generated texts, and plots the three
measures against their flag thresholds (--plot).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from calderalab import models
from calderalab.artifacts import ArtifactStore, assemble_weights
from calderalab.artifacts.coherence import check_coherence
from calderalab.report.plots import coherence_plot

DOCS = Path(__file__).resolve().parent.parent / "docs"


def cases(W: dict, wanted: list[str]) -> dict[str, dict]:
    g = torch.Generator().manual_seed(0)
    out = {}
    if "stored" in wanted:
        out["stored"] = W
    if "permuted" in wanted:
        out["permuted rows, layers 10-13"] = {k: v[torch.randperm(v.shape[0], generator=g)] for k, v in W.items() if 10 <= k[0] <= 13}
    if "scaled" in wanted:
        out["down x3, layers 10-19"] = {k: 3 * v for k, v in W.items() if k[1] == "down" and 10 <= k[0] <= 19}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stores", nargs="+")
    parser.add_argument("--names", default=None, help="one name per store, comma-separated (default: folder names)")
    parser.add_argument("--cases", default="stored,permuted,scaled", help="cases built from the first store")
    parser.add_argument("--plot", default=str(DOCS / "coherence-smollm2.png"))
    args = parser.parse_args()
    names = args.names.split(",") if args.names else [Path(s).name for s in args.stores]
    if len(names) != len(args.stores):
        parser.error(f"--names gives {len(names)} names for {len(args.stores)} stores")
    model, tokenizer = models.load_model("smollm2")
    W = assemble_weights(ArtifactStore(args.stores[0]), model)
    checked = {f"{names[0]}: {k}" if k != "stored" else names[0]: v for k, v in cases(W, args.cases.split(",")).items()}
    for name, store in zip(names[1:], args.stores[1:]):
        checked[name] = assemble_weights(ArtifactStore(store), model)
    reports = {}
    for name, weights in checked.items():
        reports[name] = report = check_coherence(model, tokenizer, weights)
        print(f"== {name}: {'INCOHERENT' if report.flagged else 'coherent'}", flush=True)
        for line in report.problems() + report.summary_lines():
            print(line, flush=True)
    print(f"plot: {coherence_plot(reports, args.plot)}")


if __name__ == "__main__":
    main()

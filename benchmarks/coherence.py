"""The coherence check (artifacts.coherence) on SmolLM2: a stored compression, and the same store
broken in ways the per-module correlation check does not see or that a loader bug would cause.

    PYTHONPATH=src python benchmarks/coherence.py STORE [--cases stored,permuted,scaled]

stored: the store as is (all its modules). permuted: the stored Ŵ of layers 10-13 with their rows
shuffled (a transposed or mis-ordered load). scaled: the stored down projections of layers 10-19
times 3 (a wrong scale; weight correlation stays exactly as before). Prints each case's numbers,
verdict and generated texts.
"""

from __future__ import annotations

import argparse

import torch

from calderalab import models
from calderalab.artifacts import ArtifactStore, assemble_weights
from calderalab.artifacts.coherence import check_coherence


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
    parser.add_argument("store")
    parser.add_argument("--cases", default="stored,permuted,scaled")
    args = parser.parse_args()
    model, tokenizer = models.load_model("smollm2")
    W = assemble_weights(ArtifactStore(args.store), model)
    for name, weights in cases(W, args.cases.split(",")).items():
        report = check_coherence(model, tokenizer, weights)
        print(f"== {name}: {'INCOHERENT' if report.flagged else 'coherent'}", flush=True)
        for line in report.problems() + report.summary_lines():
            print(line, flush=True)


if __name__ == "__main__":
    main()

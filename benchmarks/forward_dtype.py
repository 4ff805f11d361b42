"""Forward-pass time of a model in float32 against bfloat16 on this machine (the evaluation's unit of work).

    PYTHONPATH=src python benchmarks/forward_dtype.py [--model smollm2 --batch 8 --tokens 256 --repeats 4]
    PYTHONPATH=src python benchmarks/forward_dtype.py --paired [--model smollm2]
    PYTHONPATH=src python benchmarks/forward_dtype.py --products [--widths 576,1536 --n-tokens 65536]

Times one forward of a (batch, tokens) block with only the last position's logits kept (as the
choice scorer runs it), float32 first, then a bfloat16 copy, then float32 again (the two float32
figures show how much the machine drifts within the run). On CPUs with AMX / AVX512-BF16 bfloat16
matmuls are native; elsewhere bfloat16 can be slower than float32.

`--paired` answers whether the study could evaluate in bfloat16 instead: it runs the study's
evaluation passes (the suite and the ladder of `EXPERIMENT_EVAL`) on the uncompressed model in
float32 and in bfloat16 and prints, per pass and probe, the time, the correct counts and how many
instances changed their pick or their correctness. A faster dtype is only usable if the picks hold.

`--products` times the Hessian's XᵀX accumulation (calib.hessian.HessianAccumulator) over a stream of
batches of 4096 tokens at the given widths: float32, the bfloat16 chunks as the accumulator runs them,
and the same chunks multiplied from a contiguous copy of chunkᵀ (the accumulator's earlier form), each
with its relative error against float64.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch


def seconds_per_forward(model, ids: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        model(ids, logits_to_keep=1)  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            model(ids, logits_to_keep=1)
    return (time.perf_counter() - started) / repeats


def paired(model, tokenizer) -> None:
    """The study's evaluation passes in float32 and bfloat16, instance by instance."""
    from calderalab.eval.suite import experiment_passes
    from calderalab.experiments.config import EXPERIMENT_EVAL
    from calderalab.experiments.evaluation import default_evaluator

    low = copy.deepcopy(model).to(torch.bfloat16)
    for settings, instances in experiment_passes(EXPERIMENT_EVAL):
        runs = {}
        for name, m in (("float32", model), ("bfloat16", low)):
            started = time.perf_counter()
            runs[name] = default_evaluator(m, tokenizer, instances, settings.decoding)
            print(f"{settings.suite}, N={len(instances)}: {name} {time.perf_counter() - started:.1f} s", flush=True)
        for probe in sorted({r.probe for r in runs["float32"]}):
            a, b = ([r for r in runs[name] if r.probe == probe] for name in ("float32", "bfloat16"))
            picks = sum(x.parsed != y.parsed for x, y in zip(a, b))
            flips = sum(x.correct != y.correct for x, y in zip(a, b))
            print(f"  {probe}: correct {sum(x.correct for x in a)} (float32) vs {sum(y.correct for y in b)} "
                  f"(bfloat16) of {len(a)}; pick changed in {picks}, correctness in {flips}")


def products(widths: list[int], n_tokens: int, batch_tokens: int = 4096) -> None:
    """Seconds (best of 2) and relative error of XᵀX over n_tokens at each width."""
    from calderalab.calib.hessian import PRODUCT_CHUNK, HessianAccumulator

    def copied(batches: list[torch.Tensor]) -> torch.Tensor:
        S = torch.zeros(batches[0].shape[1], batches[0].shape[1])
        for batch in batches:
            for chunk in batch.split(PRODUCT_CHUNK):
                S.add_(chunk.T.contiguous() @ chunk)
        return S

    def accumulated(product_dtype):
        def run(batches: list[torch.Tensor]) -> torch.Tensor:
            acc = HessianAccumulator(batches[0].shape[1], product_dtype=product_dtype)
            for batch in batches:
                acc.update(batch)  # float32 accumulators cast each batch themselves, as in a float32 forward's hook
            return acc._sum
        return run

    print(f"XᵀX of {n_tokens} tokens in batches of {batch_tokens}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for d in widths:
        X = torch.randn(n_tokens, d, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
        batches = list(X.split(batch_tokens))
        exact = X.double().T @ X.double()
        variants = {"float32": accumulated(None), "bfloat16 chunks": accumulated(torch.bfloat16),
                    "bfloat16 chunks, copied chunkT": copied}
        for name, run in variants.items():
            best = float("inf")
            for _ in range(2):
                started = time.perf_counter()
                S = run(batches)
                best = min(best, time.perf_counter() - started)
            error = float((S.double() - exact).norm() / exact.norm())
            print(f"  d_in {d:5d}  {name:31s} {best:6.3f} s   relative error {error:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--paired", action="store_true", help="the study's evaluation in both dtypes, instance by instance")
    parser.add_argument("--products", action="store_true", help="the Hessian's XᵀX products in float32 and bfloat16")
    parser.add_argument("--widths", default="576,1536", help="--products: input widths (SmolLM2: 576 and 1536)")
    parser.add_argument("--n-tokens", type=int, default=65536, help="--products: tokens (the peer calibration: 128 x 512)")
    args = parser.parse_args()
    if args.products:
        products([int(w) for w in args.widths.split(",")], args.n_tokens)
        return
    from calderalab.models import load_model

    model, tokenizer = load_model(args.model)
    if args.paired:
        paired(model, tokenizer)
        return
    ids = torch.randint(0, 1000, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0))
    first = seconds_per_forward(model, ids, args.repeats)
    bf16 = seconds_per_forward(copy.deepcopy(model).to(torch.bfloat16), ids, args.repeats)
    again = seconds_per_forward(model, ids, args.repeats)
    print(f"{args.model}, {args.batch} x {args.tokens} tokens, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"float32 {first:.3f} s, bfloat16 {bf16:.3f} s, float32 again {again:.3f} s; "
          f"bfloat16 is {min(first, again) / bf16:.2f}-{max(first, again) / bf16:.2f}x faster")


if __name__ == "__main__":
    main()

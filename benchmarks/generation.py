"""Generation throughput on the embedded SmolLM2: batched vs one prompt at a time, side by side.

    PYTHONPATH=src python benchmarks/generation.py --n 8 --batch-size 8 --max-new-tokens 128 [--threads 1]

Both passes run the same execution prompts (GSM8K test rows) with greedy decoding and the
answer-line stop, in one process on the same threads; the table gives seconds, generated
tokens and tokens/s for each, the speed-up, and how many replies are identical.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from calderalab.eval.backends import HFBackend
from calderalab.eval.gsm8k import load_gsm8k
from calderalab.eval.probes import execution_messages
from calderalab.models import load_model


def timed(backend: HFBackend, prompts, max_new_tokens: int):
    start = time.perf_counter()
    gens = backend.generate(prompts, max_new_tokens=max_new_tokens)
    return gens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="number of execution prompts")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        # On a shared, oversubscribed CPU one thread per process avoids OpenMP spin-wait collapse.
        torch.set_num_threads(args.threads)
    console = Console()

    start = time.perf_counter()
    model, tokenizer = load_model("smollm2")
    console.print(f"model loaded in {time.perf_counter() - start:.1f}s; torch threads: {torch.get_num_threads()}")
    prompts = [execution_messages(inst) for inst in load_gsm8k("test", limit=args.n)]

    rows = []
    outputs = {}
    for label, batch_size in (("one at a time", 1), (f"batched ({args.batch_size})", args.batch_size)):
        gens, seconds = timed(HFBackend(model, tokenizer, batch_size=batch_size), prompts, args.max_new_tokens)
        tokens = sum(g.n_tokens for g in gens)
        truncated = sum(g.truncated for g in gens)
        outputs[label] = [g.text for g in gens]
        rows.append((label, seconds, tokens, tokens / seconds, truncated))

    table = Table(title=f"SmolLM2 generation, {args.n} execution prompts, max_new_tokens={args.max_new_tokens}")
    for col in ("mode", "seconds", "tokens", "tokens/s", "truncated"):
        table.add_column(col, justify="right")
    for label, seconds, tokens, rate, truncated in rows:
        table.add_row(label, f"{seconds:.1f}", str(tokens), f"{rate:.1f}", f"{truncated}/{args.n}")
    console.print(table)
    same = sum(a == b for a, b in zip(*outputs.values()))
    console.print(f"speed-up: {rows[0][1] / rows[1][1]:.2f}x; identical replies: {same}/{args.n}")


if __name__ == "__main__":
    main()

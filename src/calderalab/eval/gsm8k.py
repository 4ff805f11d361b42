"""GSM8K as an execution-only probe suite: read the jsonl, sample by seed, make Instances.

GSM8K rows carry no procedure options, so they have no understanding probe (plan_options is
empty) and no answer options: they are scored by generation only. No torch.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from calderalab.errors import TaskFamilyError
from calderalab.eval.types import Instance

_FINAL = re.compile(r"####\s*(.+?)\s*$")


def gsm8k_answer(solution: str) -> str:
    """The final answer after '####', with thousands separators removed ('1,000' -> '1000')."""
    match = _FINAL.search(solution.strip())
    if match is None:
        raise ValueError(f"GSM8K solution has no '#### answer' line: {solution[-80:]!r}")
    return match.group(1).replace(",", "").replace("$", "").strip()


def load_gsm8k(path: str | Path, n: int, seed: int = 0) -> list[Instance]:
    """`n` rows of a GSM8K jsonl file, sampled without replacement by `seed` (row order kept).

    Instance.index is the row number in the file and Instance.seed the sampling seed, so the
    uid 'gsm8k/<seed>/<row>' pairs the same rows across runs made with the same seed;
    n_steps counts the solution's reasoning lines.
    """
    path = Path(path)
    if not path.is_file():
        raise TaskFamilyError(f"GSM8K file {path} not found; pass --data PATH/TO/gsm8k/test.jsonl")
    rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if n <= 0 or n > len(rows):
        raise ValueError(f"--n must be between 1 and {len(rows)} (rows in {path}), got {n}")
    picked = sorted(random.Random(seed).sample(range(len(rows)), n))
    instances = []
    for i in picked:
        try:
            row = json.loads(rows[i])
            question, solution = row["question"], row["answer"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise TaskFamilyError(f"{path}:{i + 1} is not a GSM8K row with 'question' and 'answer': {err}") from None
        steps = tuple(s for s in solution.strip().splitlines()[:-1] if s.strip())
        instances.append(
            Instance(family="gsm8k", index=i, seed=seed, question=question, answer=gsm8k_answer(solution),
                     answer_type="number", tolerance=0.0, n_steps=len(steps), steps=steps)
        )
    return instances

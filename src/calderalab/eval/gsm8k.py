"""GSM8K as an execution-only probe suite. No torch.

Rows of `gsm8k/{train,test}.jsonl` ({"question", "answer"} with the final number after
`#### `) become Instances of family "gsm8k" with answer_type "number" and no plan options, so
the runner scores execution only, with the same answer parser as the task families.
The data is read from the shared data directory beside the checkout (never copied into the
repo), or from $CALDERALAB_SHARED_DATA.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

from calderalab.eval.types import Instance

FAMILY = "gsm8k"
_FINAL = re.compile(r"####\s*(?P<value>.+?)\s*$")
_CALC = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations, not part of the prose


def default_data_dir() -> Path:
    """$CALDERALAB_SHARED_DATA, else ../shared/data relative to the repository checkout."""
    env = os.environ.get("CALDERALAB_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def final_answer(solution: str) -> str:
    """The number after `#### `, commas removed ("1,000" -> "1000")."""
    match = _FINAL.search(solution.strip())
    if match is None:
        raise ValueError(f"GSM8K solution has no '#### <answer>' line: {solution[-80:]!r}")
    value = match.group("value").replace(",", "").replace("$", "").strip()
    try:
        float(value)
    except ValueError:
        raise ValueError(f"GSM8K final answer is not a number: {value!r}") from None
    return value


def row_to_instance(row: dict, index: int, seed: int = 0) -> Instance:
    """One JSONL row as an execution-only Instance; the worked solution lines become `steps`."""
    if "question" not in row or "answer" not in row:
        raise ValueError(f"GSM8K row {index} lacks 'question'/'answer' keys: {sorted(row)}")
    body = row["answer"].split("####")[0]
    steps = tuple(_CALC.sub("", line).strip() for line in body.splitlines() if line.strip())
    return Instance(
        family=FAMILY,
        index=index,
        seed=seed,
        question=row["question"].strip(),
        answer=final_answer(row["answer"]),
        answer_type="number",
        tolerance=0.0,
        n_steps=max(len(steps), 1),
        steps=steps,
    )


def load_gsm8k(
    split: str = "test", limit: int | None = None, seed: int | None = None, data_dir: str | Path | None = None
) -> list[Instance]:
    """GSM8K rows as Instances: the first `limit` rows, or `limit` rows sampled with `seed`.

    Instance.index is the row number in the file, so uids are stable across subsets.
    """
    if split not in ("train", "test"):
        raise ValueError(f"GSM8K split must be 'train' or 'test', got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    path = Path(data_dir) if data_dir is not None else default_data_dir()
    path = path / "gsm8k" / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"GSM8K file not found at {path}; set CALDERALAB_SHARED_DATA to the directory holding gsm8k/"
        )
    with path.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    indices = list(range(len(rows)))
    if limit is not None and seed is not None:
        indices = sorted(random.Random(seed).sample(indices, min(limit, len(indices))))
    elif limit is not None:
        indices = indices[:limit]
    return [row_to_instance(rows[i], index=i, seed=0) for i in indices]

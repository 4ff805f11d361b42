"""Calibration data: where the tokens come from, and a record of exactly which tokens were used.

Sources (`CalibConfig.source`):
- "self" (default, needs no file): text the model generates itself from a few neutral prompts,
  with seeded sampling, so a model can be calibrated with nothing but its weights.
- a `.jsonl` file of GSM8K-style records: the "question" fields, joined in seeded order.
- any other path: a plain text file (e.g. WikiText-2).
Text sources are tokenised once and cut into `n_samples` windows of `seq_len` tokens at seeded
random offsets (the GPTQ convention). The description and the sha256 of the token ids go into
the artifact manifest so a compression can be traced to its calibration data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SELF_SOURCE = "self"
# Rows sampled per generate() call: decoding is step-bound on CPU, so wide batches cost little
# more per step than narrow ones (part of the data description, so it changes the token sha).
GENERATION_BATCH = 16

# Neutral openings: no task content, so self-generated calibration does not favour any probe.
NEUTRAL_PROMPTS: tuple[str, ...] = (
    "The",
    "In the beginning,",
    "Here is a short story about",
    "Scientists have recently discovered that",
    "The history of",
    "One of the most important ideas in mathematics is",
    "Dear friend,",
    "A simple recipe for",
    "The following is a conversation between",
    "Today we will learn how to",
)


HESSIAN_DTYPES = ("float32", "bfloat16")


def with_hessian_dtype(record: dict[str, Any], hessian_dtype: str) -> dict[str, Any]:
    """`record` plus the Hessian dtype, which float32 leaves unrecorded as before the option existed: configs
    and stores made earlier (and everything keyed on them) still match their own calibration."""
    return record if hessian_dtype == "float32" else {**record, "hessian_dtype": hessian_dtype}


@dataclass(frozen=True)
class CalibConfig:
    """Calibration settings. Defaults live here only (the CLI passes None to keep them)."""

    source: str = SELF_SOURCE
    n_samples: int = 32  # 32 x 256 = 8192 tokens: the study's budget on 2 CPU cores; `--calib-samples` for more
    seq_len: int = 256
    batch_size: int = 8
    seed: int = 0
    hessian_dtype: str = "float32"  # or "bfloat16": calibration forwards and XᵀX products (collect_hessians)

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.seq_len < 8:
            raise ValueError(f"seq_len must be >= 8, got {self.seq_len}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.hessian_dtype not in HESSIAN_DTYPES:
            raise ValueError(f"hessian_dtype (--hessian-dtype) must be {' or '.join(HESSIAN_DTYPES)}, got {self.hessian_dtype!r}")
        if self.source != SELF_SOURCE and not Path(self.source).expanduser().is_file():
            raise ValueError(f"calibration source {self.source!r} is neither 'self' nor an existing file")

    def to_dict(self) -> dict[str, Any]:
        return with_hessian_dtype({"source": self.source, "n_samples": self.n_samples, "seq_len": self.seq_len,
                                    "batch_size": self.batch_size, "seed": self.seed}, self.hessian_dtype)


@dataclass(frozen=True)
class CalibData:
    """Calibration token ids, ready for `collect_hessians`.

    token_ids: (n_samples, seq_len) int64.
    """

    token_ids: torch.Tensor
    description: str
    batch_size: int
    hessian_dtype: str = "float32"  # CalibConfig.hessian_dtype

    @property
    def batches(self) -> list[torch.Tensor]:
        return list(torch.split(self.token_ids, self.batch_size))

    @property
    def sha256(self) -> str:
        return token_sha256(self.token_ids)

    @property
    def n_tokens(self) -> int:
        return self.token_ids.numel()

    @property
    def forward_dtype(self) -> torch.dtype | None:
        """collect_hessians' forward_dtype: None for float32 (the layers as the model holds them)."""
        return None if self.hessian_dtype == "float32" else getattr(torch, self.hessian_dtype)

    def manifest_entry(self) -> dict[str, Any]:
        """What a store records of its calibration (the Hessian dtype only when it is not float32)."""
        return with_hessian_dtype({"description": self.description, "n_samples": self.token_ids.shape[0],
                                    "seq_len": self.token_ids.shape[1], "token_sha256": self.sha256}, self.hessian_dtype)


def token_sha256(token_ids: torch.Tensor) -> str:
    """sha256 of the token ids as little-endian int64 bytes, shape included."""
    ids = token_ids.detach().to("cpu", torch.int64).contiguous()
    digest = hashlib.sha256(repr(tuple(ids.shape)).encode())
    digest.update(ids.numpy().astype("<i8").tobytes())
    return digest.hexdigest()


def sample_windows(ids: torch.Tensor, n_samples: int, seq_len: int, seed: int) -> torch.Tensor:
    """Cut n_samples windows of seq_len tokens at seeded random offsets. ids: (n_tokens,) -> (n_samples, seq_len)."""
    if ids.numel() < seq_len:
        raise ValueError(f"calibration text has {ids.numel()} tokens, fewer than seq_len={seq_len}; use a longer text or a smaller --seq-len")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len + 1, (n_samples,), generator=gen)
    return torch.stack([ids[s : s + seq_len] for s in starts.tolist()])  # (n_samples, seq_len)


def read_gsm8k_questions(path: Path, seed: int) -> str:
    """All "question" fields of a GSM8K-style jsonl, in seeded order, separated by blank lines."""
    questions = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if "question" not in record:
            raise ValueError(f"{path}:{line_no}: a GSM8K record needs a 'question' field, got keys {sorted(record)}")
        questions.append(record["question"].strip())
    random.Random(seed).shuffle(questions)
    return "\n\n".join(questions)


def _tokenize(tokenizer: Any, text: str) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]  # (n_tokens,)
    return ids.to(torch.int64)


def generate_self_text(model: Any, tokenizer: Any, n_samples: int, seq_len: int, seed: int, batch_size: int) -> torch.Tensor:
    """(n_samples, seq_len) token ids sampled from the model itself, seeded, from NEUTRAL_PROMPTS."""
    device = next(model.parameters()).device
    samples = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, n_samples, batch_size):
            count = min(batch_size, n_samples - start)
            # One prompt per batch (rows differ by sampling): no padding, so no pad-token effects.
            prompt = _tokenize(tokenizer, NEUTRAL_PROMPTS[(start // batch_size) % len(NEUTRAL_PROMPTS)])
            k = min(len(prompt), seq_len // 2)
            batch = prompt[:k].unsqueeze(0).repeat(count, 1).to(device)  # (count, k)
            out = model.generate(
                input_ids=batch,
                attention_mask=torch.ones_like(batch),
                do_sample=True,
                top_p=0.95,
                temperature=1.0,
                max_new_tokens=seq_len - k,
                min_new_tokens=seq_len - k,
                pad_token_id=tokenizer.eos_token_id,
            )
            samples.append(out[:, :seq_len].cpu())
    return torch.cat(samples)  # (n_samples, seq_len)


def load_calibration(model: Any, tokenizer: Any, config: CalibConfig) -> CalibData:
    """Build the calibration tokens described by `config`."""
    if config.source == SELF_SOURCE:
        if tokenizer is None:
            raise ValueError("self-generated calibration needs the model's tokenizer; pass a text or .jsonl source instead")
        ids = generate_self_text(model, tokenizer, config.n_samples, config.seq_len, config.seed, GENERATION_BATCH)
        description = f"self-generated (seeded sampling, top_p=0.95, seed={config.seed}, {GENERATION_BATCH} rows per prompt) from {len(NEUTRAL_PROMPTS)} neutral prompts"
        return CalibData(ids, description, config.batch_size, config.hessian_dtype)
    path = Path(config.source).expanduser()
    if path.suffix == ".jsonl":
        text = read_gsm8k_questions(path, config.seed)
        kind = "GSM8K questions"
    else:
        text = path.read_text(encoding="utf-8")
        kind = "text file"
    if tokenizer is None:
        raise ValueError(f"calibration from {path} needs a tokenizer")
    ids = sample_windows(_tokenize(tokenizer, text), config.n_samples, config.seq_len, config.seed)
    description = f"{kind} {path.name} (sha256 {hashlib.sha256(text.encode()).hexdigest()[:12]}), {config.n_samples} windows x {config.seq_len} tokens, seed {config.seed}"
    return CalibData(ids, description, config.batch_size, config.hessian_dtype)

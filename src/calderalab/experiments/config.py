"""Settings of the experiments and of the study: one frozen dataclass per concern, defaults here only.

The CLI passes None for every option the user did not give and merges with `merged(...)`, so a
default never has a second copy. No torch here: configs are plain data and go to manifest.json.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from calderalab.eval.suite import EvalSettings

Device = str  # "auto" (cuda when available, else cpu), "cpu", "cuda", "cuda:1", ...
DType = Literal["auto", "float32", "bfloat16", "float16"]

T = TypeVar("T")


def merged(config: T, **overrides: Any) -> T:
    """`config` with every override that is not None applied (the CLI's default=None merge)."""
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[type-var]


def resolve_calib_source(source: str) -> str:
    """"auto" -> the reference GSM8K training questions beside the checkout if present, else "self"."""
    if source != "auto":
        return source
    candidate = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "gsm8k" / "train.jsonl"
    return str(candidate) if candidate.is_file() else "self"


# The experiments' and the study's evaluation: every family's canonical assignment (its first instance)
# on seed 0 plus the difficulty ladder at one instance per ladder and step count, on every
# configuration. Four configurations of SmolLM2 on a 2-core CPU fit the demo's time; the larger
# statistical suite is `calderalab eval`'s default (EvalSettings()). Generation scoring of the
# canonical seven is off: measured > 300 s per configuration for SmolLM2 on a busy 2-core box.
EXPERIMENT_EVAL = EvalSettings(n=1, seeds=(0,), canonical_first=True, ladder_per_step=1)


@dataclass(frozen=True)
class CompressSettings:
    """The base compression spec every experiment shares, and its calibration.

    bits/rank/lr_bits: b_Q, k and b_L = b_R of the uniform CALDERA spec (the report's "3-bit
    uniform", rank 32); rank 0 means LDLQ alone. calib_source: "self" (text the model samples),
    a text file or a GSM8K .jsonl (calderalab.calib); "auto" = the GSM8K training questions of
    the reference data beside the checkout (../shared/data/gsm8k/train.jsonl) when present, else
    "self" — sampling 32 x 256 tokens from the model costs more than the rest of calibration on a
    CPU. outer/inner iterations: core's defaults.
    """

    bits: int = 3
    rank: int = 32
    lr_bits: int = 4
    calib_source: str = "auto"
    calib_samples: int = 32
    calib_seq_len: int = 256
    seed: int = 0
    outer_iters: int | None = None  # None: core's CompressionSpec default
    inner_iters: int | None = None

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be in 2..8, got {self.bits}")
        if self.rank < 0:
            raise ValueError(f"rank must be >= 0, got {self.rank}")
        if self.calib_samples < 1 or self.calib_seq_len < 8:
            raise ValueError(f"calib_samples must be >= 1 and calib_seq_len >= 8, got {self.calib_samples}, {self.calib_seq_len}")

    def spec(self, bits: int | None = None) -> Any:
        """The uniform CompressionSpec (optionally at other bits)."""
        from calderalab.core import CompressionSpec

        method = "caldera" if self.rank > 0 else "ldlq"
        iters = {k: v for k, v in (("outer_iters", self.outer_iters), ("inner_iters", self.inner_iters)) if v is not None}
        return CompressionSpec(method=method, bits=self.bits if bits is None else bits, rank=self.rank,
                               lr_bits=self.lr_bits, seed=self.seed, **iters)

    def calib_config(self) -> Any:
        from calderalab.calib import CalibConfig

        return CalibConfig(source=resolve_calib_source(self.calib_source), n_samples=self.calib_samples, seq_len=self.calib_seq_len, seed=self.seed)


@dataclass(frozen=True)
class SensitivitySettings:
    """The study's sensitivity profile: N probe samples, the critical-zone fidelity threshold."""

    n_samples: int = 24
    threshold: float = 0.15
    max_new_tokens: int = 24
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.n_samples < 1 or self.max_new_tokens < 1 or self.batch_size < 2:
            raise ValueError(
                f"n_samples and max_new_tokens must be >= 1 and batch_size >= 2, got "
                f"{self.n_samples}, {self.max_new_tokens}, {self.batch_size}"
            )
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")


@dataclass(frozen=True)
class RunSettings:
    """Where things live and on what they run (shared by every experiment).

    artifacts: artifact store dir or URL (None: <out>/artifacts); db: results database (None:
    <out>/results.sqlite, `results.FOLDER_DB`, so a study folder is self-contained and a rerun reuses it).
    """

    model: str = "smollm2"
    out: str = "reports/study"
    artifacts: str | None = None
    db: str | None = None
    device: Device = "auto"
    dtype: DType = "auto"

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model reference is empty: pass e.g. 'smollm2' or 'Qwen/Qwen2-7B-Instruct'")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")

    @property
    def artifacts_url(self) -> str:
        return self.artifacts or f"{self.out.rstrip('/')}/artifacts"

    @property
    def db_path(self) -> str:
        from calderalab.results import FOLDER_DB

        return self.db or f"{self.out.rstrip('/')}/{FOLDER_DB}"


@dataclass(frozen=True)
class StudyConfig:
    """The main job: profile -> critical zone -> uniform / selective / ultra -> Goodhart Gap evaluation."""

    run: RunSettings = field(default_factory=RunSettings)
    compress: CompressSettings = field(default_factory=CompressSettings)
    sensitivity: SensitivitySettings = field(default_factory=SensitivitySettings)
    eval: EvalSettings = EXPERIMENT_EVAL
    ultra: bool = True  # the ultra plan, when the profile measures a critical zone

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

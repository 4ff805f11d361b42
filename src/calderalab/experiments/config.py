"""Settings of the experiments and of the study: one frozen dataclass per concern, defaults here only.

The CLI passes None for every option the user did not give and merges with `merged(...)`, so a
default never has a second copy. Settings that belong to a lower layer are that layer's types,
composed here: a CompressionSpec (core) and a CalibConfig (calib) in `CompressSettings`, the
`SensitivitySettings` of calderalab.sensitivity. Importing this module imports no torch (the
compression defaults are built on first use); configs are plain data and go to manifest.json.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from calderalab import devices
from calderalab.eval.suite import EvalSettings
from calderalab.sensitivity.settings import SensitivitySettings

if TYPE_CHECKING:
    from calderalab.calib import CalibConfig
    from calderalab.core import CompressionSpec

Device = str  # "auto" (cuda when available, else cpu), "cpu", "cuda", "cuda:1", ...
DType = Literal["auto", "float32", "bfloat16"]  # devices.DTYPES

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


def default_spec() -> Any:
    """The experiments' base spec, the report's "3-bit uniform": CALDERA, b_Q = 3, rank k = 32,
    2 outer / 1 inner iterations (every other field: CompressionSpec's own default).

    Fewer iterations than `calderalab compress` (4 / 3) so that the whole study stays within 10
    minutes on a 2-core CPU. `benchmarks/caldera_iters.py` (SmolLM2 layers 5 and 20, all 7 modules,
    the default calibration): mean relative error 0.0796 at 4/3 (7.2 s per layer), 4/1 +0.1%,
    3/1 +1.0% (4.7 s), 2/1 +2.1% (3.3 s). A study that wants the last 2% passes
    --outer-iters 4 --inner-iters 3 (then its artifacts are those of `compress`'s default)."""
    from calderalab.plans import spec_with

    return spec_with(None, bits=3, rank=32, outer_iters=2, inner_iters=1)


def default_calib() -> Any:
    """CalibConfig's own defaults, from source "auto" (see `resolve_calib_source`): sampling
    32 x 256 tokens from the model costs more than the rest of calibration on a CPU."""
    from calderalab.calib import CalibConfig

    return CalibConfig(source=resolve_calib_source("auto"))


@dataclass(frozen=True)
class CompressSettings:
    """The base compression spec every experiment shares, and its calibration: a CompressionSpec
    and a CalibConfig (their fields and defaults are theirs; only the choice of base spec and of the
    "auto" calibration source is made here). `calderalab compress`, `sensitivity` and the
    experiments all build their calibration from `CompressSettings().calib`."""

    base: CompressionSpec = field(default_factory=default_spec)
    calib: CalibConfig = field(default_factory=default_calib)

    def spec(self, bits: int | None = None) -> Any:
        """The base spec (optionally at other bits)."""
        return self.base if bits is None else dataclasses.replace(self.base, bits=bits)

    def with_options(self, calib_source: str | None = None, calib_samples: int | None = None,
                     calib_seq_len: int | None = None, seed: int | None = None, hessian_dtype: str | None = None,
                     **spec_fields: Any) -> "CompressSettings":
        """These settings with every option that is not None applied (the CLI's default=None merge).
        spec_fields: CompressionSpec fields (bits, rank, method, ...; see `plans.spec_with`); seed
        seeds both the rotations and the calibration sampling."""
        from calderalab.plans import spec_with

        source = None if calib_source is None else resolve_calib_source(calib_source)
        calib = merged(self.calib, source=source, n_samples=calib_samples, seq_len=calib_seq_len, seed=seed,
                       hessian_dtype=hessian_dtype)
        return CompressSettings(spec_with(self.base, seed=seed, **spec_fields), calib)


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
    load: str = "auto"  # models.open_to_run: memory, layers (one decoder layer in memory at a time) or auto

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model reference is empty: pass e.g. 'smollm2' or 'Qwen/Qwen2-7B-Instruct'")
        devices.check_load(self.load)
        if self.dtype not in devices.DTYPES:
            raise ValueError(f"--dtype {self.dtype!r} is not supported: use {devices.DTYPES_HELP}")

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
    budget_bpw: float | None = None  # also the `budget` plan at this bpw (calderalab.budget; off: ~5 extra compressions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

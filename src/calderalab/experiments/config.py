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

from calderalab.eval.types import Scoring, check_scoring
from calderalab.sensitivity.settings import SensitivitySettings

if TYPE_CHECKING:
    from calderalab.calib import CalibConfig
    from calderalab.core import CompressionSpec

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


@dataclass(frozen=True)
class EvalSettings:
    """Which probe instances, scored how (DESIGN.md, Probe suite).

    The suite is the seven canonical tests plus `n_per_family` generated instances of every
    family per seed (the canonical assignment counts as a family's first instance), scored by
    `scoring`. `ladder_per_step` instances of every ladder family at every step count k = 1 … 6
    per seed make the difficulty ladder (0: none), where a small model is informative: it can do
    one step and not five. `generate_canonical` also scores the seven canonical tests by greedy
    generation (the report's own protocol), as a second stored run per configuration. `families`
    restricts the suite to the named families (their canonical tests included).
    """

    scoring: Scoring = "choice"
    n_per_family: int = 1
    seeds: tuple[int, ...] = (0,)
    ladder_per_step: int = 1  # 18 ladder instances per seed: the study shows the stage; `eval --ladder` measures it
    generate_canonical: bool = False  # measured: > 300 s per configuration for SmolLM2 on a busy 2-core box
    batch_size: int = 8
    max_new_tokens: int = 192
    tasks_dirs: tuple[str, ...] = ()
    families: tuple[str, ...] = ()  # only these family ids (empty: every family)

    def __post_init__(self) -> None:
        check_scoring(self.scoring)
        if self.n_per_family < 1:
            raise ValueError(f"n_per_family must be >= 1, got {self.n_per_family}")
        if self.ladder_per_step < 0:
            raise ValueError(f"ladder_per_step must be >= 0 (0: no ladder), got {self.ladder_per_step}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers, got {list(self.seeds)}")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {self.batch_size}, {self.max_new_tokens}")


def default_spec() -> Any:
    """The experiments' base spec, the report's "3-bit uniform": CALDERA, b_Q = 3, rank k = 32
    (every other field: CompressionSpec's own default)."""
    from calderalab.plans import spec_with

    return spec_with(None, bits=3, rank=32)


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
                     calib_seq_len: int | None = None, seed: int | None = None, **spec_fields: Any) -> "CompressSettings":
        """These settings with every option that is not None applied (the CLI's default=None merge).
        spec_fields: CompressionSpec fields (bits, rank, method, ...; see `plans.spec_with`); seed
        seeds both the rotations and the calibration sampling."""
        from calderalab.plans import spec_with

        source = None if calib_source is None else resolve_calib_source(calib_source)
        calib = merged(self.calib, source=source, n_samples=calib_samples, seq_len=calib_seq_len, seed=seed)
        return CompressSettings(spec_with(self.base, seed=seed, **spec_fields), calib)


@dataclass(frozen=True)
class RunSettings:
    """Where things live and on what they run (shared by every experiment).

    artifacts: artifact store dir or URL (None: <out>/artifacts); db: results database (None:
    <out>/results.sqlite, so a study folder is self-contained and a rerun reuses it).
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
        return self.db or f"{self.out.rstrip('/')}/results.sqlite"


@dataclass(frozen=True)
class StudyConfig:
    """The main job: profile -> critical zone -> uniform / selective / ultra -> Goodhart Gap evaluation."""

    run: RunSettings = field(default_factory=RunSettings)
    compress: CompressSettings = field(default_factory=CompressSettings)
    sensitivity: SensitivitySettings = field(default_factory=SensitivitySettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    ultra: bool = True  # the ultra plan, when the profile measures a critical zone
    budget_bpw: float | None = None  # also the `budget` plan at this bpw (calderalab.budget; off: ~5 extra compressions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

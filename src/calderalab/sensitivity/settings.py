"""Settings of a sensitivity run, one frozen dataclass per concern, defaults here only. No torch.

- `SensitivityConfig`: how the teacher-forced runs are measured (batches, answer cap, fast path).
- `SensitivitySettings`: the job: N probe samples, the critical-zone threshold, the probe seed,
  the measurement and the layer groups.
`calderalab sensitivity` and the study's sensitivity stage both take a `SensitivitySettings`,
so they measure with the same defaults (tested: same profile for the same settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from calderalab.sensitivity.profile import LayerGroups


@dataclass(frozen=True)
class SensitivityConfig:
    """How the teacher-forced runs are measured.

    batch_size: teacher-forced batch size. noise_batch_size: the batch size of the noise-floor run
    (must differ, so that padding layout and matmul shapes differ). max_new_tokens: cap of the
    reference answers; 24 tokens hold the probes' short final answers and keep every teacher-forced
    run and the cached log-probs bounded (N x 24 x V floats); it is the study's budget on a 2-core
    CPU (the sensitivity stage of SmolLM2 at N = 24 takes ~93 s). generate_batch_size: prompts per
    batched greedy generation (1 = one prompt at a time, no padding at all). pad_token_id: the id
    written into padding (masked out; the pipeline takes the tokenizer's when it has one).
    fast_path: run only layers l..L-1 and the head at answer positions on cached uncompressed
    streams (`fastpath.SuffixRunner`); False = a full forward per layer (the reference path, and
    the fallback for models the fast path does not know).
    """

    batch_size: int = 8
    noise_batch_size: int = 1
    max_new_tokens: int = 24
    pad_token_id: int = 0
    generate_batch_size: int = 8
    fast_path: bool = True

    def __post_init__(self) -> None:
        if min(self.batch_size, self.noise_batch_size, self.max_new_tokens, self.generate_batch_size) < 1:
            raise ValueError(
                f"batch_size, noise_batch_size, max_new_tokens and generate_batch_size must be >= 1, got "
                f"{self.batch_size}, {self.noise_batch_size}, {self.max_new_tokens}, {self.generate_batch_size}"
            )
        if self.noise_batch_size == self.batch_size:
            raise ValueError(
                f"noise_batch_size must differ from batch_size ({self.batch_size}); the same layout measures no noise"
            )


ZONE_METRICS = ("fidelity", "kl", "margin")


@dataclass(frozen=True)
class BootstrapSettings:
    """Bootstrap over the probe samples (`sensitivity.intervals`).

    n_boot: resamples; 4000 leaves ~3 draws beyond the most extreme Bonferroni quantile of a
    30-layer model at level 0.95 (0.05 / 30 / 2 = 0.08%), so the simultaneous bounds rest on more
    than one draw. seed: the resampling seed (same seed, same intervals). level: the coverage of
    every interval (pointwise for one layer's metric, simultaneous for a family of comparisons).
    """

    n_boot: int = 4000
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        if self.n_boot < 100:
            raise ValueError(f"n_boot must be >= 100 for percentile intervals, got {self.n_boot}")
        if not 0.5 <= self.level < 1.0:
            raise ValueError(f"level must be in [0.5, 1), got {self.level}")


@dataclass(frozen=True)
class SensitivitySettings:
    """One sensitivity run: N probe samples (drawn evenly over the task families with `seed`), the
    fidelity threshold of the critical zone, the measurement and the layer groups.

    zone_metric: None = the fidelity-threshold rule (`profile.critical_zone`); "fidelity", "kl" or
    "margin" = the bootstrap rule on that metric (`intervals.metric_intervals`), which needs no
    threshold.

    N = 24 is the study's default (affordable in `make demo`'s 10-minute budget on 2 CPU cores);
    DESIGN.md's 64 is a `--samples 64` away and tightens each fidelity by ~1.6x.
    """

    n_samples: int = 24
    threshold: float = 0.15
    seed: int = 0
    measure: SensitivityConfig = field(default_factory=SensitivityConfig)
    groups: LayerGroups = field(default_factory=LayerGroups)
    zone_metric: str | None = None
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)

    def __post_init__(self) -> None:
        if self.zone_metric is not None and self.zone_metric not in ZONE_METRICS:
            raise ValueError(f"zone metric {self.zone_metric!r} is not one of {', '.join(ZONE_METRICS)}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")

    def record(self) -> dict[str, Any]:
        """What a profile's `settings` records of these settings (JSON values)."""
        m = self.measure
        return {"n_samples": self.n_samples, "threshold": self.threshold, "seed": self.seed,
                **({"zone_metric": self.zone_metric} if self.zone_metric else {}),
                "batch_size": m.batch_size, "noise_batch_size": m.noise_batch_size, "max_new_tokens": m.max_new_tokens}

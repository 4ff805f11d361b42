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


@dataclass(frozen=True)
class SensitivitySettings:
    """One sensitivity run: N probe samples (drawn evenly over the task families with `seed`), the
    fidelity threshold of the critical zone, the measurement and the layer groups.

    N = 24 is the study's default (affordable in `make demo`'s 10-minute budget on 2 CPU cores);
    DESIGN.md's 64 is a `--samples 64` away and tightens each fidelity by ~1.6x.
    """

    n_samples: int = 24
    threshold: float = 0.15
    seed: int = 0
    measure: SensitivityConfig = field(default_factory=SensitivityConfig)
    groups: LayerGroups = field(default_factory=LayerGroups)

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")

    def record(self) -> dict[str, Any]:
        """What a profile's `settings` records of these settings (JSON values)."""
        m = self.measure
        return {"n_samples": self.n_samples, "threshold": self.threshold, "seed": self.seed,
                "batch_size": m.batch_size, "noise_batch_size": m.noise_batch_size, "max_new_tokens": m.max_new_tokens}

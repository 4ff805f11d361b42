"""The layer-sensitivity profile as plain data, layer groups and the critical zone. No torch.

A `SensitivityProfile` is what `measure.layer_sensitivity` returns and what plans
(`calderalab.allocation`) and reports (`calderalab.report`) consume, so it must stay
importable without torch and serialise to JSON exactly.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

GroupName = Literal["early", "middle", "late", "critical"]
GROUP_NAMES: tuple[GroupName, ...] = ("early", "middle", "late", "critical")
PROFILE_FORMAT = 2  # 2 added per-sample values (RunMetrics.per_sample); format 1 files load with none
READABLE_FORMATS = (1, 2)


@dataclass(frozen=True)
class SampleValues:
    """One run's per-sample values, in sample order, so any subset or resample of the samples can be
    re-aggregated exactly as `measure.aggregate` does (tested: all samples give the run's metrics).

    kept[i]: sample i's answer tokens ALL keep the uncompressed top-1; margin_sum[i], kl_sum[i]:
    sums over its answer tokens; n_tokens[i]: its answer length.
    """

    kept: tuple[bool, ...]
    margin_sum: tuple[float, ...]
    kl_sum: tuple[float, ...]
    n_tokens: tuple[int, ...]

    def __post_init__(self) -> None:
        sizes = {len(self.kept), len(self.margin_sum), len(self.kl_sum), len(self.n_tokens)}
        if len(sizes) != 1:
            raise ValueError(f"per-sample values of different lengths: {sorted(sizes)}")
        if any(n < 1 for n in self.n_tokens):
            raise ValueError("every sample needs at least one answer token")

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "SampleValues":
        return SampleValues(tuple(bool(x) for x in data["kept"]), tuple(float(x) for x in data["margin_sum"]),
                            tuple(float(x) for x in data["kl_sum"]), tuple(int(x) for x in data["n_tokens"]))


@dataclass(frozen=True)
class RunMetrics:
    """Metrics of one teacher-forced run against the cached uncompressed run, over answer tokens.

    fidelity: share of samples whose answer tokens ALL keep the uncompressed top-1 prediction.
    margin: mean over answer tokens of (margin_run - margin_uncompressed), where
        margin = log p(reference token) - max over other tokens of log p; negative = less confident.
    kl: mean over answer tokens of KL(p_uncompressed || p_run) in nats.
    top1_agreement: share of answer tokens whose top-1 equals the uncompressed top-1.
    """

    fidelity: float
    margin: float
    kl: float | None  # None: unknown (a profile built from published numbers)
    top1_agreement: float | None
    n_samples: int
    n_tokens: int
    per_sample: SampleValues | None = None  # None: a format-1 profile, or published numbers

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "RunMetrics":
        values = data.get("per_sample")
        return RunMetrics(**{**data, "per_sample": None if values is None else SampleValues.from_dict(values)})


@dataclass(frozen=True)
class LayerRow:
    """One decoder layer compressed alone: its metrics and their excess over the noise floor.

    Excess is signed so that larger = worse than measurement noise:
    fidelity_loss = noise.fidelity - fidelity; margin_excess = margin - noise.margin (negative = worse);
    kl_excess = kl - noise.kl; top1_loss = noise.top1_agreement - top1_agreement.
    """

    layer: int
    metrics: RunMetrics
    fidelity_loss: float
    margin_excess: float
    kl_excess: float | None
    top1_loss: float | None

    @staticmethod
    def against_noise(layer: int, metrics: RunMetrics, noise: RunMetrics) -> "LayerRow":
        return LayerRow(
            layer=layer,
            metrics=metrics,
            fidelity_loss=noise.fidelity - metrics.fidelity,
            margin_excess=metrics.margin - noise.margin,
            kl_excess=None if metrics.kl is None or noise.kl is None else metrics.kl - noise.kl,
            top1_loss=None if metrics.top1_agreement is None or noise.top1_agreement is None
            else noise.top1_agreement - metrics.top1_agreement,
        )


@dataclass(frozen=True)
class SensitivityProfile:
    """Per-layer sensitivity of one model to one compression spec (DESIGN.md, Layer sensitivity).

    rows: one per measured layer, ascending by layer index (a profile may cover a subset).
    noise: the uncompressed model against itself under another batch layout.
    settings: provenance (model, spec, n_samples, batch sizes, ...), JSON-serialisable values only.
    """

    n_layers: int
    rows: tuple[LayerRow, ...]
    noise: RunMetrics
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layers = [r.layer for r in self.rows]
        if layers != sorted(set(layers)):
            raise ValueError(f"profile rows must have distinct ascending layers, got {layers}")
        if layers and not (0 <= layers[0] and layers[-1] < self.n_layers):
            raise ValueError(f"profile layers {layers[0]}..{layers[-1]} outside 0..{self.n_layers - 1}")

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(r.layer for r in self.rows)

    def row(self, layer: int) -> LayerRow:
        for r in self.rows:
            if r.layer == layer:
                return r
        raise KeyError(f"layer {layer} not in profile (measured: {list(self.layers)})")

    def fidelity(self) -> dict[int, float]:
        return {r.layer: r.metrics.fidelity for r in self.rows}

    def margin(self) -> dict[int, float]:
        return {r.layer: r.metrics.margin for r in self.rows}

    @staticmethod
    def from_values(
        n_layers: int, fidelity: dict[int, float], margin: dict[int, float], settings: dict[str, Any] | None = None
    ) -> "SensitivityProfile":
        """A profile from published per-layer numbers (e.g. the report's tables), with a perfect
        noise floor; KL and token agreement are unknown (None)."""
        if set(fidelity) != set(margin):
            raise ValueError(f"fidelity and margin cover different layers: {sorted(set(fidelity) ^ set(margin))}")
        noise = RunMetrics(fidelity=1.0, margin=0.0, kl=0.0, top1_agreement=1.0, n_samples=0, n_tokens=0)
        rows = tuple(
            LayerRow.against_noise(l, RunMetrics(fidelity[l], margin[l], None, None, 0, 0), noise) for l in sorted(fidelity)
        )
        return SensitivityProfile(n_layers=n_layers, rows=rows, noise=noise, settings=dict(settings or {"source": "values"}))

    def to_dict(self) -> dict[str, Any]:
        return {"format": PROFILE_FORMAT, **asdict(self)}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "SensitivityProfile":
        if data.get("format") not in READABLE_FORMATS:
            raise ValueError(f"sensitivity profile format {data.get('format')!r} is not one of {READABLE_FORMATS}")
        rows = tuple(
            LayerRow(**{**r, "metrics": RunMetrics.from_dict(r["metrics"])}) for r in data["rows"]
        )
        return SensitivityProfile(
            n_layers=int(data["n_layers"]), rows=rows, noise=RunMetrics.from_dict(data["noise"]), settings=dict(data["settings"])
        )

    @property
    def has_samples(self) -> bool:
        """Whether the noise floor and every row carry per-sample values (bootstrap intervals need them)."""
        return self.noise.per_sample is not None and all(r.metrics.per_sample is not None for r in self.rows)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False))
        tmp.replace(path)
        return path

    @staticmethod
    def load(path: str | Path) -> "SensitivityProfile":
        return SensitivityProfile.from_dict(json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class LayerGroups:
    """Group boundaries as fractions of depth: a group starts at round_half_up(fraction * n_layers).

    The defaults reproduce the report's 7B split for 28 layers: early 0-5, middle 6-18,
    late 19-22, critical 23-27 (6/28, 19/28, 23/28).
    """

    middle_start: float = 6 / 28
    late_start: float = 19 / 28
    critical_start: float = 23 / 28

    def __post_init__(self) -> None:
        fracs = (self.middle_start, self.late_start, self.critical_start)
        if not (0.0 < fracs[0] < fracs[1] < fracs[2] < 1.0):
            raise ValueError(f"group boundaries must satisfy 0 < middle < late < critical < 1, got {fracs}")

    def starts(self, n_layers: int) -> tuple[int, int, int, int]:
        """First layer index of (early, middle, late, critical) for a model of n_layers."""
        if n_layers < 4:
            raise ValueError(f"layer groups need at least 4 layers, got n_layers={n_layers}")
        # +1e-9: 6/28*28 may land a hair below 6.0 in floating point.
        cuts = [math.floor(f * n_layers + 0.5 + 1e-9) for f in (self.middle_start, self.late_start, self.critical_start)]
        # keep every group non-empty on very shallow models
        for i in range(3):
            lo = (cuts[i - 1] if i else 0) + 1
            cuts[i] = min(max(cuts[i], lo), n_layers - (3 - i))
        return (0, cuts[0], cuts[1], cuts[2])

    def ranges(self, n_layers: int) -> dict[GroupName, range]:
        s = self.starts(n_layers) + (n_layers,)
        return {name: range(s[i], s[i + 1]) for i, name in enumerate(GROUP_NAMES)}

    def group_of(self, layer: int, n_layers: int) -> GroupName:
        for name, r in self.ranges(n_layers).items():
            if layer in r:
                return name
        raise ValueError(f"layer {layer} outside 0..{n_layers - 1}")


@dataclass(frozen=True)
class GroupSummary:
    name: GroupName
    layers: tuple[int, ...]  # measured layers of the group
    span: range  # all layers of the group
    avg_fidelity: float
    avg_margin: float


def group_summaries(profile: SensitivityProfile, groups: LayerGroups = LayerGroups()) -> list[GroupSummary]:
    """Average fidelity and margin per layer group, over the group's measured layers (groups with none are skipped)."""
    out = []
    for name, span in groups.ranges(profile.n_layers).items():
        rows = [r for r in profile.rows if r.layer in span]
        if not rows:
            continue
        out.append(
            GroupSummary(
                name=name,
                layers=tuple(r.layer for r in rows),
                span=span,
                avg_fidelity=sum(r.metrics.fidelity for r in rows) / len(rows),
                avg_margin=sum(r.metrics.margin for r in rows) / len(rows),
            )
        )
    return out


def critical_zone(
    profile: SensitivityProfile, threshold: float, groups: LayerGroups = LayerGroups()
) -> tuple[int, ...]:
    """The critical zone: the last maximal run of consecutive layers with fidelity < threshold,
    provided that run reaches the late part of the network; () when there is none.

    Precisely: take the measured layers with fidelity < threshold; split them into runs of
    consecutive layer indices (an unmeasured layer breaks a run); the zone is the run with the
    highest indices, and it counts only if its last layer is >= the start of the `late` group
    (an early/middle-only run is not a *late* critical zone). A robust final layer therefore
    does not hide a zone just before it, and the zone may extend back into the middle group when
    the measured fidelities say so. If every measured layer is below threshold the zone is
    every layer: the threshold is too high for this spec, which callers should report.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"fidelity threshold must be in (0, 1], got {threshold}")
    below = [r.layer for r in profile.rows if r.metrics.fidelity < threshold]
    if not below:
        return ()
    run = [below[-1]]
    for layer in reversed(below[:-1]):
        if layer != run[-1] - 1:
            break
        run.append(layer)
    late_start = groups.starts(profile.n_layers)[2]
    if run[0] < late_start:
        return ()
    return tuple(sorted(run))

"""Layer sensitivity: which decoder layers a compression spec hurts (DESIGN.md, Layer sensitivity).

`profile` (plain data, groups, critical zone) and `settings` import no torch, so reports and
configs can use them; `measure` (the teacher-forced runs) and `pipeline` (probe prompts ->
reference answers -> per-layer runs, with a layer-weights provider) import torch and are loaded
on first use. Nothing here imports experiments, report, results or cli.
"""

from __future__ import annotations

from typing import Any

from calderalab.sensitivity.profile import (
    GROUP_NAMES,
    GroupSummary,
    LayerGroups,
    LayerRow,
    RunMetrics,
    SampleValues,
    SensitivityProfile,
    critical_zone,
    group_summaries,
)
from calderalab.sensitivity.settings import SensitivityConfig, SensitivitySettings

_MEASURE = {"ProbeSample", "layer_sensitivity", "greedy_reference_samples", "teacher_forced_logprobs",
            "compare_answer", "margins", "aggregate"}

__all__ = ["GROUP_NAMES", "GroupSummary", "LayerGroups", "LayerRow", "RunMetrics", "SampleValues", "SensitivityConfig",
           "SensitivityProfile", "SensitivitySettings", "critical_zone", "group_summaries", *sorted(_MEASURE)]


def __getattr__(name: str) -> Any:
    if name in _MEASURE:
        from calderalab.sensitivity import measure

        return getattr(measure, name)
    raise AttributeError(f"module 'calderalab.sensitivity' has no attribute {name!r}")

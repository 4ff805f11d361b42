"""Layer sensitivity: which decoder layers a compression spec hurts (DESIGN.md, Layer sensitivity).

`profile` (plain data, groups, critical zone) imports no torch, so reports can use it;
`measure` (the teacher-forced runs) imports torch and is loaded on first use.
"""

from __future__ import annotations

from typing import Any

from calderalab.sensitivity.profile import (
    GROUP_NAMES,
    GroupSummary,
    LayerGroups,
    LayerRow,
    RunMetrics,
    SensitivityProfile,
    critical_zone,
    group_summaries,
)

_MEASURE = {"ProbeSample", "SensitivityConfig", "layer_sensitivity", "greedy_reference_samples",
            "teacher_forced_logprobs", "compare_answer", "margins", "aggregate"}

__all__ = ["GROUP_NAMES", "GroupSummary", "LayerGroups", "LayerRow", "RunMetrics", "SensitivityProfile",
           "critical_zone", "group_summaries", *sorted(_MEASURE)]


def __getattr__(name: str) -> Any:
    if name in _MEASURE:
        from calderalab.sensitivity import measure

        return getattr(measure, name)
    raise AttributeError(f"module 'calderalab.sensitivity' has no attribute {name!r}")

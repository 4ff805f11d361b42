"""Experiments on stored artifacts (ablate, sweep, min-protect, grid) and the main job (study).

Imports torch and the model stack lazily (inside functions), so `import calderalab.experiments`
stays cheap for the CLI's help.
"""

from calderalab.experiments.config import CompressSettings, EvalSettings, RunSettings, SensitivitySettings, StudyConfig, merged
from calderalab.experiments.protection import ExperimentResult, ablate, finish, grid, min_protect, sweep
from calderalab.experiments.session import Session, default_evaluator
from calderalab.experiments.study import StudyResult, study

__all__ = ["CompressSettings", "EvalSettings", "ExperimentResult", "RunSettings", "SensitivitySettings", "Session",
           "StudyConfig", "StudyResult", "ablate", "default_evaluator", "finish", "grid", "merged", "min_protect",
           "study", "sweep"]

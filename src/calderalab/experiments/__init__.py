"""Experiments on stored artifacts (ablate, sweep, min-protect, grid), the main job (study), and the
evaluation job that stores runs (`calderalab eval` and every experiment go through it).

Imports torch and the model stack lazily (inside functions), so `import calderalab.experiments`
stays cheap for the CLI's help.
"""

from calderalab.experiments.config import (EXPERIMENT_EVAL, CompressSettings, EvalSettings, RunSettings,
                                           SensitivitySettings, StudyConfig, merged)
from calderalab.experiments.evaluation import EvalJob, default_evaluator, run_eval_job
from calderalab.experiments.protection import ExperimentResult, ablate, finish, grid, min_protect, sweep
from calderalab.experiments.session import Session
from calderalab.experiments.study import StudyResult, study

__all__ = ["EXPERIMENT_EVAL", "CompressSettings", "EvalJob", "EvalSettings", "ExperimentResult", "RunSettings",
           "SensitivitySettings", "Session", "StudyConfig", "StudyResult", "ablate", "default_evaluator", "finish",
           "grid", "merged", "min_protect", "run_eval_job", "study", "sweep"]

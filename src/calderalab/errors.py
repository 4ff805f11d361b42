"""Error types that reach the user. Imports nothing heavy.

Every error meant for a person subclasses `CalderalabError`; the CLI prints its message
(which names the problem and how to fix it) without a traceback.
"""


class CalderalabError(Exception):
    """A user-facing error: bad input, unknown model, mismatched artifacts, ..."""


class ModelRefError(CalderalabError, ValueError):
    """A model reference that cannot be resolved or loaded."""


class PlanError(CalderalabError, ValueError):
    """A compression plan that is malformed or does not fit the model."""


class ArtifactError(CalderalabError):
    """An artifact store that is missing, corrupted, or made from another model."""


class TaskFamilyError(CalderalabError, ValueError):
    """A task-family file that is malformed."""


class CompressionError(CalderalabError, RuntimeError):
    """A numerical failure inside a decomposition (e.g. Cholesky fails at maximum damping)."""


class ResultsError(CalderalabError):
    """A results database that is not ours, has a newer schema, or lacks the requested run."""

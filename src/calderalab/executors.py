"""Where module decompositions run: in this process, or as Ray tasks.

Once a layer's Hessians exist its modules are independent problems decompose(W, H, spec), so
they can run anywhere. An executor takes a batch of jobs (`submit`) and later hands back their
Decompositions in job order (`gather`); between the two the driver keeps collecting the next
layer's Hessians, so with Ray the capture of layer l+1 overlaps the decompositions of layer l.
Ray is an optional dependency, imported only when the Ray executor is built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch

from calderalab import core, faults

log = logging.getLogger(__name__)

ExecutorName = Literal["local", "ray"]


@dataclass(frozen=True)
class DecomposeJob:
    """One module's problem. W: (d_out, d_in) float32, H: (d_in, d_in) float32."""

    layer: int
    name: str
    W: torch.Tensor
    H: torch.Tensor
    spec: Any


def run_job(job: DecomposeJob) -> Any:
    """decompose(W, H, spec): the one function every executor runs."""
    faults.point("decompose")
    return core.decompose(job.W, job.H, job.spec)


class LocalExecutor:
    """Runs jobs in this process at submit time (simple, and the reference for determinism)."""

    name = "local"

    def submit(self, jobs: list[DecomposeJob]) -> list[Any]:
        return [run_job(job) for job in jobs]

    def gather(self, handles: list[Any]) -> list[Any]:
        return handles

    def close(self) -> None:
        pass


class RayExecutor:
    """Runs each job as a Ray task (one CPU each, or one GPU when `gpus_per_task` > 0).

    Starts a local Ray instance with `num_cpus` unless Ray is already initialised (e.g. connected
    to a cluster with ray.init(address=...) before calling), in which case it is used as is.
    """

    name = "ray"

    def __init__(self, num_cpus: int | None = None, gpus_per_task: float = 0.0) -> None:
        try:
            import ray
        except ImportError as err:
            raise ImportError("the Ray executor needs ray: pip install 'calderalab[ray]'") from err
        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self._remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task)(_ray_task)

    def submit(self, jobs: list[DecomposeJob]) -> list[Any]:
        return [self._remote.remote(job) for job in jobs]

    def gather(self, handles: list[Any]) -> list[Any]:
        return self._ray.get(handles) if handles else []

    def close(self) -> None:
        if self._owns_ray:
            self._ray.shutdown()


def _ray_task(job: DecomposeJob) -> Any:
    # Ray workers default to one intra-op thread per task (OMP_NUM_THREADS=1); the local
    # executor may use more. core's results must not depend on that (tests compare bytes).
    return run_job(job)


def make_executor(name: ExecutorName, num_cpus: int | None = None) -> LocalExecutor | RayExecutor:
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(num_cpus=num_cpus)
    raise ValueError(f"executor must be 'local' or 'ray', got {name!r}")

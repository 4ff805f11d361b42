"""Where module decompositions run: in this process, or as Ray tasks.

Once a layer's Hessians exist its modules are independent problems decompose(W, H, spec), so
they can run anywhere. An executor takes a batch of jobs (`submit`) and later hands back their
Decompositions in job order (`gather`); between the two the driver keeps collecting the next
layer's Hessians, so with Ray the capture of layer l+1 overlaps the decompositions of layer l.
Ray is an optional dependency, imported only when the Ray executor is built.

Every decomposition of one run happens at one intra-op thread count, `threads`, whatever the
executor: MKL's LAPACK and small matrix products give other last bits at another thread count
(measured: SmolLM2's layer-5 modules decompose to other bytes at 1 thread than at 2), and a Ray
task starts with one thread, so without the pin a Ray run wrote other bytes than a local one.
`threads=None` means torch's count in the driver (its default, or OMP_NUM_THREADS), which is what
every earlier run used, so their stores and published numbers stay reproducible; each stored
module records its count, and a resume recomputes modules made at another. The same bytes on
another machine need the same count there (`compress --threads N`). A second thread buys a
decomposition little (caldera rank 64, two SmolLM2 layers: 15.2 s at 2 threads, 16.1 s at 1), so on
a small machine `--executor ray --threads 1`, one task per core, is the fast setting.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
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


def resolve_threads(threads: int | None) -> int:
    """The intra-op thread count decompositions run at: `threads`, or torch's current count when None."""
    if threads is None:
        return torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads (--threads) must be a positive int, the intra-op threads of each decomposition; got {threads!r}")
    return threads


def check_executor(name: str, num_cpus: int | None, threads: int) -> None:
    """Refuse an executor setting no task could run under, before any work starts."""
    if name not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {name!r}")
    if name == "ray" and num_cpus is not None and num_cpus < threads:
        raise ValueError(f"--num-cpus {num_cpus} is fewer than the {threads} CPUs each Ray task reserves "
                         f"(--threads {threads}): no task could start; pass --threads {num_cpus} or more CPUs")


@contextlib.contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_job(job: DecomposeJob, threads: int) -> Any:
    """decompose(W, H, spec) at `threads` intra-op threads: the one function every executor runs."""
    faults.point("decompose")
    with intra_op_threads(threads):
        return core.decompose(job.W, job.H, job.spec)


class LocalExecutor:
    """Runs jobs in this process at submit time (simple, and the reference for determinism)."""

    name = "local"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = resolve_threads(threads)

    def submit(self, jobs: list[DecomposeJob]) -> list[Any]:
        return [run_job(job, self.threads) for job in jobs]

    def gather(self, handles: list[Any]) -> list[Any]:
        return handles

    def close(self) -> None:
        pass


class RayExecutor:
    """Runs each job as a Ray task (`threads` CPUs and intra-op threads each, or one GPU when
    `gpus_per_task` > 0).

    Starts a local Ray instance with `num_cpus` unless Ray is already initialised (e.g. connected
    to a cluster with ray.init(address=...) before calling), in which case it is used as is.
    """

    name = "ray"

    def __init__(self, num_cpus: int | None = None, gpus_per_task: float = 0.0, threads: int | None = None) -> None:
        self.threads = resolve_threads(threads)
        check_executor(self.name, num_cpus, self.threads)
        try:
            import ray
        except ImportError as err:
            raise ImportError("the Ray executor needs ray: pip install 'calderalab[ray]'") from err
        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < self.threads:
            self.close()
            raise ValueError(f"the Ray cluster has {cpus:g} CPUs, fewer than the {self.threads} each task reserves "
                             f"(--threads {self.threads}): no task could start; pass --threads {max(int(cpus), 1)}")
        self._remote = ray.remote(num_cpus=self.threads, num_gpus=gpus_per_task)(_ray_task)

    def submit(self, jobs: list[DecomposeJob]) -> list[Any]:
        return [self._remote.remote(job, self.threads) for job in jobs]

    def gather(self, handles: list[Any]) -> list[Any]:
        return self._ray.get(handles) if handles else []

    def close(self) -> None:
        if self._owns_ray:
            self._ray.shutdown()


def _ray_task(job: DecomposeJob, threads: int) -> Any:
    # Ray workers start with one intra-op thread (OMP_NUM_THREADS=1); run_job sets the same count
    # as the local executor's, so both write the same bytes (tests compare them).
    return run_job(job, threads)


def make_executor(name: ExecutorName, num_cpus: int | None = None,
                  threads: int | None = None) -> LocalExecutor | RayExecutor:
    check_executor(name, num_cpus, resolve_threads(threads))
    return LocalExecutor(threads) if name == "local" else RayExecutor(num_cpus=num_cpus, threads=threads)

"""Decompositions run at one pinned intra-op thread count, so the executor and the machine's cores
do not change a store's bytes (MKL's LAPACK gives other last bits at another count)."""

import os

import pytest
import torch

from calderalab import core
from calderalab.executors import DecomposeJob, LocalExecutor, intra_op_threads, make_executor, resolve_threads, run_job

# The smallest square module found where 1 and 2 MKL threads give other bytes (caldera's SVD and
# Cholesky factorisations thread at this size; LDLQ alone did not up to 384).
SPEC = core.CompressionSpec("caldera", 3, rank=8, outer_iters=2, inner_iters=2)


def job(d: int = 384) -> DecomposeJob:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(d, d, generator=g)  # (d_out, d_in)
    X = torch.randn(4 * d, d, generator=g)  # (n, d_in)
    return DecomposeJob(0, "q", W, X.T @ X / (4 * d), SPEC)


def tensors(decomposition) -> dict[str, torch.Tensor]:
    return decomposition.to_tensors()


def same(a, b) -> bool:
    ta, tb = tensors(a), tensors(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_thread_count_changes_bytes_and_every_executor_pins_it():
    pytest.importorskip("ray")
    j = job()
    at1, at2 = run_job(j, 1), run_job(j, 2)
    if (os.cpu_count() or 1) >= 2:  # the planted truth the pin exists for: unpinned, a Ray task (1 thread)
        assert not same(at1, at2)   # and a local run (torch's 2 threads here) wrote other bytes
    ray_executor = make_executor("ray", num_cpus=2, threads=1)
    try:
        assert ray_executor.threads == 1
        (from_ray,) = ray_executor.gather(ray_executor.submit([j]))
    finally:
        ray_executor.close()
    (local,) = LocalExecutor(threads=1).submit([j])
    assert same(from_ray, at1) and same(local, at1)
    (local2,) = LocalExecutor(threads=2).submit([j])
    assert same(local2, at2)


def test_threads_default_to_torch_count_and_are_restored():
    before = torch.get_num_threads()
    assert resolve_threads(None) == before and LocalExecutor().threads == before
    seen = []
    with intra_op_threads(1):
        seen.append(torch.get_num_threads())
    assert seen == [1] and torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_thread_counts_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"threads \(--threads\) must be a positive int"):
        resolve_threads(bad)


def test_ray_refuses_fewer_cpus_than_a_task_reserves():
    pytest.importorskip("ray")
    with pytest.raises(ValueError, match="--num-cpus 1 is fewer than the 2 CPUs each Ray task reserves"):
        make_executor("ray", num_cpus=1, threads=2)

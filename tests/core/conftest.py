"""Core tests run single-threaded: they are many small ops, where OpenMP threads on a busy 2-core
machine cost up to 10x wall time (measured: 23 s vs 426 s for this folder) and buy nothing."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

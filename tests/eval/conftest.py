"""Fixtures for the eval tests (helpers live in tiny_lm.py, a uniquely named module)."""

from __future__ import annotations

import pytest
from tiny_lm import char_tokenizer, tiny_llama


@pytest.fixture(scope="session")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="session")
def random_lm(tok):
    return tiny_llama(len(tok), seed=0)


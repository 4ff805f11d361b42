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



@pytest.fixture(scope="session")
def families():
    """The built-in task families."""
    from calderalab.eval.tasks import load_families

    return load_families()


@pytest.fixture(scope="session")
def ordinary(families):
    """20 per family at seeds 0 and 1: 920 instances from 23 families (the option-cue tests share them)."""
    from calderalab.eval.tasks import generate_instances

    return generate_instances(families, 20, seed=0) + generate_instances(families, 20, seed=1)

"""Slow: the real embedded SmolLM2 answers execution prompts in the `Answer:` format the parser reads."""

from __future__ import annotations

import pytest

from calderalab.eval.gsm8k import load_gsm8k
from calderalab.eval.runner import EvalConfig, evaluate

pytestmark = pytest.mark.slow


def test_seven_execution_prompts_generate_and_parse(smollm2, shared_data):
    model, tokenizer = smollm2
    instances = load_gsm8k("test", limit=7, data_dir=shared_data)
    run = evaluate(model, tokenizer, instances, config=EvalConfig(batch_size=7, max_new_tokens=192))
    assert len(run.results) == 7 and all(r.probe == "execution" for r in run.results)
    assert all(r.raw_output.strip() for r in run.results)
    # The instruction asks for a final `Answer:` line; most replies must end with one that parses.
    assert run.parse_failures["execution"] <= 2, [r.raw_output[-200:] for r in run.results]
    assert run.truncated["execution"] <= 2
    assert run.generated_tokens > 7 * 10
    assert all(v is None for v in run.verdicts.values())  # GSM8K has no understanding probe

"""GSM8K loader: every test row parses into an execution-only number instance."""

from __future__ import annotations

import json

import pytest

from calderalab.eval.gsm8k import final_answer, load_gsm8k, row_to_instance
from calderalab.eval.probes import has_understanding_probe


def test_all_test_rows_parse(shared_data):
    rows = load_gsm8k("test", data_dir=shared_data)
    assert len(rows) == 1319
    assert all(r.family == "gsm8k" and r.answer_type == "number" and not has_understanding_probe(r) for r in rows)
    assert all(float(r.answer) == float(r.answer) for r in rows)
    first = rows[0]
    assert first.answer == "18" and first.question.startswith("Janet")
    assert first.steps[0] == "Janet sells 16 - 3 - 4 = 9 duck eggs a day."  # calculator tags removed
    assert len({r.uid for r in rows}) == 1319


def test_answers_match_the_raw_file(shared_data):
    lines = (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()
    rows = load_gsm8k("test", data_dir=shared_data)
    for line, inst in zip(lines[:200], rows[:200]):
        raw = json.loads(line)["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert float(inst.answer) == float(raw)


def test_subsets_are_stable(shared_data):
    head = load_gsm8k("test", limit=5, data_dir=shared_data)
    assert [r.index for r in head] == [0, 1, 2, 3, 4]
    sample = load_gsm8k("test", limit=7, seed=3, data_dir=shared_data)
    assert sample == load_gsm8k("test", limit=7, seed=3, data_dir=shared_data)
    assert [r.index for r in sample] != [0, 1, 2, 3, 4, 5, 6] and len(sample) == 7


def test_final_answer_cleans_numbers():
    assert final_answer("so 1,000 total.\n#### 1,000") == "1000"
    assert final_answer("#### -3.5") == "-3.5"
    with pytest.raises(ValueError, match="####"):
        final_answer("no marker here")
    with pytest.raises(ValueError, match="question"):
        row_to_instance({"q": 1}, 0)


def test_missing_file_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="CALDERALAB_SHARED_DATA"):
        load_gsm8k("test", data_dir=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_gsm8k("dev", data_dir=tmp_path)

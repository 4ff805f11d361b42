import json

import pytest

from calderalab.errors import TaskFamilyError
from calderalab.eval.gsm8k import gsm8k_answer, load_gsm8k


def test_answer_parsing():
    assert gsm8k_answer("a\nb\n#### 1,000") == "1000"
    with pytest.raises(ValueError, match="####"):
        gsm8k_answer("no final line")


def test_load_real_file_is_seeded(shared_data):
    path = shared_data / "gsm8k" / "test.jsonl"
    a, b, c = load_gsm8k(path, 5, seed=1), load_gsm8k(path, 5, seed=1), load_gsm8k(path, 5, seed=2)
    assert a == b and [i.index for i in a] != [i.index for i in c]
    first = json.loads(path.read_text().splitlines()[a[0].index])
    assert a[0].question == first["question"] and first["answer"].endswith(a[0].answer)
    assert all(i.plan_options == () and i.answer_type == "number" and i.n_steps >= 1 for i in a)
    assert len({i.uid for i in a}) == 5


def test_load_errors(tmp_path):
    with pytest.raises(TaskFamilyError, match="not found"):
        load_gsm8k(tmp_path / "x.jsonl", 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": 1}\n')
    with pytest.raises(TaskFamilyError, match="bad.jsonl:1"):
        load_gsm8k(bad, 1)
    with pytest.raises(ValueError, match="between 1 and 1"):
        load_gsm8k(bad, 2)

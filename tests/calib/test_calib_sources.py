import pytest
import torch

from calderalab.calib import CalibConfig, load_calibration, token_sha256
from calderalab.calib.sources import sample_windows


def test_windows_are_seeded_slices():
    ids = torch.arange(100)
    a = sample_windows(ids, 5, 10, seed=3)
    assert a.shape == (5, 10)
    assert torch.equal(a, sample_windows(ids, 5, 10, seed=3))
    assert not torch.equal(a, sample_windows(ids, 5, 10, seed=4))
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(5, 9, dtype=a.dtype))  # contiguous windows
    with pytest.raises(ValueError, match="fewer than seq_len"):
        sample_windows(torch.arange(5), 1, 10, seed=0)


def test_sha_depends_on_values_and_shape():
    x = torch.arange(12)
    assert token_sha256(x.view(3, 4)) != token_sha256(x.view(4, 3))
    assert token_sha256(x.view(3, 4)) == token_sha256(x.view(3, 4).clone())


def test_text_and_gsm8k_sources(shared_data):
    from calderalab.models import tiny_tokenizer

    tok = tiny_tokenizer()
    wiki = load_calibration(None, tok, CalibConfig(str(shared_data / "wikitext-2" / "valid.txt"), n_samples=4, seq_len=32, batch_size=3))
    assert wiki.token_ids.shape == (4, 32)
    assert [b.shape[0] for b in wiki.batches] == [3, 1]
    assert "valid.txt" in wiki.description and wiki.manifest_entry()["token_sha256"] == wiki.sha256
    gsm = load_calibration(None, tok, CalibConfig(str(shared_data / "gsm8k" / "train.jsonl"), n_samples=2, seq_len=64))
    assert "GSM8K" in gsm.description
    assert gsm.sha256 == load_calibration(None, tok, CalibConfig(str(shared_data / "gsm8k" / "train.jsonl"), n_samples=2, seq_len=64)).sha256


def test_self_generated_is_seeded():
    from calderalab.models import tiny_model

    model, tok = tiny_model("llama", n_layers=1)
    cfg = CalibConfig(n_samples=3, seq_len=12, seed=1)
    a, b = load_calibration(model, tok, cfg), load_calibration(model, tok, cfg)
    assert a.token_ids.shape == (3, 12)
    assert torch.equal(a.token_ids, b.token_ids)
    assert a.description.startswith("self-generated")


def test_config_errors():
    with pytest.raises(ValueError, match="neither 'self' nor an existing file"):
        CalibConfig(source="/nope.txt")
    with pytest.raises(ValueError, match="n_samples"):
        CalibConfig(n_samples=0)

"""The coherence check: planted incoherent texts are flagged with exact numbers; on a tiny model
a broken compression is flagged and the original itself (and a small perturbation) is not."""

import math

import pytest
import torch

from calderalab import models
from calderalab.artifacts.coherence import (
    CoherenceConfig,
    CoherenceReport,
    PromptCoherence,
    check_coherence,
    continuation_nll,
    cut_after_eos,
    score_text,
)

PROMPT = "Describe a quiet morning in a small town."
FLUENT = "The sun rose slowly over the quiet streets."


def _report(compressed_text: str, nll_per_token: float, original_text: str = FLUENT, ppl_original: float = 2.0):
    """A one-prompt report of planted generations: 4 tokens each, NLL set so ppl is exact."""
    config = CoherenceConfig(prompts=(PROMPT,))
    original = score_text(original_text, PROMPT, config.ngram, 4 * math.log(ppl_original), 4)
    compressed = score_text(compressed_text, PROMPT, config.ngram, 4 * nll_per_token, 4)
    return CoherenceReport(config, (PromptCoherence(PROMPT, original, compressed),))


def test_the_same_text_is_not_flagged():
    report = _report(FLUENT, math.log(2.0))
    assert report.ppl_ratio == pytest.approx(1.0) and report.script_increase == 0 and report.repetition_increase == 0
    assert not report.flagged and report.problems() == []


def test_planted_loop_is_flagged_as_repetition():
    loop = '"c' * 16  # 32 characters: 8-grams '"c"c"c"c' and 'c"c"c"c"' only -> 1 - 2/25
    report = _report(loop, math.log(2.0))
    assert report.repetition_increase == pytest.approx(1 - 2 / 25)
    assert report.flagged and report.problems()[0].startswith("degenerate repetition")


def test_planted_script_switch_is_flagged():
    report = _report("今天早上很安静 the end", math.log(2.0))  # 7 CJK of 13 letters
    assert report.script_increase == pytest.approx(7 / 13)
    assert [p.split(":")[0] for p in report.problems()] == ["script switch"]


def test_perplexity_ratio_is_exact_and_flags_above_the_threshold():
    report = _report("Fish bicycle seven under lamp purple.", math.log(50.0))
    assert report.perplexity("compressed") == pytest.approx(50.0) and report.ppl_ratio == pytest.approx(25.0)
    assert [p.split(":")[0] for p in report.problems()] == ["incoherent text"]
    assert not _report("Fish bicycle seven under lamp purple.", math.log(38.0)).flagged  # ratio 19 < 20


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="non-empty prompts"):
        CoherenceConfig(prompts=())
    with pytest.raises(ValueError, match="max_ppl_ratio"):
        CoherenceConfig(max_ppl_ratio=0.5)


def test_cut_after_eos_keeps_the_eos():
    assert cut_after_eos(torch.tensor([5, 2, 7, 2]), 2).tolist() == [5, 2]
    assert cut_after_eos(torch.tensor([5, 7]), 2).tolist() == [5, 7]
    assert cut_after_eos(torch.tensor([5, 2]), None).tolist() == [5, 2]


def test_continuation_nll_matches_a_one_step_at_a_time_reference():
    model, _ = models.tiny_model("llama", n_layers=2)
    ids, cont = torch.tensor([[5, 9, 14]]), torch.tensor([20, 7])
    got = continuation_nll(model, ids, cont)
    want = []
    for t in range(len(cont)):
        prefix = torch.cat([ids[0], cont[:t]]).unsqueeze(0)
        with torch.no_grad():
            want.append(-torch.log_softmax(model(input_ids=prefix).logits[0, -1], -1)[cont[t]])
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = models.tiny_model("llama", n_layers=3, seed=0)
    originals = {(l, n): models.target_linear(model, l, n).weight.detach().clone()
                 for l in range(3) for n in models.MODULE_NAMES}
    return model, tokenizer, originals


def test_the_original_weights_are_not_flagged(tiny):
    model, tokenizer, originals = tiny
    report = check_coherence(model, tokenizer, originals, CoherenceConfig(n_new_tokens=16))
    assert report.ppl_ratio == pytest.approx(1.0) and not report.flagged
    assert all(p.original.text == p.compressed.text for p in report.prompts)


def test_a_broken_compression_is_flagged_and_a_small_error_is_not(tiny):
    model, tokenizer, originals = tiny
    g = torch.Generator().manual_seed(0)
    permuted = {k: W[torch.randperm(W.shape[0], generator=g)] for k, W in originals.items()}  # rows scrambled
    broken = check_coherence(model, tokenizer, permuted, CoherenceConfig(n_new_tokens=16))
    assert broken.flagged and broken.ppl_ratio > 20
    slightly_off = {k: W + 0.005 * torch.randn(W.shape, generator=g) for k, W in originals.items()}
    assert not check_coherence(model, tokenizer, slightly_off, CoherenceConfig(n_new_tokens=16)).flagged
    # the check leaves the model with its original weights
    assert all(torch.equal(models.target_linear(model, *k).weight, W) for k, W in originals.items())


def _store(model, path, permute_rows: bool):
    """A store of every module as RTN 8-bit of W, or of W with its rows shuffled (a mis-ordered load)."""
    from helpers_artifacts import CALIB, MODEL, spec

    from calderalab import core
    from calderalab.artifacts import ArtifactStore

    store, spec_, g = ArtifactStore(str(path)), spec(bits=8), torch.Generator().manual_seed(0)
    store.init(MODEL, CALIB)
    for layer in range(models.num_layers(model)):
        for name in core.MODULE_NAMES:
            W = models.target_linear(model, layer, name).weight.detach().to(torch.float32)
            W_stored = W[torch.randperm(W.shape[0], generator=g)] if permute_rows else W
            H = torch.eye(W.shape[1])
            store.put(layer, name, spec_, core.decompose(W_stored, H, spec_), W, H)
    return store


def test_validate_exits_1_when_the_compressed_model_writes_gibberish(tmp_path):
    from typer.testing import CliRunner

    from calderalab.cli import app

    model, tokenizer = models.tiny_model("llama", n_layers=3, seed=0)
    models.export_checkpoint(model, tokenizer, tmp_path / "model")
    _store(model, tmp_path / "shuffled", permute_rows=True)
    _store(model, tmp_path / "good", permute_rows=False)
    # the correlation threshold is switched off (--min-corr -1) so that only the coherence check can fail
    args = ["validate", str(tmp_path / "model"), "--no-replacement", "--min-corr", "-1"]
    bad = CliRunner().invoke(app, [*args, str(tmp_path / "shuffled")])
    assert bad.exit_code == 1, bad.output
    assert "INCOHERENT" in bad.output and "FAIL coherence: incoherent text" in bad.output and "FAIL module" not in bad.output
    skipped = CliRunner().invoke(app, [*args, str(tmp_path / "shuffled"), "--no-coherence"])
    assert skipped.exit_code == 0, skipped.output
    good = CliRunner().invoke(app, [*args, str(tmp_path / "good")])
    assert good.exit_code == 0 and "coherence check: coherent" in good.output, good.output


def test_coherence_plot_draws_one_bar_per_model(tmp_path):
    from calderalab.report.plots import coherence_plot

    reports = {"fluent": _report(FLUENT, math.log(2.0)), "loop": _report('"c' * 16, math.log(2.0)),
               "salad": _report("Fish bicycle seven under lamp purple.", math.log(50.0))}
    path = coherence_plot(reports, tmp_path / "coherence.png")
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="no coherence reports"):
        coherence_plot({}, tmp_path / "none.png")

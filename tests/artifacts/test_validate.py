"""Validation pieces: the single-layer replacement rule, and module checks against exact math."""

import torch

from calderalab.artifacts.validate import ValidationConfig, final_answer, greedy_reference, layer_check, teacher_forced_top1
from calderalab.models import swapped_weights, tiny_model, tiny_tokenizer


def test_layer_check_rule():
    cfg = ValidationConfig(n_tokens=8, min_agreement=0.75)
    t, f = True, False
    ok = layer_check(5, torch.tensor([t, t, t, f, t, t, t, t]), "4", "4", cfg)
    assert ok.ok and ok.exact_prefix == 3 and ok.agreement == 7 / 8
    # Same answer in other words: the reply starts differently but still says 4 (SmolLM2 layer 6, 3-bit).
    reworded = layer_check(6, torch.tensor([t, t, f, t, t, t, t, t]), "4", "4", cfg)
    assert reworded.ok and reworded.exact_prefix == 2
    wrong = layer_check(5, torch.tensor([t] * 8), "5", "4", cfg)
    assert not wrong.ok  # states another answer
    drift = layer_check(5, torch.tensor([t, t, t, t, f, f, f, t]), "4", "4", cfg)
    assert not drift.ok and drift.agreement == 5 / 8


def test_final_answer_is_the_last_number_of_the_first_turn():
    assert final_answer("The answer to this classic math problem is 4.<|im_end|>\n<|im_start|>user 7") == "4"
    assert final_answer("2 + 2 = 4") == "4"
    assert final_answer("I cannot say.") is None


def test_teacher_forced_equals_greedy_for_unchanged_model():
    model, _ = tiny_model("llama", n_layers=2)
    ids = tiny_tokenizer()("2+2=", return_tensors="pt")["input_ids"]
    reference = greedy_reference(model, ids, 6)
    assert teacher_forced_top1(model, ids, reference).all()
    # a layer whose weights are destroyed no longer reproduces the answer
    W = {(0, n): torch.zeros_like(model.model.layers[0].mlp.down_proj.weight) for n in ("down",)}
    W[(1, "down")] = torch.randn_like(model.model.layers[1].mlp.down_proj.weight) * 50
    with swapped_weights(model, W):
        assert not teacher_forced_top1(model, ids, reference).all()

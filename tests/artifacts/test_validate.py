"""Validation pieces: the single-layer replacement rule, and module checks against exact math."""

import torch

from calderalab.artifacts.validate import ValidationConfig, greedy_reference, layer_check, teacher_forced_top1
from calderalab.models import swapped_weights, tiny_model, tiny_tokenizer


def test_layer_check_rule():
    cfg = ValidationConfig(n_tokens=8, n_exact=3, min_agreement=0.75)
    t, f = True, False
    ok = layer_check(5, torch.tensor([t, t, t, f, t, t, t, t]), cfg)
    assert ok.ok and ok.exact_prefix == 3 and ok.agreement == 7 / 8
    late = layer_check(5, torch.tensor([t, t, f, t, t, t, t, t]), cfg)
    assert not late.ok and late.exact_prefix == 2  # answer starts differently
    drift = layer_check(5, torch.tensor([t, t, t, t, f, f, f, t]), cfg)
    assert not drift.ok and drift.agreement == 5 / 8


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

"""Weight swap: exact restore (also on exception), validation before any change."""

from __future__ import annotations

import pytest
import torch

from calderalab.models import set_weights, swapped_weights, target_linear, tiny_model


@pytest.fixture
def model():
    return tiny_model("qwen2", n_layers=3, with_tokenizer=False)[0]


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(model, snapshot):
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, snapshot[name]), name


def _random_like(module, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(module.weight.shape, generator=gen)


def test_swap_applies_inside_and_restores_exactly(model):
    before = _snapshot(model)
    ids = torch.arange(1, 9)[None]
    logits_before = model(ids).logits
    q1, down2 = target_linear(model, 1, "q"), target_linear(model, 2, "down")
    W_q, W_down = _random_like(q1, 1), _random_like(down2, 2)
    param_id = id(q1.weight)
    with swapped_weights(model, {(1, "q"): W_q, (2, "down"): W_down}) as swapped:
        assert swapped is model
        assert torch.equal(q1.weight, W_q) and torch.equal(down2.weight, W_down)
        assert not torch.allclose(model(ids).logits, logits_before)
    _assert_same(model, before)
    assert id(q1.weight) == param_id
    assert torch.equal(model(ids).logits, logits_before)


def test_swap_restores_on_exception(model):
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with swapped_weights(model, {(0, "k"): _random_like(target_linear(model, 0, "k"), 3)}):
            raise RuntimeError("boom")
    _assert_same(model, before)


def test_nested_swaps_of_same_module_restore_in_order(model):
    before = _snapshot(model)
    v = target_linear(model, 0, "v")
    A, B = _random_like(v, 4), _random_like(v, 5)
    with swapped_weights(model, {(0, "v"): A}):
        with swapped_weights(model, {(0, "v"): B}):
            assert torch.equal(v.weight, B)
        assert torch.equal(v.weight, A)
    _assert_same(model, before)


def test_bad_entry_leaves_model_untouched(model):
    before = _snapshot(model)
    good = _random_like(target_linear(model, 0, "q"), 6)
    bad = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"model.layers.1.mlp.up_proj has shape \(3, 3\), expected"):
        with swapped_weights(model, {(0, "q"): good, (1, "up"): bad}):
            pass
    _assert_same(model, before)
    with pytest.raises(ValueError, match="floating dtype"):
        set_weights(model, {(0, "q"): good.to(torch.int32)})
    with pytest.raises(ValueError, match="NaN or Inf"):
        set_weights(model, {(0, "q"): torch.full_like(good, float("nan"))})
    with pytest.raises(ValueError, match="out of range"):
        set_weights(model, {(3, "q"): good})
    with pytest.raises(ValueError, match="valid names"):
        set_weights(model, {(0, "query"): good})
    with pytest.raises(TypeError, match="torch.Tensor"):
        set_weights(model, {(0, "q"): good.numpy()})
    _assert_same(model, before)


def test_set_weights_is_permanent_and_casts_dtype():
    model = tiny_model("llama", n_layers=2, with_tokenizer=False)[0].to(torch.bfloat16)
    o = target_linear(model, 1, "o")
    W = _random_like(o, 7)  # float32 in, bf16 stored
    set_weights(model, {(1, "o"): W})
    assert o.weight.dtype == torch.bfloat16
    assert torch.equal(o.weight, W.to(torch.bfloat16))
    W.zero_()  # the model holds a copy, not the caller's tensor
    assert o.weight.abs().sum() > 0

"""calib.fisher: the output sensitivity predicts the KL a weight error causes (second-order, checked
against the KL measured after perturbing each module), is exactly zero where the output cannot reach
the logits, and is deterministic."""

from __future__ import annotations

import pytest
import torch

from calderalab.calib.fisher import FisherConfig, output_sensitivity
from calderalab.calib.hessian import HessianAccumulator
from calderalab.models import module_shapes, target_linear, tiny_model


def _tiny():
    model, _ = tiny_model("llama", n_layers=3, seed=0, hidden=32)
    ids = torch.randint(0, model.config.vocab_size, (16, 32), generator=torch.Generator().manual_seed(1))
    return model, ids


def _hessians(model, ids) -> dict:
    acc, handles = {}, []
    for key in module_shapes(model):
        lin = target_linear(model, *key)
        acc[key] = HessianAccumulator(lin.in_features)
        handles.append(lin.register_forward_hook(lambda m, i, o, k=key: acc[k].update(i[0].reshape(-1, i[0].shape[-1]))))
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    return {k: a.hessian() for k, a in acc.items()}


def _kl(model, ids, base) -> float:
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.float(), -1)
    return float((base.exp() * (base - logp)).sum(-1).mean())


def test_sensitivity_times_error_predicts_the_measured_kl():
    """½ mean G_ii · tr(ΔW H ΔWᵀ) against KL(p ‖ p_ΔW) after a small random ΔW on each module in turn:
    the measured KLs span 30x across modules; each prediction is within 2.5x of its own, and the
    order agrees (a sensitivity that ignored the module, e.g. a constant, fails both)."""
    model, ids = _tiny()
    sens = output_sensitivity(model, ids, FisherConfig(samples=16, batch_size=4))
    H = _hessians(model, ids)
    with torch.no_grad():
        base = torch.log_softmax(model(ids).logits.float(), -1)
    g = torch.Generator().manual_seed(2)
    measured, predicted = [], []
    for key in module_shapes(model):
        lin = target_linear(model, *key)
        W0 = lin.weight.data.clone()
        D = 0.02 * W0.std() * torch.randn(W0.shape, generator=g)
        lin.weight.data += D
        measured.append(_kl(model, ids, base))
        lin.weight.data.copy_(W0)
        predicted.append(sens[key] * float(((D @ H[key]) * D).sum()))
    m, p = torch.tensor(measured), torch.tensor(predicted)
    assert float(m.max() / m.min()) > 10
    ratio = p / m
    assert float(ratio.min()) > 0.4 and float(ratio.max()) < 2.5, ratio
    rank = lambda t: t.argsort().argsort().double()  # noqa: E731
    assert float(torch.corrcoef(torch.stack([rank(m), rank(p)]))[0, 1]) > 0.8


def test_modules_that_cannot_reach_the_logits_have_zero_sensitivity():
    """A zero o_proj cuts layer 1's q, k, v off the output: exactly 0, while every other module is > 0."""
    model, ids = _tiny()
    target_linear(model, 1, "o").weight.data.zero_()
    sens = output_sensitivity(model, ids, FisherConfig(samples=4, batch_size=2))
    for key, value in sens.items():
        assert (value == 0.0) == (key in {(1, "q"), (1, "k"), (1, "v")}), (key, value)


def test_deterministic_and_leaves_the_model_as_it_was():
    model, ids = _tiny()
    first = output_sensitivity(model, ids, FisherConfig(samples=4, batch_size=2, seed=3))
    assert first == output_sensitivity(model, ids, FisherConfig(samples=4, batch_size=2, seed=3))
    assert first != output_sensitivity(model, ids, FisherConfig(samples=4, batch_size=2, seed=4))
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert not model.get_input_embeddings()._forward_hooks and not target_linear(model, 0, "q")._forward_hooks


def test_bad_inputs_are_named():
    model, ids = _tiny()
    with pytest.raises(ValueError, match="shape \\(n, seq_len\\)"):
        output_sensitivity(model, ids[0])
    with pytest.raises(ValueError, match="samples"):
        FisherConfig(samples=0)

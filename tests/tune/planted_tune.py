"""A planted tuning problem on a tiny random Llama (test helper).

The "original" model is a tiny model whose target weights are set to Ŵ = Q + L·R of a CALDERA
decomposition of its own weights, so a store with that Q and the TRUE L, R reproduces it exactly:
the optimum of tuning (KL 0) is reachable with Q frozen. The store handed to tuning holds the same Q
with L, R perturbed by seeded noise and re-quantised.
"""

from __future__ import annotations

import dataclasses

import torch

from calderalab import core, models
from calderalab.artifacts import ArtifactStore
from calderalab.calib import CalibData
from calderalab.core.lowrank import LowRankFactors
from calderalab.tune import quantize_factor

SPEC = core.CompressionSpec(method="caldera", bits=2, rank=4, lr_bits=4, outer_iters=1, inner_iters=1)
MODEL = {"ref": "tiny-llama-planted", "revision": "seed0"}
CALIB = {"dataset": "none", "hessian": "identity"}


def perturbed(decomposition: core.Decomposition, scale: float, gen: torch.Generator) -> core.Decomposition:
    """The same Q with L, R plus relative Gaussian noise of `scale`, re-quantised."""
    f = decomposition.factors
    Lt, R = f.Lt.dequantize(), f.R.dequantize()  # (k, d_out), (k, d_in)
    noisy = [X + scale * X.std() * torch.randn(X.shape, generator=gen) for X in (Lt, R)]
    bits = decomposition.spec.lr_bits
    return dataclasses.replace(decomposition, factors=LowRankFactors(*(quantize_factor(X, bits) for X in noisy)))


def planted_setup(root, n_layers: int = 2, noise: float = 0.3, seed: int = 0):
    """(model, tokenizer, store, calib, heldout_ids, true decompositions): see the module docstring."""
    model, tokenizer = models.tiny_model("llama", n_layers=n_layers, seed=seed, hidden=32)
    true = {}
    for layer in range(n_layers):
        for name in core.MODULE_NAMES:
            W = models.target_linear(model, layer, name).weight.detach()
            true[(layer, name)] = core.decompose(W, torch.eye(W.shape[1]), SPEC)
    models.set_weights(model, {key: d.reconstruct() for key, d in true.items()})
    store = ArtifactStore(str(root / "planted"))
    store.init(MODEL, CALIB)
    gen = torch.Generator().manual_seed(seed + 1)
    for (layer, name), d in true.items():
        W = models.target_linear(model, layer, name).weight.detach()
        store.put(layer, name, SPEC, perturbed(d, noise, gen), W, None)
    store.consolidate()
    ids = torch.randint(4, 260, (8, 32), generator=torch.Generator().manual_seed(seed + 2))  # (n_windows, T)
    calib = CalibData(ids, "planted: uniform random byte tokens", batch_size=4)
    heldout = torch.randint(4, 260, (600,), generator=torch.Generator().manual_seed(seed + 3))
    return model, tokenizer, store, calib, heldout, true


def planted_rank_setup(root, extra_rank: int = 2, strength: float = 0.5, n_layers: int = 2, seed: int = 0,
                       n_windows: int = 8, specs: tuple = (SPEC,)):
    """A problem only a 16-bit part of the rank can solve: every original weight is the TRUE Q + L·R plus a
    random rank-`extra_rank` matrix E (‖E‖_F = strength·‖W‖_F); the store holds the true Q, L, R unperturbed.
    L·R has the spec's rank already, so tuning L, R alone cannot add E's rank; k16 ≥ extra_rank can.
    With several `specs` the store holds each module under all of them (as `--plan kl` stores do) and the
    original is built from the first (an ldlq spec: the true Q alone, no L·R).
    → (model, store, calib, heldout_ids)."""
    model, _ = models.tiny_model("llama", n_layers=n_layers, seed=seed, hidden=32, with_tokenizer=False)
    gen = torch.Generator().manual_seed(seed + 5)
    store = ArtifactStore(str(root / "planted-rank"))
    store.init(MODEL, CALIB)
    true, weights = {}, {}
    for layer in range(n_layers):
        for name in core.MODULE_NAMES:
            W = models.target_linear(model, layer, name).weight.detach()
            true[(layer, name)] = [core.decompose(W, torch.eye(W.shape[1]), spec) for spec in specs]
            W_hat = true[(layer, name)][0].reconstruct()
            E = torch.randn(W.shape[0], extra_rank, generator=gen) @ torch.randn(extra_rank, W.shape[1], generator=gen)
            weights[(layer, name)] = W_hat + strength * W_hat.norm() / E.norm() * E
    models.set_weights(model, weights)  # the "original" model; fingerprints are taken from it
    for (layer, name), ds in true.items():
        for spec, d in zip(specs, ds):
            store.put(layer, name, spec, d, models.target_linear(model, layer, name).weight.detach(), None)
    store.consolidate()
    ids = torch.randint(4, 260, (n_windows, 32), generator=torch.Generator().manual_seed(seed + 2))  # (n_windows, T)
    heldout = torch.randint(4, 260, (600,), generator=torch.Generator().manual_seed(seed + 3))
    return model, store, CalibData(ids, "planted: uniform random byte tokens", batch_size=4), heldout

"""Compress a tiny model into a store, the way compress.py does, with crash injection (test helper)."""

from __future__ import annotations

import torch

from calderalab import core

MODEL = {"ref": "tiny-llama", "revision": "seed0"}
CALIB = {"dataset": "none", "hessian": "identity"}


def spec(**kw):
    return core.CompressionSpec.from_dict({"method": "rtn", "bits": 4, "outer_iters": 2, "inner_iters": 2,
                                           "hadamard": False, **kw})


def compress_into(store, model, spec_, layers=None, stop_after=None):
    """Store every module of `layers`; raise RuntimeError after `stop_after` modules (a crash)."""
    from calderalab import models

    store.init(MODEL, CALIB)
    done = 0
    n_layers = models.num_layers(model)
    for layer in range(n_layers) if layers is None else layers:
        for name in core.MODULE_NAMES:
            if store.has(layer, name, spec_):
                continue
            if stop_after is not None and done == stop_after:
                raise RuntimeError("simulated crash")
            W = models.target_linear(model, layer, name).weight.detach().to(torch.float32)
            H = torch.eye(W.shape[1])
            store.put(layer, name, spec_, core.decompose(W, H, spec_), W, H)
            done += 1
    return done


def snapshot(model):
    from calderalab import models

    return {
        (l, n): models.target_linear(model, l, n).weight.detach().clone()
        for l in range(models.num_layers(model))
        for n in core.MODULE_NAMES
    }

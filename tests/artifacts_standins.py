"""Test-only stand-ins for the core and models APIs while those branches are unmerged.

`install(monkeypatch)` fills in ONLY the names calderalab.core / calderalab.models do not
have yet, so once the real code lands the tests run against it unchanged. The stand-in
decomposition is plain per-row RTN with packed uint8 codes: enough to exercise storage.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

import torch

MODULE_NAMES = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass(frozen=True)
class CompressionSpec:
    method: Literal["rtn", "ldlq", "caldera"] = "rtn"
    bits: int = 3
    rank: int = 0
    lr_bits: int = 4
    group_size: int | None = None
    outer_iters: int = 2
    inner_iters: int = 2
    damp: float = 0.01
    hadamard: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.method not in ("rtn", "ldlq", "caldera"):
            raise ValueError(f"method {self.method!r}")
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits={self.bits} outside 2-8")
        if self.rank < 0 or (self.method == "caldera") != (self.rank > 0):
            raise ValueError(f"rank={self.rank} does not fit method {self.method!r}")

    def key(self):
        g = "row" if self.group_size is None else self.group_size
        return f"{self.method}-b{self.bits}-r{self.rank}-lr{self.lr_bits}-g{g}-s{self.seed}"

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        if missing := {"method", "bits"} - set(data):  # like core: no silent defaults for these
            raise ValueError(f"CompressionSpec needs field(s) {sorted(missing)}")
        return cls(**data)


@dataclass(frozen=True)
class Decomposition:
    codes: torch.Tensor  # (d_out, d_in) uint8
    scale: torch.Tensor  # (d_out, 1) float16
    zero: torch.Tensor  # (d_out, 1) float16
    bits: int

    def reconstruct(self):
        return (self.codes.to(torch.float32) - self.zero.float()) * self.scale.float()

    @property
    def bpw(self):
        d_out, d_in = self.codes.shape
        return (self.bits * d_out * d_in + 32 * d_out + 32) / (d_out * d_in)

    @property
    def bpw_paper(self):
        return float(self.bits)

    @property
    def errors(self):
        return ()

    def relative_error(self, W, H):
        D = W - self.reconstruct()
        return float(torch.sqrt(torch.trace(D @ H @ D.T) / torch.trace(W @ H @ W.T)))

    def to_tensors(self):
        return {"codes": self.codes, "scale": self.scale, "zero": self.zero}

    def metadata(self):
        return {"bits": str(self.bits), "format": "standin-rtn"}

    @classmethod
    def from_tensors(cls, tensors, metadata):
        assert set(metadata) == {"bits", "format"}, metadata  # our own keys must be stripped
        return cls(tensors["codes"], tensors["scale"], tensors["zero"], int(metadata["bits"]))


def decompose(W, H, spec):
    W = W.to(torch.float32)
    lo, hi = W.min(dim=1, keepdim=True).values, W.max(dim=1, keepdim=True).values  # (d_out, 1)
    scale = ((hi - lo) / (2**spec.bits - 1)).clamp_min(1e-8).half()
    zero = torch.round(-lo / scale.float()).half()
    codes = torch.clamp(torch.round(W / scale.float() + zero.float()), 0, 2**spec.bits - 1).to(torch.uint8)
    return Decomposition(codes, scale, zero, spec.bits)


def weight_correlation(W, W_hat):
    a, b = W.flatten().double(), W_hat.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def sqnr_db(W, W_hat):
    return float(10 * torch.log10(W.pow(2).sum() / (W - W_hat).pow(2).sum()))


# ------------------------------------------------------------ models stand-in


class ToyLayer(torch.nn.Module):
    def __init__(self, d, d_ff):
        super().__init__()
        shapes = {"q": (d, d), "k": (d // 2, d), "v": (d // 2, d), "o": (d, d),
                  "gate": (d_ff, d), "up": (d_ff, d), "down": (d, d_ff)}
        for name, (o, i) in shapes.items():
            setattr(self, name, torch.nn.Linear(i, o, bias=False))


class ToyModel(torch.nn.Module):
    def __init__(self, n_layers=4, d=16, d_ff=24, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.layers = torch.nn.ModuleList(ToyLayer(d, d_ff) for _ in range(n_layers))


def target_linear(model, layer, name):
    return getattr(model.layers[layer], name)


def num_layers(model):
    return len(model.layers)


def set_weights(model, mapping):
    with torch.no_grad():
        for (layer, name), W in mapping.items():
            lin = target_linear(model, layer, name)
            lin.weight.copy_(W.to(lin.weight.dtype))


def install(monkeypatch):
    """Fill in missing core / models names with the stand-ins above."""
    import calderalab.core as core
    import calderalab.models as models

    for name in ("MODULE_NAMES", "CompressionSpec", "Decomposition", "decompose", "weight_correlation", "sqnr_db"):
        if not hasattr(core, name):
            monkeypatch.setattr(core, name, globals()[name], raising=False)
    for name in ("target_linear", "num_layers", "set_weights"):
        if not hasattr(models, name):
            monkeypatch.setattr(models, name, globals()[name], raising=False)


def make_model(n_layers=4, seed=0):
    """A tiny model: the real tiny_model('llama') once models lands, else the toy."""
    import calderalab.models as models

    if getattr(models, "target_linear", None) is not target_linear:
        from calderalab.models.tiny import tiny_model

        return tiny_model("llama", n_layers=n_layers, seed=seed)[0]
    return ToyModel(n_layers=n_layers, seed=seed)


def spec_json(spec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True)

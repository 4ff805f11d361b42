"""codec: our safetensors writer is byte-deterministic and readable by the safetensors library."""

import torch
from safetensors import safe_open
from safetensors.torch import save

from calderalab.artifacts import codec


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "codes": torch.randint(0, 255, (5, 7), generator=g, dtype=torch.uint8),
        "scale": torch.randn(5, 1, generator=g).to(torch.bfloat16),
        "L": torch.randn(5, 2, generator=g, dtype=torch.float64),
        "seed": torch.tensor(12345, dtype=torch.int64),
        "flags": torch.tensor([True, False, True]),
    }


def test_round_trip_through_safetensors_library(tmp_path):
    meta = {"z": "1", "a": "two", "bits": "3"}
    data = codec.encode(_tensors(), meta)
    assert codec.read_metadata(data) == meta
    back = codec.decode(data)
    for key, t in _tensors().items():
        assert back[key].dtype == t.dtype and torch.equal(back[key], t), key
    (tmp_path / "x.safetensors").write_bytes(data)
    with safe_open(tmp_path / "x.safetensors", framework="pt") as f:
        assert f.metadata() == meta and set(f.keys()) == set(_tensors())
    n = int.from_bytes(data[:8], "little")
    assert n % 8 == 0


def test_bytes_independent_of_dict_order():
    t, meta = _tensors(), {"z": "1", "a": "two", "bits": "3"}
    one = codec.encode(t, meta)
    two = codec.encode(dict(reversed(list(t.items()))), dict(reversed(list(meta.items()))))
    assert one == two
    # same tensor payload as the reference writer (only header layout may differ)
    ref = codec.decode(save(t, meta))
    assert all(torch.equal(ref[k], codec.decode(one)[k]) for k in t)

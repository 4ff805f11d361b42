import pytest

from calderalab.core import MODULE_NAMES, CompressionSpec


def test_module_names_canonical():
    assert MODULE_NAMES == ("q", "k", "v", "o", "gate", "up", "down")


def test_hadamard_default_resolves_per_method():
    assert CompressionSpec("rtn", 3).hadamard is False
    assert CompressionSpec("ldlq", 3).hadamard is True
    assert CompressionSpec("caldera", 3, rank=8).hadamard is True
    assert CompressionSpec("rtn", 3, hadamard=True).hadamard is True


def test_dict_round_trip_and_key_stable():
    spec = CompressionSpec("caldera", 3, rank=64, group_size=64, seed=7)
    again = CompressionSpec.from_dict(spec.to_dict())
    assert again == spec and again.key() == spec.key()
    assert spec.key() == "caldera-b3-g64-h1-d0.01-r64-lr4-o4-i3-s7"
    assert CompressionSpec("rtn", 4).key() == "rtn-b4-grow-h0"


def test_keys_differ_when_results_differ():
    specs = [CompressionSpec("caldera", 3, rank=64), CompressionSpec("caldera", 3, rank=32),
             CompressionSpec("caldera", 2, rank=64), CompressionSpec("caldera", 3, rank=64, seed=1),
             CompressionSpec("ldlq", 3), CompressionSpec("ldlq", 3, hadamard=False), CompressionSpec("rtn", 3),
             CompressionSpec("ldlq", 2), CompressionSpec("ldlq", 2, codebook="e8p")]
    assert len({s.key() for s in specs}) == len(specs)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(method="gptq", bits=3), "method='gptq'"),
        (dict(method="rtn", bits=1), "bits=1"),
        (dict(method="rtn", bits=9), "bits=9"),
        (dict(method="rtn", bits=True), "bits=True"),
        (dict(method="caldera", bits=3, rank=0), "rank >= 1"),
        (dict(method="ldlq", bits=3, rank=4), "rank=4"),
        (dict(method="caldera", bits=3, rank=4, lr_bits=12), "lr_bits=12"),
        (dict(method="rtn", bits=3, group_size=0), "group_size=0"),
        (dict(method="caldera", bits=3, rank=4, outer_iters=0), "outer_iters=0"),
        (dict(method="ldlq", bits=3, damp=-1.0), "damp=-1.0"),
        (dict(method="ldlq", bits=3, seed=-2), "seed=-2"),
        (dict(method="ldlq", bits=2, codebook="e8"), "codebook='e8'"),
        (dict(method="ldlq", bits=5, codebook="e8p"), "2, 3 and 4-bit codebooks"),
        (dict(method="ldlq", bits=2, codebook="e8p", group_size=12), "group_size=12 must be a multiple of 8"),
    ],
)
def test_bad_values_are_named(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        CompressionSpec(**kwargs)


def test_from_dict_rejects_unknown_and_missing():
    with pytest.raises(ValueError, match="rnak"):
        CompressionSpec.from_dict({"method": "rtn", "bits": 3, "rnak": 1})
    with pytest.raises(ValueError, match="bits"):
        CompressionSpec.from_dict({"method": "rtn"})


def test_codebook_key_and_dict():
    """Scalar specs keep their keys and dicts from before the option; e8p is named in both and round-trips."""
    scalar, e8 = CompressionSpec("ldlq", 2), CompressionSpec("ldlq", 2, codebook="e8p")
    assert scalar.key() == "ldlq-b2-grow-h1-d0.01-s0" and "codebook" not in scalar.to_dict()
    assert e8.key() == scalar.key() + "-e8p" and e8.to_dict()["codebook"] == "e8p"
    assert CompressionSpec.from_dict(e8.to_dict()) == e8 and CompressionSpec.from_dict(scalar.to_dict()) == scalar


def test_svd_key_and_dict():
    """svd="exact" keeps every earlier key and dict; "randomized" is named in caldera keys only (ldlq ignores it)."""
    exact, sketch = CompressionSpec("caldera", 3, rank=8), CompressionSpec("caldera", 3, rank=8, svd="randomized")
    assert sketch.key() == exact.key() + "-rsvd" and "svd" not in exact.to_dict() and sketch.to_dict()["svd"] == "randomized"
    assert CompressionSpec.from_dict(sketch.to_dict()) == sketch and CompressionSpec.from_dict(exact.to_dict()) == exact
    assert CompressionSpec("ldlq", 3, svd="randomized").key() == CompressionSpec("ldlq", 3).key()
    with pytest.raises(ValueError, match="svd='lanczos' is not one of"):
        CompressionSpec("caldera", 3, rank=8, svd="lanczos")

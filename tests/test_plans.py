"""Plans: layer-set parsing, presets, rule resolution, plan files, validation, hashing, bpw."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from calderalab import core
from calderalab.errors import PlanError
from calderalab import plans as P


# Every field spelled out, so a change of core's defaults cannot silently change these plans.
FULL = dict(method="rtn", bits=3, rank=0, lr_bits=4, group_size=None, outer_iters=2, inner_iters=2,
            damp=0.01, hadamard=False, seed=0)


def spec(**kw):
    """A full spec dict (every field given): rank > 0 implies caldera unless a method is named."""
    if kw.get("rank", 0) > 0:
        kw.setdefault("method", "caldera")
    return core.CompressionSpec.from_dict({**FULL, **kw})


# ------------------------------------------------------------ parse_layer_set


@pytest.mark.parametrize(
    "text, expected",
    [
        ("70-79", tuple(range(70, 80))),
        ("23,24,25,26,27", (23, 24, 25, 26, 27)),
        ("last:5", (75, 76, 77, 78, 79)),
        ("first:3", (0, 1, 2)),
        ("0-2,last:2", (0, 1, 2, 78, 79)),
        (" 5 , 3-4, 5 ", (3, 4, 5)),
        ("", ()),
        ("none", ()),
        ("0", (0,)),
        ("79", (79,)),
    ],
)
def test_parse_layer_set_forms(text, expected):
    assert P.parse_layer_set(text, 80) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("30", "layer 30 out of range in '30': model has 30 layers (0-29)"),
        ("25-31", "layer 31 out of range in '25-31': model has 30 layers (0-29)"),
        ("9-3", "reversed: write 3-9"),
        ("last:31", "'last:31' asks for 31 layers: model has 30 layers (0-29)"),
        ("first:0", "'first:0' asks for 0 layers"),
        ("1,two", "cannot parse layer token 'two'"),
        ("-3", "cannot parse layer token '-3'"),
        ("mid:3", "cannot parse layer token 'mid:3'"),
    ],
)
def test_parse_layer_set_errors_name_token_and_layer_count(text, fragment):
    with pytest.raises(PlanError) as err:
        P.parse_layer_set(text, 30)
    assert fragment in str(err.value)


def test_parse_rank_map():
    assert P.parse_rank_map("23:256,24:256,25:128,26:80,27:64", 30) == {23: 256, 24: 256, 25: 128, 26: 80, 27: 64}
    for bad, frag in [("23-256", "LAYER:RANK"), ("30:4", "layer 30 out of range"), ("3:0", "positive"),
                      ("3:4,3:8", "two ranks")]:
        with pytest.raises(PlanError, match=frag):
            P.parse_rank_map(bad, 30)


# ------------------------------------------------------------ presets and Plan


def test_uniform_selective_ultra():
    base = spec(bits=3, rank=16)
    uni = P.uniform_plan(6, base)
    assert all(s == base for _, s in uni.items()) and len(uni.items()) == 6 * 7
    sel = P.selective_plan(6, base, "last:2")
    assert sel.protected_layers() == (4, 5)
    assert sel.spec(4, "q") is None and sel.spec(3, "down") == base
    assert len(sel.compressed()) == 4 * 7
    ult = P.ultra_plan(6, spec(method="rtn", bits=3), "4:64,5:32")
    assert ult.spec(4, "gate").rank == 64 and ult.spec(4, "gate").method == "caldera"
    assert ult.spec(5, "q").rank == 32 and ult.spec(0, "q").method == "rtn"
    assert ult.protected_layers() == ()


def test_plan_must_be_total_and_names_known():
    base = spec()
    entries = tuple(((l, n), base) for l in range(2) for n in core.MODULE_NAMES)
    with pytest.raises(PlanError, match="not a total map"):
        P.Plan(2, entries[:-1])
    with pytest.raises(PlanError, match="unknown module name 'qkv': valid names are q, k, v, o, gate, up, down"):
        P.Plan(2, entries[:-1] + (((1, "qkv"), base),))
    with pytest.raises(PlanError, match="layer 2 out of range"):
        P.Plan(2, entries + (((2, "q"), base),))


def test_validate_rank_against_shapes():
    shapes = {(l, n): ((8, 16) if n == "k" else (16, 16)) for l in range(2) for n in core.MODULE_NAMES}
    P.ultra_plan(2, spec(rank=4), "1:8").validate(shapes)
    with pytest.raises(PlanError, match=r"module 1.k \(8x16\): rank 9 exceeds min\(d_out, d_in\) = 8"):
        P.ultra_plan(2, spec(rank=4), "1:9").validate(shapes)
    del shapes[(0, "o")]
    with pytest.raises(PlanError, match="no shape for module 0.o"):
        P.uniform_plan(2, spec()).validate(shapes)


def test_bits_outside_range_is_plan_error():
    with pytest.raises(PlanError, match="bits=9 is outside 2-8"):
        P.plan_from_dict({"n_layers": 2, "base": {"method": "rtn", "bits": 9}})
    with pytest.raises(PlanError, match="rule #0: bits=1 is outside 2-8"):
        P.plan_from_dict({"n_layers": 2, "base": {"method": "rtn", "bits": 3}, "rules": [{"layers": "0", "spec": {"bits": 1}}]})


BASE = {"method": "rtn", "bits": 3}


# ------------------------------------------------------------ resolver


def test_resolver_first_match_wins():
    base = spec(bits=3)
    rules = (
        P.PlanRule("a", layers=(1,), override=(("bits", 4),)),
        P.PlanRule("b", pattern=r"1\.(gate|up)", override=(("bits", 8),)),
        P.PlanRule("c", modules=("down",), protect=True),
    )
    assert P.resolve_spec(1, "gate", base, rules).bits == 4  # a before b
    assert P.resolve_spec(1, "down", base, rules).bits == 4  # a before c
    assert P.resolve_spec(0, "down", base, rules) is None
    assert P.resolve_spec(0, "q", base, rules) == base  # no match -> base
    assert P.resolve_spec(1, "gate", base, rules[1:]).bits == 8  # order matters
    # pattern must match the whole "layer.module" name, not a substring
    assert P.resolve_spec(11, "gate", base, (P.PlanRule("b", pattern=r"1\.gate", override=(("bits", 8),)),)) == base


def test_resolver_set_mode_rejects_disagreeing_overlap():
    base = spec(bits=3)
    rules = (P.PlanRule("a", layers=(1,), override=(("bits", 4),)), P.PlanRule("b", modules=("q",), protect=True))
    with pytest.raises(PlanError, match="module 1.q: rules a and b overlap and disagree"):
        P.resolve_spec(1, "q", base, rules, mode="set")
    agreeing = (P.PlanRule("a", layers=(1,), override=(("bits", 4),)), P.PlanRule("b", modules=("q",), override=(("bits", 4),)))
    assert P.resolve_spec(1, "q", base, agreeing, mode="set").bits == 4


def test_rule_errors():
    with pytest.raises(PlanError, match="unknown spec field"):
        P.PlanRule("x", override=(("bitz", 4),)).apply(spec())
    with pytest.raises(PlanError, match="bad regex"):
        P.PlanRule("x", pattern="(")
    with pytest.raises(PlanError, match="unknown module name 'mlp'"):
        P.plan_from_dict({"n_layers": 2, "base": BASE, "rules": [{"modules": ["mlp"], "spec": "none"}]})
    with pytest.raises(PlanError, match="unknown key"):
        P.plan_from_dict({"n_layers": 2, "base": BASE, "rules": [{"layer": "1"}]})
    with pytest.raises(PlanError, match="no n_layers"):
        P.plan_from_dict({"base": BASE})
    with pytest.raises(PlanError, match="no base spec"):
        P.plan_from_dict({"n_layers": 2})
    with pytest.raises(PlanError, match="for 4 layers but the model has 2"):
        P.plan_from_dict({"n_layers": 4, "base": BASE}, n_layers=2)


# ------------------------------------------------------------ plan files, JSON, hash

PLAN_YAML = """
n_layers: 6
base: {method: caldera, bits: 3, rank: 8, lr_bits: 4, group_size: null, outer_iters: 2,
       inner_iters: 2, damp: 0.01, hadamard: false, seed: 0}
rules:
  - name: protect-tail
    layers: last:2
    spec: none
  - match: '[0-3]\\.(gate|up)'
    spec: {rank: 16}
  - layers: 0-1
    modules: down
    spec: {bits: 4}
"""


def _plan_file_expected():
    base = spec(method="caldera", bits=3, rank=8)

    def want(l, n):
        if l >= 4:
            return None
        if n in ("gate", "up"):
            return spec(method="caldera", bits=3, rank=16)
        if n == "down" and l <= 1:
            return spec(method="caldera", bits=4, rank=8)
        return base

    return want


def test_yaml_and_json_plan_files_agree(tmp_path):
    import yaml

    (tmp_path / "p.yaml").write_text(PLAN_YAML)
    (tmp_path / "p.json").write_text(json.dumps(yaml.safe_load(PLAN_YAML)))
    y, j = P.load_plan(tmp_path / "p.yaml"), P.load_plan(tmp_path / "p.json")
    want = _plan_file_expected()
    for (l, n), s in y.items():
        assert s == want(l, n), (l, n)
    assert y.hash() == j.hash()


def test_plan_file_errors(tmp_path):
    with pytest.raises(PlanError, match="not found"):
        P.load_plan(tmp_path / "missing.yaml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PlanError, match="not valid json"):
        P.load_plan(tmp_path / "bad.json")


def test_to_json_round_trip_and_hash_sensitivity(tmp_path):
    plan = P.selective_plan(5, spec(rank=4), "last:1")
    again = P.Plan.from_json(plan.to_json())
    assert again == plan and again.hash() == plan.hash() and again.preset == "selective"
    (tmp_path / "dump.json").write_text(plan.to_json())
    assert P.load_plan(tmp_path / "dump.json").hash() == plan.hash()
    assert P.selective_plan(5, spec(rank=4), "last:2").hash() != plan.hash()
    assert P.selective_plan(5, spec(rank=4, seed=1), "last:1").hash() != plan.hash()


_HASH_SCRIPT = """
from calderalab import core, plans
s = core.CompressionSpec.from_dict({{**{base!r}, "method": "caldera", "rank": 4}})
print(plans.ultra_plan(30, s, "23:256,24:256,25:128").hash())
"""


def test_hash_stable_across_processes():
    outs = {
        subprocess.run([sys.executable, "-c", _HASH_SCRIPT.format(base=FULL)], check=True, capture_output=True,
                       text=True, env={"PYTHONHASHSEED": str(seed), **_env()}).stdout.strip()
        for seed in (1, 2)
    }
    here = P.ultra_plan(30, spec(rank=4), "23:256,24:256,25:128").hash()
    assert outs == {here} and len(here) == 64


def _env():
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}


# ------------------------------------------------------------ bpw


def test_plan_bpw_weights_by_params_and_protected_bits():
    shapes = {(l, n): (16, 32) for l in range(4) for n in core.MODULE_NAMES}
    s = spec(bits=3, rank=0)
    per = core.expected_bpw(s, 16, 32)
    assert per > 3  # scales are counted
    full = P.plan_bpw(P.uniform_plan(4, s), shapes)
    assert full.bpw_fp16 == pytest.approx(per) and full.bpw_compressed_only == pytest.approx(per)
    half = P.plan_bpw(P.selective_plan(4, s, "2-3"), shapes)
    assert half.bpw_fp16 == pytest.approx((per + 16) / 2)
    assert half.bpw_fp32 == pytest.approx((per + 32) / 2)
    assert half.bpw_compressed_only == pytest.approx(per)
    assert half.n_protected_params == 2 * 7 * 16 * 32


def test_plan_bpw_counts_low_rank_factors():
    shapes = {(0, n): (64, 128) for n in core.MODULE_NAMES}
    s0, s8 = spec(bits=3, rank=0, lr_bits=4), spec(method="caldera", bits=3, rank=8, lr_bits=4)
    extra = P.plan_bpw(P.uniform_plan(1, s8), shapes).bpw_fp16 - P.plan_bpw(P.uniform_plan(1, s0), shapes).bpw_fp16
    assert extra >= 8 * (64 + 128) * 4 / (64 * 128)


def test_plan_bpw_is_every_stored_bit_of_the_decompositions():
    import torch

    g = torch.Generator().manual_seed(0)
    W = torch.randn(48, 64, generator=g)
    X = torch.randn(256, 64, generator=g)
    H = X.T @ X / 256
    shapes = {(0, n): (48, 64) for n in core.MODULE_NAMES}
    for s in (spec(method="rtn", bits=3, rank=0), spec(method="caldera", bits=3, rank=4)):
        dec = core.decompose(W, H, s)
        assert P.plan_bpw(P.uniform_plan(1, s), shapes).bpw_fp16 == pytest.approx(dec.bpw, rel=1e-12), s


# ------------------------------------------------------------ spec from options


def test_spec_with_decides_the_method_from_the_rank_once():
    assert P.spec_with(None, bits=3).method == "ldlq"
    assert P.spec_with(None, bits=3, rank=16) == core.CompressionSpec("caldera", 3, rank=16)
    base = core.CompressionSpec("caldera", 3, rank=32, outer_iters=2)
    assert P.spec_with(base, rank=0) == core.CompressionSpec("ldlq", 3, outer_iters=2)  # other fields kept
    assert P.spec_with(base, bits=4, rank=None) == core.CompressionSpec("caldera", 4, rank=32, outer_iters=2)
    rtn = core.CompressionSpec("rtn", 3)
    assert P.spec_with(rtn, bits=2).method == "rtn"  # no rank given: the base keeps its method
    assert P.spec_with(None, bits=3, rank=0, method="rtn").method == "rtn"


def test_spec_with_names_bad_values():
    with pytest.raises(ValueError, match="needs bits"):
        P.spec_with(None, rank=8)
    with pytest.raises(ValueError, match="bits=9"):
        P.spec_with(core.CompressionSpec("ldlq", 3), bits=9)

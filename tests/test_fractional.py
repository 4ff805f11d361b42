"""Fractional bit widths: parsing, exact honest bits under the target within one module's step,
the documented rule's order, and a planted profile steering the extra bits."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import pytest

from calderalab import core, fractional
from calderalab.errors import PlanError
from calderalab.plans import plan_bpw
from calderalab.sensitivity.profile import LayerRow, RunMetrics, SensitivityProfile

LDLQ = core.CompressionSpec("ldlq", 2)
CALDERA = core.CompressionSpec("caldera", 2, rank=4, outer_iters=1, inner_iters=1)


def shapes(n_layers: int = 4, d: int = 256, kv: int = 64, ff: int = 384) -> dict:
    """A Llama-like layer: q, o (d, d); k, v (kv, d); gate, up (ff, d); down (d, ff)."""
    size = {"q": (d, d), "k": (kv, d), "v": (kv, d), "o": (d, d), "gate": (ff, d), "up": (ff, d), "down": (d, ff)}
    return {(l, n): size[n] for l in range(n_layers) for n in core.MODULE_NAMES}


def reference_bits(spec, d_out: int, d_in: int) -> int:
    """Rank-0, one group per row: b·m·n codes, fp16 scale + offset per row, fp32 W scale, two int64 seeds."""
    assert spec.rank == 0 and spec.group_size is None and spec.hadamard
    return spec.bits * d_out * d_in + 32 * d_out + 32 + 2 * 64


def split(b: Fraction, base=LDLQ):
    lo, hi = fractional.neighbours(b)
    return base.__class__(**{**base.to_dict(), "bits": lo}), base.__class__(**{**base.to_dict(), "bits": hi})


def test_parse_bit_widths_exact_and_refusals():
    assert fractional.parse_bit_widths("2, 2.5,3,3.5 ,4") == (2, Fraction(5, 2), 3, Fraction(7, 2), 4)
    assert [fractional.bits_label(b) for b in fractional.parse_bit_widths("2,2.5,8")] == ["2", "2.5", "8"]
    for text, message in (("1.2", "1.2 is outside 2..8"), ("2,9", "9 is outside 2..8"), ("2,x", "'x' is not a number"),
                          (" , ", "--bits is empty"), ("3,3.0", "3.0 is given twice")):
        with pytest.raises(ValueError, match=message):
            fractional.parse_bit_widths(text)


def test_module_bits_is_the_exact_count():
    for (d_out, d_in) in ((16, 64), (96, 64), (64, 96)):
        assert core.module_bits(LDLQ, d_out, d_in) == reference_bits(LDLQ, d_out, d_in)
        assert core.module_bits(CALDERA, d_out, d_in) == core.expected_bpw(CALDERA, d_out, d_in) * d_out * d_in


@pytest.mark.parametrize("base", [LDLQ, CALDERA], ids=["ldlq", "caldera"])
@pytest.mark.parametrize("target", ["2.4", "2.5", "3.5", "3.9", "7.5"])
def test_mixed_plan_is_honest_below_target_and_within_one_step(base, target):
    b, s = Fraction(target), shapes()
    lo, hi = split(b, base)
    plan = fractional.mixed_plan(lo, hi, b, s, fractional.rule_order(4))
    n_params = sum(m * n for m, n in s.values())
    stored = fractional.stored_bits(plan, s)
    assert stored <= b * n_params  # exact: integers against a fraction
    left = [k for k, spec in plan.items() if spec == lo]
    step = lambda k: core.module_bits(hi, *s[k]) - core.module_bits(lo, *s[k])  # noqa: E731
    assert not left or b * n_params - stored < min(step(k) for k in left)  # no module left at lo still fits
    assert {spec for _, spec in plan.items()} <= {lo, hi}
    assert plan_bpw(plan, s).bpw_fp16 == pytest.approx(stored / n_params, rel=1e-12)
    assert fractional.mixed_plan(lo, hi, b, s, fractional.rule_order(4)).hash() == plan.hash()  # deterministic


def test_mixed_plan_refuses_a_target_below_the_lower_neighbour():
    lo, hi = split(Fraction("2.01"))
    with pytest.raises(PlanError, match=r"--bits 2.01 is below 2-bit uniform's own honest bpw, 2\.\d{3} .*raise it, or use 2"):
        fractional.mixed_plan(lo, hi, Fraction("2.01"), shapes(), fractional.rule_order(4))
    with pytest.raises(ValueError, match="differ only in more bits"):
        fractional.mixed_plan(LDLQ, CALDERA.__class__(**{**CALDERA.to_dict(), "bits": 3}), Fraction(5, 2), shapes(),
                              fractional.rule_order(4))


def test_use_more_bits_matches_llama_cpp_for_32_layers():
    # llama.cpp: i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2
    assert [l for l in range(32) if fractional.use_more_bits(l, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27,
                                                                          28, 29, 30, 31]


def test_rule_raises_v_and_down_of_the_favoured_layers_first():
    s = shapes(n_layers=16)
    lo, hi = split(Fraction(5, 2))
    favoured = [l for l in range(16) if fractional.use_more_bits(l, 16)]
    order = fractional.rule_order(16)
    assert order[: 2 * len(favoured)] == tuple((l, n) for l in favoured for n in ("v", "down"))
    # a budget of exactly the floor plus v and down of layer 0: those two and nothing else
    n_params = sum(m * n for m, n in s.values())
    floor = sum(core.module_bits(lo, *x) for x in s.values())
    extra = sum(core.module_bits(hi, *s[(0, n)]) - core.module_bits(lo, *s[(0, n)]) for n in ("v", "down"))
    plan = fractional.mixed_plan(lo, hi, Fraction(floor + extra, n_params), s, order)
    assert [k for k, spec in plan.items() if spec == hi] == [(0, "v"), (0, "down")]


def planted_profile(kl: list[float], spec=LDLQ) -> SensitivityProfile:
    """Layer l compressed alone moved the answers by KL kl[l] (noise floor 0), measured at `spec`."""
    noise = RunMetrics(1.0, 0.0, 0.0, 1.0, 8, 40)
    rows = tuple(LayerRow.against_noise(l, RunMetrics(1.0 - k, -k, k, 1.0 - k, 8, 40), noise) for l, k in enumerate(kl))
    return SensitivityProfile(len(kl), rows, noise, {"spec": spec.to_dict()})


def planted_compress(s: dict, error_at: dict, calls: list):
    """A compression whose relative error depends only on the bit width: error_at[bits]."""

    def compress(plan):
        calls.append(plan.spec(0, "q").bits)
        return SimpleNamespace(modules=[SimpleNamespace(layer=l, module=n, relative_error=error_at[spec.bits],
                                                        n_params=s[(l, n)][0] * s[(l, n)][1])
                                        for (l, n), spec in plan.items()])

    return compress


@pytest.mark.parametrize("sensitive", [3, 1])
def test_planted_profile_steers_the_extra_bits_to_the_sensitive_layer(sensitive):
    s, b = shapes(), Fraction(5, 2)
    lo, hi = split(b)
    kl = [0.001] * 4
    kl[sensitive] = 0.5
    calls: list = []
    order = fractional.profile_order(planted_profile(kl), lo, hi, b, s, planted_compress(s, {2: 0.2, 3: 0.1}, calls))
    assert calls == [2, 3]  # the profiled spec is lo itself: two compressions, not three
    plan = fractional.mixed_plan(lo, hi, b, s, order)
    assert all(plan.spec(sensitive, n) == hi for n in core.MODULE_NAMES)  # the whole sensitive layer raised
    raised = {l: sum(plan.spec(l, n) == hi for n in core.MODULE_NAMES) for l in range(4)}
    assert raised[sensitive] == 7 and sum(raised.values()) < 4 * 7
    # the rule alone would have given layer 0 (favoured) and v/down everywhere first
    rule = fractional.mixed_plan(lo, hi, b, s, fractional.rule_order(4))
    assert rule.hash() != plan.hash() or sensitive == 0


def test_with_protected_keeps_the_mix_elsewhere():
    s, b = shapes(), Fraction(5, 2)
    plan = fractional.mixed_plan(*split(b), b, s, fractional.rule_order(4))
    kept = fractional.with_protected(plan, (2, 3))
    assert kept.protected_layers() == (2, 3) and kept.preset == "selective"
    assert all(kept.spec(l, n) == plan.spec(l, n) for l in (0, 1) for n in core.MODULE_NAMES)

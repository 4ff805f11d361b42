"""Paired non-inferiority of B against A on the same instances: Newcombe's (1998, method 10)
interval for a difference of paired proportions, the one-sided verdict against a margin, and the
number of pairs a margin needs (Nam 1997).

Pure functions on plain Python/numpy data, like eval.stats, whose Interval they return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from scipy.stats import norm

from calderalab.eval.stats import Interval, _paired_arrays, wilson_interval


@dataclass(frozen=True)
class NonInferiority:
    """One-sided paired non-inferiority of B against A on the same instances.

    estimate: rate(a) − rate(b), the observed drop from A to B;
    upper: its one-sided `level` upper confidence bound (Newcombe 1998 method 10);
    B is non-inferior when upper < margin: the data rule out a drop as large as the margin.
    """

    estimate: float
    upper: float
    margin: float
    level: float
    n: int
    discordant: int

    @property
    def noninferior(self) -> bool:
        return self.upper < self.margin


def paired_counts(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int, int, int]:
    """(both right, only a right, only b right, neither) over paired outcomes a[i], b[i]."""
    xa, xb = _paired_arrays(a, b)
    return int((xa & xb).sum()), int((xa & ~xb).sum()), int((~xa & xb).sum()), int((~xa & ~xb).sum())


def _phi_corrected(both: int, a_only: int, b_only: int, neither: int) -> float:
    """Newcombe's continuity-corrected phi: (ad − bc − n/2)/√(efgh) when ad − bc > n/2, 0 when
    0 ≤ ad − bc ≤ n/2, (ad − bc)/√(efgh) when negative; 0 when a margin e, f, g or h is empty."""
    n = both + a_only + b_only + neither
    margins = (both + a_only, b_only + neither, both + b_only, a_only + neither)  # e, f, g, h
    if 0 in margins:
        return 0.0
    cross = both * neither - a_only * b_only
    shrunk = cross - n / 2 if cross > n / 2 else (0.0 if cross >= 0 else cross)
    return shrunk / math.sqrt(math.prod(margins))


def newcombe_paired_interval(both: int, a_only: int, b_only: int, neither: int, level: float = 0.95) -> Interval:
    """Interval for rate(a) − rate(b) from a paired 2×2 table (Newcombe 1998, Stat Med 17:2635,
    method 10: hybrid score interval with the continuity-corrected phi).

    With p1 = (both + a_only)/n, p2 = (both + b_only)/n, Wilson intervals (l1, u1), (l2, u2) and
    θ = p1 − p2:
        low  = θ − √((p1 − l1)² − 2φ(p1 − l1)(u2 − p2) + (u2 − p2)²)
        high = θ + √((u1 − p1)² − 2φ(u1 − p1)(p2 − l2) + (p2 − l2)²)
    φ estimates the correlation of the paired outcomes (see `_phi_corrected`): the more the two
    agree, the narrower the interval. Swapping a and b negates the interval exactly.
    """
    counts = (both, a_only, b_only, neither)
    if min(counts) < 0 or sum(counts) == 0:
        raise ValueError(f"paired counts must be >= 0 with a positive total, got {counts}")
    n = sum(counts)
    p1, p2 = (both + a_only) / n, (both + b_only) / n
    w1, w2 = wilson_interval(both + a_only, n, level), wilson_interval(both + b_only, n, level)
    phi = _phi_corrected(*counts)
    # max(0, ·): |φ| ≤ 1 makes each radicand ≥ (x − y)² ≥ 0; only round-off can push it below
    down = math.sqrt(max(0.0, (p1 - w1.low) ** 2 - 2 * phi * (p1 - w1.low) * (w2.high - p2) + (w2.high - p2) ** 2))
    up = math.sqrt(max(0.0, (w1.high - p1) ** 2 - 2 * phi * (w1.high - p1) * (p2 - w2.low) + (p2 - w2.low) ** 2))
    return Interval(p1 - p2, max(-1.0, p1 - p2 - down), min(1.0, p1 - p2 + up), level)


def paired_diff_interval(a: Sequence[bool], b: Sequence[bool], level: float = 0.95) -> Interval:
    """Newcombe's paired interval of rate(a) − rate(b) on per-instance outcomes (see
    `newcombe_paired_interval`). Note the order: `paired_bootstrap_diff` gives rate(b) − rate(a)."""
    return newcombe_paired_interval(*paired_counts(a, b), level=level)


def noninferior(a: Sequence[bool], b: Sequence[bool], margin: float, level: float = 0.95) -> NonInferiority:
    """Is B non-inferior to A by `margin` (a rate, 0.05 = 5 points)? The one-sided `level` upper
    bound of rate(a) − rate(b) is the upper end of the two-sided (2·level − 1) Newcombe interval;
    B passes when that bound is below the margin (a one-sided test at alpha = 1 − level)."""
    if not 0.0 < margin < 1.0:
        raise ValueError(f"margin is a rate difference in (0, 1), got {margin}")
    if not 0.5 < level < 1.0:
        raise ValueError(f"one-sided confidence level must be in (0.5, 1), got {level}")
    both, a_only, b_only, neither = paired_counts(a, b)
    iv = newcombe_paired_interval(both, a_only, b_only, neither, level=2 * level - 1)
    return NonInferiority(iv.estimate, iv.high, margin, level, both + a_only + b_only + neither, a_only + b_only)


def noninferiority_sample_size(
    discordance: float, margin: float, *, difference: float = 0.0, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Pairs needed to show rate(a) − rate(b) < margin with a one-sided paired test (Nam 1997,
    Biometrics 53:1422–1430, the score test's design formula).

    discordance ψ = p10 + p01 (share of pairs on which the two disagree), difference δ1 = p10 − p01
    (the true drop, usually 0), margin δ0:
        n = ⌈ (z_{1−α} σ0 + z_{power} σ1)² / (δ0 − δ1)² ⌉,  σ1² = ψ − δ1²,  σ0² = 2q + δ0 − δ0²,
    where q is the maximum-likelihood p01 restricted to p10 − p01 = δ0 at the expected cell
    shares: the root of 2q² + Bq + C = 0 with B = δ0(2 − δ1) − ψ, C = −p01·δ0(1 − δ0).
    With ψ = 0 it reduces to z²(1 − δ0)/δ0 (e.g. 52 pairs for a 5-point margin).
    """
    if not 0.0 < margin < 1.0:
        raise ValueError(f"margin must be in (0, 1), got {margin}")
    if not 0.0 <= discordance <= 1.0 or abs(difference) > discordance:
        raise ValueError(f"need 0 <= discordance <= 1 and |difference| <= discordance, got {discordance}, {difference}")
    if difference >= margin:
        raise ValueError(f"difference {difference} >= margin {margin}: non-inferiority cannot be shown at any n")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be in (0, 1), got alpha={alpha}, power={power}")
    p01 = (discordance - difference) / 2
    lin, const = margin * (2 - difference) - discordance, -p01 * margin * (1 - margin)
    q = (-lin + math.sqrt(lin * lin - 8 * const)) / 4
    sigma0 = math.sqrt(2 * q + margin - margin**2)
    sigma1 = math.sqrt(discordance - difference**2)
    z_a, z_b = norm.ppf(1 - alpha), norm.ppf(power)
    return math.ceil((z_a * sigma0 + z_b * sigma1) ** 2 / (margin - difference) ** 2)

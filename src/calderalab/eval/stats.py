"""Statistics for small paired evaluations: Wilson intervals, exact McNemar, paired and
family-clustered bootstraps, mean ± std over seeds, Holm–Bonferroni, sample size, adequacy.

Pure functions on plain Python/numpy data (numpy and scipy only; no torch, no I/O).
The comparisons are *paired*: two configurations answer the same instances, so the
tests use per-instance outcomes, never two independent rates (DESIGN.md, Statistics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import norm


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval at `level` (e.g. 0.95)."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test on paired binary outcomes.

    b = pairs where A is correct and B is not; c = pairs where B is correct and A is not.
    """

    b: int
    c: int
    n_pairs: int
    p_value: float

    @property
    def discordant(self) -> int:
        return self.b + self.c


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation (ddof=1) over n repeated runs; std is nan when n < 2."""

    mean: float
    std: float
    n: int

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """'43.0 ± 5.2 (n=3)'; scale=100 turns rates into percentage points."""
        if self.n < 2:
            return f"{self.mean * scale:.{digits}f} (n={self.n}, no spread)"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f} (n={self.n})"


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    return float(norm.ppf(0.5 + level / 2))


def _as_bool_array(values: Sequence[bool], name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of booleans, got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only booleans/0/1, got values {sorted(set(arr.tolist()))[:5]}")
    return arr.astype(bool)


def _paired_arrays(a: Sequence[bool], b: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    xa, xb = _as_bool_array(a, "a"), _as_bool_array(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"paired outcomes need equal lengths, got {xa.size} and {xb.size}")
    if xa.size == 0:
        raise ValueError("paired outcomes are empty: no common instances to compare")
    return xa, xb


def wilson_interval(k: int, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval for a binomial rate k/n.

    With z the two-sided normal quantile and p = k/n:
        centre = (p + z²/2n) / (1 + z²/n),  half = z/(1 + z²/n) · sqrt(p(1−p)/n + z²/4n²).
    Unlike the Wald interval it stays inside [0, 1] and is not degenerate at k = 0 or k = n,
    which is the common case for N = 7.
    """
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    z = _check_level(level)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Clamp only float round-off; at k = 0 the low end is exactly 0 in exact arithmetic.
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level)


def mcnemar_from_counts(b: int, c: int, n_pairs: int | None = None) -> McNemarResult:
    """Exact (binomial) two-sided McNemar test from the discordant counts.

    Under H0 each discordant pair falls either way with probability 1/2, so
    p = min(1, 2 · P[Binom(b + c, 1/2) ≤ min(b, c)]); p = 1 when b + c = 0.
    Computed with exact integer binomial coefficients (no normal approximation).
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    d = b + c
    if n_pairs is None:
        n_pairs = d
    if n_pairs < d:
        raise ValueError(f"n_pairs={n_pairs} is smaller than the discordant count b+c={d}")
    if d == 0:
        return McNemarResult(b, c, n_pairs, 1.0)
    tail = sum(math.comb(d, i) for i in range(min(b, c) + 1))
    p = min(1.0, 2 * tail / 2**d)
    return McNemarResult(b, c, n_pairs, p)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemarResult:
    """Exact McNemar test on paired outcomes a[i], b[i] (same instance i under configs A and B)."""
    xa, xb = _paired_arrays(a, b)
    return mcnemar_from_counts(int((xa & ~xb).sum()), int((~xa & xb).sum()), xa.size)


def min_mcnemar_p(discordant: int) -> float:
    """Smallest two-sided exact McNemar p reachable with `discordant` pairs: 2 · 0.5^(b+c) (all one way)."""
    if discordant < 0:
        raise ValueError(f"discordant must be >= 0, got {discordant}")
    return 1.0 if discordant == 0 else min(1.0, 2 * 0.5**discordant)


def min_discordant_for(alpha: float = 0.05) -> int:
    """Fewest discordant pairs with which an exact McNemar test can reach p < alpha."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    d = 1
    while min_mcnemar_p(d) >= alpha:
        d += 1
    return d


def binomial_test_greater(k: int, n: int, p: float) -> float:
    """One-sided exact binomial test: P[Binom(n, p) ≥ k], the p-value of "rate above p".

    Summed in log space with exact log-binomial coefficients, so it stays accurate for n in the
    thousands; equals scipy.stats.binomtest(k, n, p, alternative="greater").pvalue (tested).
    """
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability, got {p}")
    if k == 0 or p == 1.0:
        return 1.0
    if p == 0.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def poisson_binomial_greater(k: int, probabilities: Sequence[float]) -> float:
    """P[X ≥ k] for X = Σ Bernoulli(p_i) with unequal p_i (the Poisson-binomial law).

    The exact null of "correct by chance" when instances have different numbers of options
    (p_i = 1/k_i). Computed by the O(n²) recursion over instances on the count distribution;
    with equal p_i it equals binomial_test_greater (tested), and it matches brute-force
    enumeration on small cases.
    """
    ps = [float(p) for p in probabilities]
    if not ps:
        raise ValueError("poisson_binomial_greater needs at least one probability")
    if any(not 0.0 <= p <= 1.0 for p in ps):
        raise ValueError(f"probabilities must lie in [0, 1], got {[p for p in ps if not 0 <= p <= 1][:3]}")
    if not 0 <= k <= len(ps):
        raise ValueError(f"need 0 <= k <= n={len(ps)}, got k={k}")
    dist = np.zeros(len(ps) + 1)  # dist[j] = P[j successes so far]
    dist[0] = 1.0
    for i, p in enumerate(ps, start=1):
        dist[1 : i + 1] = dist[1 : i + 1] * (1 - p) + dist[:i] * p
        dist[0] *= 1 - p
    return float(min(1.0, dist[k:].sum()))


def _percentile_interval(estimate: float, draws: np.ndarray, level: float) -> Interval:
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(lo), float(hi), level)


def paired_bootstrap_diff(
    a: Sequence[bool], b: Sequence[bool], *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Percentile bootstrap interval of rate(b) − rate(a), resampling instances (pairs) with replacement.

    The estimate is the observed difference mean(b) − mean(a). Seeded: the same inputs and
    seed give the same interval.
    """
    xa, xb = _paired_arrays(a, b)
    _check_level(level)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    d = xb.astype(np.float64) - xa.astype(np.float64)  # (n,) per-pair difference in {-1, 0, 1}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))  # (n_boot, n)
    return _percentile_interval(float(d.mean()), d[idx].mean(axis=1), level)


def cluster_bootstrap_diff(
    a: Sequence[bool],
    b: Sequence[bool],
    clusters: Sequence[str],
    *,
    n_boot: int = 2_000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Two-stage (family-clustered) bootstrap interval of rate(b) − rate(a).

    Instances of one task family are correlated (same template), so a plain bootstrap
    understates the spread. Each draw resamples families with replacement, then instances
    with replacement within each drawn family, and pools them: diff = Σ d_i / Σ n_f.
    """
    xa, xb = _paired_arrays(a, b)
    if len(clusters) != xa.size:
        raise ValueError(f"clusters has {len(clusters)} labels for {xa.size} pairs")
    _check_level(level)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    d = xb.astype(np.int64) - xa.astype(np.int64)  # (n,) per-pair difference in {-1, 0, 1}
    names = sorted(set(clusters))
    labels = np.asarray([names.index(c) for c in clusters])
    sizes = np.bincount(labels, minlength=len(names))  # (G,)
    # Per family, the shares of d = -1, 0, +1. Resampling n_g instances with replacement, m times,
    # is one multinomial draw of m·n_g counts over those three values: exact and vectorised.
    shares = np.stack([np.bincount(d[labels == g] + 1, minlength=3) / sizes[g] for g in range(len(names))])  # (G, 3)
    rng = np.random.default_rng(seed)
    picks = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=n_boot)  # (n_boot, G)
    total = np.zeros(n_boot)
    for g in range(len(names)):
        counts = rng.multinomial(picks[:, g] * sizes[g], shares[g])  # (n_boot, 3)
        total += counts[:, 2] - counts[:, 0]
    draws = total / (picks @ sizes)  # (n_boot,)
    return _percentile_interval(float(d.mean()), draws, level)


def mean_std(values: Sequence[float]) -> MeanStd:
    """Mean and sample standard deviation (ddof=1) over repeated runs (e.g. instance seeds)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"mean_std needs a non-empty 1-D sequence, got shape {arr.shape}")
    std = float(arr.std(ddof=1)) if arr.size > 1 else float("nan")
    return MeanStd(float(arr.mean()), std, int(arr.size))


def holm(p_values: Sequence[float]) -> tuple[float, ...]:
    """Holm–Bonferroni adjusted p-values, in the input order.

    Sorted ascending p_(1) ≤ … ≤ p_(m): adj_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)).
    Rejecting adj < alpha controls the family-wise error rate at alpha.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got shape {p.shape}")
    if p.size and ((p < 0) | (p > 1) | np.isnan(p)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])  # (m,)
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return tuple(float(x) for x in adjusted)


def mcnemar_sample_size(p10: float, p01: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Number of pairs needed for a two-sided McNemar test (Connor 1987, Biometrics 43:207–211).

    p10, p01: expected probabilities of the two kinds of discordant pair (A right/B wrong and
    the reverse). With ψ = p10 + p01 and δ = p10 − p01:
        n = ⌈ (z_{1−α/2} · √ψ + z_{power} · √(ψ − δ²))² / δ² ⌉.
    This is the normal-approximation design formula; the exact test needs slightly more.
    """
    if not (0 <= p10 <= 1 and 0 <= p01 <= 1 and p10 + p01 <= 1):
        raise ValueError(f"p10, p01 must be probabilities with p10 + p01 <= 1, got p10={p10}, p01={p01}")
    if p10 == p01:
        raise ValueError(f"p10 == p01 ({p10}): no difference to detect, the sample size is unbounded")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be in (0, 1), got alpha={alpha}, power={power}")
    psi, delta = p10 + p01, p10 - p01
    z_a, z_b = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return math.ceil((z_a * math.sqrt(psi) + z_b * math.sqrt(psi - delta**2)) ** 2 / delta**2)


def n_for_half_width(max_half_width: float = 0.15, level: float = 0.95) -> int:
    """Smallest n whose worst-case (k = n/2) Wilson half-width is at most `max_half_width`."""
    if not 0 < max_half_width < 0.5:
        raise ValueError(f"max_half_width must be in (0, 0.5), got {max_half_width}")
    n = 1
    while wilson_interval(n // 2, n, level).half_width > max_half_width:
        n += 1
    return n


def adequacy(
    n: int,
    *,
    k: int | None = None,
    discordant: int | None = None,
    max_half_width: float = 0.15,
    alpha: float = 0.05,
    level: float = 0.95,
) -> str | None:
    """A plain-language warning when N is too small for the claim, or None when it is adequate.

    Two checks: (1) the Wilson interval of a rate k/n (worst case k = n/2 when k is None) is
    wider than ±max_half_width; (2) with `discordant` pairs an exact McNemar test cannot reach
    p < alpha at all (smallest possible p = 2 · 0.5^discordant).
    """
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    parts: list[str] = []
    half = wilson_interval(n // 2 if k is None else k, n, level).half_width
    if half > max_half_width:
        parts.append(
            f"N={n} is too small for precise rates: the {level:.0%} interval is ±{half * 100:.0f} points "
            f"(> ±{max_half_width * 100:.0f}); N ≥ {n_for_half_width(max_half_width, level)} is needed."
        )
    if discordant is not None and min_mcnemar_p(discordant) >= alpha:
        parts.append(
            f"With {discordant} discordant pair(s) no difference can be significant: the smallest possible "
            f"McNemar p is {min_mcnemar_p(discordant):.3g} (need ≥ {min_discordant_for(alpha)} discordant pairs "
            f"for p < {alpha:g})."
        )
    return " ".join(parts) or None

"""How far a compressed model's next-token distributions are from the original's: pure math.

KL(P‖Q) per token over the full vocabulary, top-1 agreement, and a window-bootstrap interval of
a per-token mean (both models scored on the same windows, so resampling windows keeps the
pairing). Tensors in, tensors or floats out; no models, no disk.
"""

from __future__ import annotations

import torch


def token_kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(P‖Q) = Σ_v p_v (log p_v − log q_v) per row, in float64.

    logp, logq: (..., vocab) normalised log-probabilities (log_softmax outputs). Returns (...,).
    Terms with p_v = 0 contribute 0 (the limit of p log p), even where log q_v = −inf.
    """
    if logp.shape != logq.shape:
        raise ValueError(f"token_kl needs log-probs of one shape, got {tuple(logp.shape)} and {tuple(logq.shape)}")
    logp, logq = logp.double(), logq.double()
    p = logp.exp()
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))  # (..., vocab)
    # Σ p (log p − log q) ≥ 0 exactly; rounding can leave −1e-17 for near-equal rows.
    return terms.sum(-1).clamp_min(0.0)


def top1_agreement(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Whether the most likely token is the same under P and Q, per row: (..., vocab) → (...,) bool."""
    if logp.shape != logq.shape:
        raise ValueError(f"top1_agreement needs log-probs of one shape, got {tuple(logp.shape)} and {tuple(logq.shape)}")
    return logp.argmax(-1) == logq.argmax(-1)


def bootstrap_draws(n_windows: int, n_boot: int = 2000, seed: int = 0) -> torch.Tensor:
    """Window indices of n_boot resamples with replacement: (n_boot, n_windows). Same seed, same draws,
    so every interval of one comparison (ppl ratio, KL, top-1) resamples the same windows."""
    if n_windows < 1:
        raise ValueError("a window bootstrap needs at least one window")
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(n_windows, (n_boot, n_windows), generator=gen)


def quantile_interval(samples: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of bootstrap samples (n_boot,)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(samples.double(), q).tolist()
    return lo, hi


def window_mean_interval(window_sums: tuple[float, ...] | list[float], window_tokens: tuple[int, ...] | list[int],
                         level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi): the per-token mean Σ sums / Σ tokens over windows, and a bootstrap interval
    that resamples whole windows (with their token counts)."""
    if len(window_sums) != len(window_tokens) or not window_tokens:
        raise ValueError(f"need one sum per window, got {len(window_sums)} sums for {len(window_tokens)} windows")
    sums = torch.tensor(window_sums, dtype=torch.float64)
    tokens = torch.tensor(window_tokens, dtype=torch.float64)
    draws = bootstrap_draws(len(tokens), n_boot, seed)  # (n_boot, n_windows)
    lo, hi = quantile_interval(sums[draws].sum(1) / tokens[draws].sum(1), level)
    return float(sums.sum() / tokens.sum()), lo, hi

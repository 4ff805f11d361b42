"""Sliding-window perplexity of a causal LM on a text (the Hugging Face "perplexity of
fixed-length models" procedure), batched.

Windows of `context_len` tokens start every `stride` tokens; each window scores only the tokens
not already scored by the previous window (the last `trg_len` positions), so every token after
the first is predicted exactly once, with at least `context_len - stride` tokens of context
(except at the start). stride == context_len gives disjoint chunks (the GPTQ convention).

PPL = exp( Σ NLL(token) / n_scored ), in float64.

`score_token_ids` can also hand back the input of the model's output embedding at the scored
positions, which is what eval.fidelity keeps of the original model to compute KL later.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from calderalab.eval.divergence import bootstrap_draws, quantile_interval

log = logging.getLogger(__name__)

# The sliding window's defaults (here only): tokens per window, window step, windows per forward pass.
CONTEXT_LEN, STRIDE, BATCH_SIZE = 512, 256, 4


@dataclass(frozen=True)
class PerplexityResult:
    """window_nll[i] / window_tokens[i]: summed NLL and scored-token count of window i, kept so two
    results on the same text can be compared window by window (`ratio_interval`)."""

    perplexity: float
    nll_sum: float
    n_scored_tokens: int
    n_windows: int
    context_len: int
    stride: int
    window_nll: tuple[float, ...] = ()
    window_tokens: tuple[int, ...] = ()

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / self.n_scored_tokens


def sliding_windows(n_tokens: int, context_len: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, trg_len) per window: input ids[begin:end], score the last trg_len positions.

    Follows the HF guide: prev_end starts at 0, trg_len = end - prev_end, capped at end - begin - 1.
    With stride < context_len every token after the first is scored exactly once.
    """
    if context_len < 2:
        raise ValueError(f"context_len must be >= 2, got {context_len}")
    if not 1 <= stride <= context_len:
        raise ValueError(f"stride must be in [1, context_len={context_len}], got {stride}")
    windows = []
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + context_len, n_tokens)
        # A window's first token has no prediction inside it (its context is not in the input),
        # so at most end - begin - 1 positions are scored: with stride == context_len the
        # windows are disjoint chunks and each chunk's first token goes unscored (as GPTQ does).
        trg_len = min(end - prev_end, end - begin - 1)
        if trg_len > 0:
            windows.append((begin, end, trg_len))
        prev_end = end
        if end == n_tokens:
            break
    return windows


def _window_batch(ids: torch.Tensor, windows: list[tuple[int, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask of a batch of windows, right-padded to equal length: (B, T) each."""
    width = max(end - begin for begin, end, _ in windows)
    batch = torch.zeros(len(windows), width, dtype=torch.long)
    mask = torch.zeros(len(windows), width, dtype=torch.long)
    for row, (begin, end, _) in enumerate(windows):
        batch[row, : end - begin] = ids[begin:end]
        mask[row, : end - begin] = 1
    return batch, mask


def _scored_rows(begin: int, end: int, trg_len: int) -> slice:
    """Positions of a window whose logits predict its scored tokens (position t predicts t+1)."""
    return slice(end - begin - 1 - trg_len, end - begin - 1)


def _score_batch(model: Any, ids: torch.Tensor, windows: list[tuple[int, int, int]], device: torch.device,
                 head: torch.nn.Module | None) -> tuple[list[float], list[torch.Tensor]]:
    """Summed NLL of the target positions of each window of a batch, and, when `head` (the model's
    output embedding) is given, the head's input at those positions: (trg_len, d_model) per window."""
    batch, mask = _window_batch(ids, windows)
    captured: list[torch.Tensor] = []
    hook = None if head is None else head.register_forward_pre_hook(lambda _module, inputs: captured.append(inputs[0]))
    try:
        logits = model(input_ids=batch.to(device), attention_mask=mask.to(device), use_cache=False).logits  # (B, T, V)
    finally:
        if hook is not None:
            hook.remove()
    logp = F.log_softmax(logits[:, :-1].double(), dim=-1)  # (B, T-1, V): position t predicts t+1
    nll = -logp.gather(-1, batch[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    rows = [_scored_rows(*w) for w in windows]
    nll_sums = [nll[row, rows[row]].sum().item() for row in range(len(windows))]
    if head is None:
        return nll_sums, []
    if len(captured) != 1 or captured[0].shape[:2] != logits.shape[:2]:
        raise ValueError("the model's output embedding did not see one input per position in one call; "
                         "KL needs a model whose logits are get_output_embeddings()(last hidden state)")
    hidden = [captured[0][row, rows[row]].detach().cpu().contiguous() for row in range(len(windows))]  # (trg_len, d)
    _check_head_reproduces_logits(head, hidden, [logits[row, rows[row]][-1:] for row in range(len(windows))])
    return nll_sums, hidden


def _check_head_reproduces_logits(head: torch.nn.Module, hidden: list[torch.Tensor], logits: list[torch.Tensor]) -> None:
    """Refuse models whose logits are not head(hidden) (softcapping, logit scales applied after the
    head): a KL computed from cached head inputs would then not be the model's KL."""
    device = next(head.parameters()).device
    for h, expected in zip(hidden, logits):
        got = head(h[-1:].to(device))  # (1, V)
        tol = 64 * torch.finfo(expected.dtype).eps * (1 + expected.abs().max().item())
        if (got - expected).abs().max().item() > tol:
            raise ValueError("this model's logits are not its output embedding applied to the last hidden "
                             "state (a softcap or logit scale follows the head?); KL against cached head inputs "
                             "would be wrong, so it is not computed for this model")


def token_ids(tokenizer: Any, text: str, max_tokens: int | None = None) -> torch.Tensor:
    """The text tokenised once, no special tokens added, truncated to max_tokens: (n_tokens,)."""
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2, got {max_tokens}")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]  # (n_tokens,)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if ids.numel() < 2:
        raise ValueError("the text has fewer than 2 tokens: nothing to score")
    return ids


def score_token_ids(model: Any, ids: torch.Tensor, context_len: int = CONTEXT_LEN, stride: int = STRIDE,
                    batch_size: int = BATCH_SIZE,
                    capture_head_inputs: bool = False) -> tuple[PerplexityResult, list[torch.Tensor]]:
    """Sliding-window perplexity of a token stream ids (n_tokens,), and (when asked) per window the
    input of the model's output embedding at the scored positions, (trg_len, d_model) each."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    windows = sliding_windows(ids.numel(), context_len, stride)
    device = next(model.parameters()).device
    head = model.get_output_embeddings() if capture_head_inputs else None
    per_window: list[float] = []
    hidden: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(windows), batch_size):
                nll_sums, h = _score_batch(model, ids, windows[start : start + batch_size], device, head)
                per_window += nll_sums
                hidden += h
    finally:
        model.train(was_training)
    n_scored = sum(w[2] for w in windows)
    nll_sum = math.fsum(per_window)
    log.info("perplexity over %d tokens in %d windows", n_scored, len(windows))
    result = PerplexityResult(math.exp(nll_sum / n_scored), nll_sum, n_scored, len(windows), context_len, stride,
                              tuple(per_window), tuple(w[2] for w in windows))
    return result, hidden


def perplexity(
    model: Any,
    tokenizer: Any,
    text: str,
    context_len: int = CONTEXT_LEN,
    stride: int = STRIDE,
    max_tokens: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> PerplexityResult:
    """Sliding-window perplexity of `text` (tokenised once, no special tokens added).

    max_tokens truncates the token stream first (for bounded CPU time); the result states how many
    tokens were scored.
    """
    ids = token_ids(tokenizer, text, max_tokens)
    return score_token_ids(model, ids, context_len, stride, batch_size)[0]


def ratio_interval(base: PerplexityResult, other: PerplexityResult, level: float = 0.95, n_boot: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """(ratio, lo, hi): other.perplexity / base.perplexity and a paired bootstrap interval over windows.

    Both results must score the same windows of the same text. Resampling whole windows (with
    their token counts) keeps the pairing: the interval says how much of a difference between two
    rows could come from which stretch of text was scored, not from the models.
    """
    if base.window_tokens != other.window_tokens or not base.window_tokens:
        raise ValueError("ratio_interval needs two results over the same windows (same text, max_tokens, context, stride)")
    diff = torch.tensor(other.window_nll, dtype=torch.float64) - torch.tensor(base.window_nll, dtype=torch.float64)
    tokens = torch.tensor(base.window_tokens, dtype=torch.float64)
    draws = bootstrap_draws(len(tokens), n_boot, seed)  # (n_boot, n_windows)
    lo, hi = quantile_interval(torch.exp(diff[draws].sum(1) / tokens[draws].sum(1)), level)
    return other.perplexity / base.perplexity, lo, hi

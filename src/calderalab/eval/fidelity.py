"""A compressed model against its original on the same windows: perplexity ratio, KL(P_orig ‖ P_comp)
per scored token over the full vocabulary, and top-1 agreement, each with a window-bootstrap interval.

What is cached, and why. KL needs the original's full next-token distribution at every scored
token. Stored as float16 log-probs that is n_tokens × vocab × 2 bytes: 8192 × 49152 × 2 ≈ 800 MB
for SmolLM2, too much to keep per window set. The logits are the output embedding applied to the
last hidden state, so the cache keeps that hidden state instead, (n_scored, d_model) in the
model's dtype (8192 × 576 × 4 bytes ≈ 19 MB), plus the original's per-window NLLs (its perplexity)
and a fingerprint of the output embedding. At measure time both models' log-probs come from the
same head applied to the same-shaped inputs, so an unchanged model scores KL exactly 0. Models
whose logits are not head(hidden) (a softcap after the head) are refused, not approximated.

The cache file is keyed on the original model's fingerprint (every parameter's bytes) and the
window set (token ids, context, stride): one file per (model, window set), built on first use
by running the ORIGINAL model, so call `load_or_build_reference` before any weights are swapped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from calderalab.eval.divergence import token_kl, top1_agreement, window_mean_interval
from calderalab.eval.target import model_fingerprint
from calderalab.eval.perplexity import BATCH_SIZE, CONTEXT_LEN, STRIDE, PerplexityResult, ratio_interval, score_token_ids

log = logging.getLogger(__name__)

REFERENCE_FORMAT = 1  # bump when what a reference file holds, or how it is computed, changes
ROW_CHUNK = 128  # scored positions per head call: bounds the two (chunk, vocab) float64 log-prob blocks


@dataclass(frozen=True)
class Reference:
    """The original model on one window set: its perplexity result and, per window, the input of its
    output embedding at the scored positions, (trg_len, d_model)."""

    key: str
    baseline: PerplexityResult
    head_inputs: tuple[torch.Tensor, ...]
    head_fingerprint: str


@dataclass(frozen=True)
class FidelityResult:
    """A model measured against a Reference on its windows: per-window KL sums and top-1 agreements."""

    perplexity: PerplexityResult
    baseline: PerplexityResult
    window_kl: tuple[float, ...]
    window_top1: tuple[int, ...]

    @property
    def n_scored_tokens(self) -> int:
        return self.perplexity.n_scored_tokens

    def ratio_interval(self, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
        """(ppl / original ppl, lo, hi)."""
        return ratio_interval(self.baseline, self.perplexity, level, seed=seed)

    def kl_interval(self, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
        """(mean KL per scored token in nats, lo, hi)."""
        return window_mean_interval(self.window_kl, self.perplexity.window_tokens, level, seed=seed)

    def top1_interval(self, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
        """(share of scored tokens whose argmax matches the original's, lo, hi)."""
        return window_mean_interval(self.window_top1, self.perplexity.window_tokens, level, seed=seed)


def paired_kl_line(what: str, base: FidelityResult, other: FidelityResult, margin: float = 0.0) -> str:
    """other's KL minus base's, paired over the same windows: a resample of windows keeps both scores
    of each window (window_mean_interval on the per-window differences). One line, with its verdict.

    The interval holds both models fixed. Two separately compressed models of one method differ by
    more than it (another rotation seed or thread count moved SmolLM2's caldera 3-bit KL by up to
    0.0067 nats, README): to compare methods, pass that run-to-run spread as `margin` (nats/token),
    and a change counts only when its interval clears ±margin.
    """
    if base.perplexity.window_tokens != other.perplexity.window_tokens:
        raise ValueError("the two results were scored on different windows: a paired change needs the same ones")
    if not margin >= 0.0:
        raise ValueError(f"margin must be a non-negative number of nats/token, got {margin!r}")
    diff = [b - a for a, b in zip(base.window_kl, other.window_kl)]
    mean, lo, hi = window_mean_interval(diff, base.perplexity.window_tokens)
    lower = sum(d < 0 for d in diff)
    verdict = "lower" if hi < -margin else "higher" if lo > margin else "no change shown"
    beyond = f" beyond the run-to-run margin ±{margin:.4f}" if margin else ""
    return (f"{what}: KL {mean:+.4f} nats/token (95% {lo:+.4f} .. {hi:+.4f}, paired over windows; "
            f"lower in {lower} of {len(diff)} windows): {verdict}{beyond}")


def reference_key(model_sha: str, ids: torch.Tensor, context_len: int, stride: int) -> str:
    """sha256 naming one (original model, window set): the model's fingerprint, the token ids, context, stride."""
    digest = hashlib.sha256(json.dumps({"format": REFERENCE_FORMAT, "model": model_sha,
                                        "context": context_len, "stride": stride, "n_tokens": ids.numel()}).encode())
    digest.update(ids.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_reference(model: Any, ids: torch.Tensor, context_len: int, stride: int, batch_size: int = BATCH_SIZE,
                    key: str | None = None) -> Reference:
    """Score the ORIGINAL model on the windows of ids (n_tokens,) and keep what KL needs."""
    baseline, hidden = score_token_ids(model, ids, context_len, stride, batch_size, capture_head_inputs=True)
    key = key or reference_key(model_fingerprint(model), ids, context_len, stride)
    return Reference(key, baseline, tuple(hidden), model_fingerprint(model.get_output_embeddings()))


def _save(reference: Reference, path: Path) -> None:
    """Write atomically (temp file + rename), so a killed run never leaves half a reference."""
    payload = {"format": REFERENCE_FORMAT, "key": reference.key, "head_fingerprint": reference.head_fingerprint,
               "baseline": dataclasses.asdict(reference.baseline), "head_inputs": torch.cat(reference.head_inputs)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load(path: Path, key: str) -> Reference | None:
    """The reference in `path` when it holds `key` in this format, else None (and why, logged)."""
    payload = torch.load(path, weights_only=True)
    if payload.get("format") != REFERENCE_FORMAT or payload.get("key") != key:
        log.warning("%s holds format %s key %s…, not format %d key %s…: rebuilding", path, payload.get("format"),
                    str(payload.get("key"))[:12], REFERENCE_FORMAT, key[:12])
        return None
    fields = payload["baseline"]
    baseline = PerplexityResult(**{**fields, "window_nll": tuple(fields["window_nll"]),
                                   "window_tokens": tuple(fields["window_tokens"])})
    hidden = torch.split(payload["head_inputs"], list(baseline.window_tokens))
    return Reference(key, baseline, tuple(hidden), payload["head_fingerprint"])


def load_or_build_reference(model: Any, ids: torch.Tensor, context_len: int, stride: int, cache_dir: str | Path,
                            batch_size: int = BATCH_SIZE) -> Reference:
    """The original model's Reference on the windows of ids, from `cache_dir` or built (and cached) now.

    Must be called on the ORIGINAL weights: the key is their fingerprint, so a model whose weights
    are already swapped gets its own (wrong-for-KL) reference, never the original's.
    """
    key = reference_key(model_fingerprint(model), ids, context_len, stride)
    path = Path(cache_dir) / f"reference-{key[:24]}.pt"
    if path.exists():
        reference = _load(path, key)
        if reference is not None:
            log.info("reference of the original model read from %s", path)
            return reference
    reference = build_reference(model, ids, context_len, stride, batch_size, key)
    _save(reference, path)
    log.info("reference of the original model written to %s", path)
    return reference


def _window_divergence(head: torch.nn.Module, h_ref: torch.Tensor, h: torch.Tensor) -> tuple[float, int]:
    """(Σ KL(P_ref ‖ P), number of argmax agreements) over one window's scored positions.

    h_ref, h: (trg_len, d_model); both go through the same head in the same chunks, so equal
    inputs give bit-equal log-probs.
    """
    device = next(head.parameters()).device
    kl, agree = 0.0, 0
    for start in range(0, h.shape[0], ROW_CHUNK):
        logp = F.log_softmax(head(h_ref[start : start + ROW_CHUNK].to(device)).double(), dim=-1)  # (chunk, V)
        logq = F.log_softmax(head(h[start : start + ROW_CHUNK].to(device)).double(), dim=-1)  # (chunk, V)
        kl += token_kl(logp, logq).sum().item()
        agree += int(top1_agreement(logp, logq).sum().item())
    return kl, agree


def measure_against(model: Any, reference: Reference, ids: torch.Tensor, batch_size: int = BATCH_SIZE) -> FidelityResult:
    """Score `model` (e.g. with artifacts applied) on the reference's windows of ids; compare with the original.

    Use the batch size the reference was built with for bit-equal forward passes (another batch
    size changes only rounding, ~1e-12 nats).
    """
    head = model.get_output_embeddings()
    if model_fingerprint(head) != reference.head_fingerprint:
        raise ValueError("the model's output embedding differs from the original's that the reference was built "
                         "with; KL against it would mix two heads (build the reference from this model's original)")
    base = reference.baseline
    result, hidden = score_token_ids(model, ids, base.context_len, base.stride, batch_size, capture_head_inputs=True)
    if result.window_tokens != base.window_tokens:
        raise ValueError("the reference was built on other windows (text, max_tokens, context or stride differ)")
    with torch.no_grad():
        per_window = [_window_divergence(head, h_ref, h) for h_ref, h in zip(reference.head_inputs, hidden)]
    return FidelityResult(result, base, tuple(kl for kl, _ in per_window), tuple(a for _, a in per_window))


def summary_lines(result: FidelityResult, level: float = 0.95) -> list[str]:
    """Human-readable lines: perplexity and windows, ratio to the original, KL, top-1, each with its interval."""
    ppl, base = result.perplexity, result.baseline
    ratio, lo, hi = result.ratio_interval(level)
    kl, kl_lo, kl_hi = result.kl_interval(level)
    top1, t_lo, t_hi = result.top1_interval(level)
    pct = f"{100 * level:g}%"
    return [
        f"perplexity {ppl.perplexity:.4f}  ({ppl.n_scored_tokens} tokens, {ppl.n_windows} windows, "
        f"context {ppl.context_len}, stride {ppl.stride})",
        f"original   {base.perplexity:.4f}  ratio {ratio:.4f}  ({pct} interval {lo:.4f} .. {hi:.4f})",
        f"KL(original ‖ compressed) {kl:.5f} nats/token  ({pct} interval {kl_lo:.5f} .. {kl_hi:.5f})",
        f"top-1 agreement {100 * top1:.2f}%  ({pct} interval {100 * t_lo:.2f}% .. {100 * t_hi:.2f}%)",
        f"intervals: paired bootstrap over the {ppl.n_windows} windows, original and compressed scored on the same tokens",
    ]


def perplexity_lines(model: Any, ids: torch.Tensor, artifacts: str | None = None, protect: str | None = None,
                     cache_dir: str | Path | None = None, context_len: int = CONTEXT_LEN, stride: int = STRIDE,
                     batch_size: int = BATCH_SIZE, plan: Any = None) -> list[str]:
    """`calderalab ppl`: the perplexity of `model` (original weights) on the windows of ids; with
    `artifacts`, the stored modules are applied (except the `protect` layer set; with `plan`, each
    module's spec from it) and the lines add
    the ratio, KL and top-1 against the original, whose reference is cached in `cache_dir`
    (default $CALDERALAB_CACHE/ppl-reference)."""
    from calderalab.eval.target import apply_stored
    from calderalab.models import calderalab_cache_dir

    if not artifacts:
        result = score_token_ids(model, ids, context_len, stride, batch_size)[0]
        return [f"perplexity {result.perplexity:.4f}  ({result.n_scored_tokens} tokens, {result.n_windows} windows, "
                f"context {result.context_len}, stride {result.stride})"]
    cache = Path(cache_dir) if cache_dir else calderalab_cache_dir() / "ppl-reference"
    reference = load_or_build_reference(model, ids, context_len, stride, cache, batch_size)  # original weights
    apply_stored(model, artifacts, protect, plan)
    return summary_lines(measure_against(model, reference, ids, batch_size))

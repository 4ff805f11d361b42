"""Measuring per-layer sensitivity: reference answers, teacher-forced runs, answer-token metrics.

Protocol (DESIGN.md, Layer sensitivity): the uncompressed model first answers N probe prompts
greedily; its teacher-forced log-probs on prompt + own answer are computed ONCE and cached;
then for each decoder layer l only layer l's compressed weights are swapped in (restored
exactly on exit) and the same teacher-forced batches are run and compared over the answer
tokens. A noise floor compares the uncompressed model with itself under another batch layout.
Imports torch; model access goes through `calderalab.models` (never transformers directly).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from calderalab.sensitivity.profile import LayerRow, RunMetrics, SensitivityProfile

log = logging.getLogger(__name__)

WeightMap = Mapping[tuple[int, str], torch.Tensor]
Progress = Callable[[int, int], None]  # (layers done, layers total)


@dataclass(frozen=True)
class ProbeSample:
    """A probe prompt and the uncompressed model's own greedy answer, as token ids."""

    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.prompt_ids or not self.answer_ids:
            raise ValueError(
                f"a probe sample needs a non-empty prompt and answer (got {len(self.prompt_ids)} prompt "
                f"and {len(self.answer_ids)} answer tokens)"
            )


@dataclass(frozen=True)
class SensitivityConfig:
    """batch_size: teacher-forced batch size. noise_batch_size: the batch size of the noise-floor
    run (must differ, so that padding layout and matmul shapes differ). max_new_tokens: cap of
    the reference answers."""

    batch_size: int = 8
    noise_batch_size: int = 1
    max_new_tokens: int = 32
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.noise_batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError(
                f"batch_size, noise_batch_size and max_new_tokens must be >= 1, got "
                f"{self.batch_size}, {self.noise_batch_size}, {self.max_new_tokens}"
            )
        if self.noise_batch_size == self.batch_size:
            raise ValueError(
                f"noise_batch_size must differ from batch_size ({self.batch_size}); the same layout measures no noise"
            )


# ------------------------------------------------------------------ pure metrics


def margins(logprobs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-prob margin of the target token over the best other token.

    logprobs: (T, V) log-softmax; targets: (T,) token ids. Returns (T,):
    margin_t = logprobs[t, y_t] - max_{v != y_t} logprobs[t, v].
    """
    target_lp = logprobs.gather(1, targets[:, None]).squeeze(1)  # (T,)
    others = logprobs.scatter(1, targets[:, None], float("-inf"))  # (T, V)
    return target_lp - others.max(dim=1).values


@dataclass(frozen=True)
class SampleComparison:
    """One sample's answer tokens under a run, compared with the uncompressed run."""

    all_top1_kept: bool
    top1_kept: int
    n_tokens: int
    margin_delta_sum: float
    kl_sum: float


def compare_answer(base_logprobs: torch.Tensor, logprobs: torch.Tensor, targets: torch.Tensor) -> SampleComparison:
    """Compare one sample's answer positions.

    base_logprobs, logprobs: (T, V) log-softmax of the uncompressed and compressed runs at the
    T positions that predict the answer tokens; targets: (T,) the reference answer tokens.
    KL(p_base || p) = sum_v p_base (log p_base - log p), computed in float64.
    """
    if base_logprobs.shape != logprobs.shape or targets.shape != base_logprobs.shape[:1]:
        raise ValueError(f"shape mismatch: base {tuple(base_logprobs.shape)}, run {tuple(logprobs.shape)}, targets {tuple(targets.shape)}")
    kept = base_logprobs.argmax(dim=1) == logprobs.argmax(dim=1)  # (T,)
    delta = margins(logprobs, targets) - margins(base_logprobs, targets)  # (T,)
    b = base_logprobs.double()
    kl = (b.exp() * (b - logprobs.double())).sum(dim=1).clamp_min(0.0)  # (T,)
    return SampleComparison(
        all_top1_kept=bool(kept.all()),
        top1_kept=int(kept.sum()),
        n_tokens=int(targets.numel()),
        margin_delta_sum=float(delta.double().sum()),
        kl_sum=float(kl.sum()),
    )


def aggregate(comparisons: Sequence[SampleComparison]) -> RunMetrics:
    """Fidelity over samples; margin, KL and top-1 agreement pooled over all answer tokens."""
    if not comparisons:
        raise ValueError("no samples to aggregate")
    n_tok = sum(c.n_tokens for c in comparisons)
    return RunMetrics(
        fidelity=sum(c.all_top1_kept for c in comparisons) / len(comparisons),
        margin=sum(c.margin_delta_sum for c in comparisons) / n_tok,
        kl=sum(c.kl_sum for c in comparisons) / n_tok,
        top1_agreement=sum(c.top1_kept for c in comparisons) / n_tok,
        n_samples=len(comparisons),
        n_tokens=n_tok,
    )


# ------------------------------------------------------------------ model runs


@torch.no_grad()
def teacher_forced_logprobs(
    model: torch.nn.Module, samples: Sequence[ProbeSample], batch_size: int, pad_token_id: int = 0
) -> list[torch.Tensor]:
    """Log-softmax at the positions predicting each sample's answer tokens: one forward per batch.

    Batches are right-padded with an attention mask, so real tokens keep positions 0..len-1.
    Returns a list (one per sample) of (len(answer), V) float32 tensors.
    """
    out: list[torch.Tensor] = []
    device = next(model.parameters()).device
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        seqs = [s.prompt_ids + s.answer_ids for s in batch]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)  # (B, S)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, S)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, S, V)
        for i, s in enumerate(batch):
            p, a = len(s.prompt_ids), len(s.answer_ids)
            out.append(torch.log_softmax(logits[i, p - 1 : p + a - 1].float(), dim=-1).cpu())  # (a, V)
    return out


def compare_run(base: Sequence[torch.Tensor], run: Sequence[torch.Tensor], samples: Sequence[ProbeSample]) -> RunMetrics:
    return aggregate(
        [compare_answer(b, r, torch.tensor(s.answer_ids)) for b, r, s in zip(base, run, samples, strict=True)]
    )


@torch.no_grad()
def greedy_reference_samples(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    config: SensitivityConfig = SensitivityConfig(),
    eos_token_id: int | None = None,
) -> list[ProbeSample]:
    """The uncompressed model's own greedy answers to `prompts` (token ids), one prompt at a time
    so that no padding can change them. The answer stops after the first eos (kept: stopping is
    part of the answer) or at max_new_tokens. Uses a KV cache through the model's forward."""
    device = next(model.parameters()).device
    samples = []
    for prompt in prompts:
        if len(prompt) == 0:
            raise ValueError("empty prompt: every probe prompt needs at least one token")
        ids = torch.tensor([list(prompt)], device=device)  # (1, P)
        out = model(input_ids=ids, use_cache=True)
        cache_kw = "cache" if hasattr(out, "cache") else "past_key_values"  # transformers >= 5.x renamed it
        answer: list[int] = []
        for _ in range(config.max_new_tokens):
            nxt = int(out.logits[0, -1].argmax())
            answer.append(nxt)
            if eos_token_id is not None and nxt == eos_token_id:
                break
            step = torch.tensor([[nxt]], device=device)  # (1, 1)
            out = model(input_ids=step, use_cache=True, **{cache_kw: getattr(out, cache_kw)})
        samples.append(ProbeSample(tuple(int(t) for t in prompt), tuple(answer)))
    return samples


def layer_sensitivity(
    model: torch.nn.Module,
    samples: Sequence[ProbeSample],
    weights_for_layer: Callable[[int], WeightMap],
    n_layers: int,
    layers: Sequence[int] | None = None,
    config: SensitivityConfig = SensitivityConfig(),
    swap: Callable[[torch.nn.Module, WeightMap], object] | None = None,
    progress: Progress | None = None,
    settings: dict | None = None,
) -> SensitivityProfile:
    """Compress one layer at a time and measure fidelity / margin / KL / top-1 agreement.

    weights_for_layer(l) returns {(l, module name): W_hat (d_out, d_in)} for layer l only.
    swap(model, mapping) is a context manager that installs the weights and restores them
    exactly (default: `calderalab.models.swapped_weights`).
    """
    if not samples:
        raise ValueError("layer_sensitivity needs at least one probe sample")
    layers = list(range(n_layers)) if layers is None else sorted(set(layers))
    bad = [l for l in layers if not 0 <= l < n_layers]
    if bad:
        raise ValueError(f"layers {bad} outside 0..{n_layers - 1}")
    if swap is None:
        from calderalab.models import swapped_weights as swap  # noqa: PLC0415 (models imports transformers)
    model.eval()
    base = teacher_forced_logprobs(model, samples, config.batch_size, config.pad_token_id)
    noise = compare_run(base, teacher_forced_logprobs(model, samples, config.noise_batch_size, config.pad_token_id), samples)
    log.info("noise floor: fidelity %.3f, kl %.3g", noise.fidelity, noise.kl)
    rows = []
    for done, layer in enumerate(layers):
        mapping = dict(weights_for_layer(layer))
        foreign = sorted({k for k in mapping if k[0] != layer})
        if foreign:
            raise ValueError(f"weights_for_layer({layer}) returned weights of other layers: {foreign}")
        with swap(model, mapping):
            run = teacher_forced_logprobs(model, samples, config.batch_size, config.pad_token_id)
        metrics = compare_run(base, run, samples)
        rows.append(LayerRow.against_noise(layer, metrics, noise))
        log.info("layer %d: fidelity %.3f margin %+.4f kl %.3g", layer, metrics.fidelity, metrics.margin, metrics.kl)
        if progress is not None:
            progress(done + 1, len(layers))
    meta = {"n_samples": len(samples), "batch_size": config.batch_size, "noise_batch_size": config.noise_batch_size,
            "max_new_tokens": config.max_new_tokens, **(settings or {})}
    return SensitivityProfile(n_layers=n_layers, rows=tuple(rows), noise=noise, settings=meta)

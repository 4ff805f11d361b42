"""Measuring per-layer sensitivity: reference answers, teacher-forced runs, answer-token metrics.

Protocol (DESIGN.md, Layer sensitivity): the uncompressed model first answers N probe prompts
greedily; its teacher-forced log-probs on prompt + own answer are computed ONCE and cached
(answer positions only, float32); then for each decoder layer l only layer l's compressed
weights are swapped in (restored exactly on exit) and the same teacher-forced batches are run
and compared over the answer tokens. By default the run of layer l executes only layers
l..L-1 on the cached uncompressed stream, and the head only at answer positions
(`fastpath.SuffixRunner`); `teacher_forced_logprobs` is the full-forward reference path.
A noise floor compares the uncompressed model with itself under another batch layout.
Imports torch; model access goes through `calderalab.models` (never transformers directly).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from calderalab.sensitivity.profile import LayerRow, RunMetrics, SampleValues, SensitivityProfile
from calderalab.sensitivity.settings import SensitivityConfig

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
    """Fidelity over samples; margin, KL and top-1 agreement pooled over all answer tokens. The
    per-sample values are kept too, so intervals can resample the samples (`sensitivity.intervals`)."""
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
        per_sample=SampleValues(
            kept=tuple(c.all_top1_kept for c in comparisons),
            margin_sum=tuple(c.margin_delta_sum for c in comparisons),
            kl_sum=tuple(c.kl_sum for c in comparisons),
            n_tokens=tuple(c.n_tokens for c in comparisons),
        ),
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


def greedy_reference_samples(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    config: SensitivityConfig = SensitivityConfig(),
    eos_token_id: int | None = None,
) -> list[ProbeSample]:
    """The uncompressed model's own greedy answers to `prompts` (token ids).

    The answer stops after the first eos (kept: stopping is part of the answer) or at
    max_new_tokens. config.generate_batch_size > 1: prompts of similar length are batched with
    left padding through `model.generate` (tested equal to one-at-a-time on tiny models; a
    rare near-tie may still flip under padding, which only changes which continuation is the
    reference, not how it is scored). 1: one prompt at a time, no padding at all."""
    for prompt in prompts:
        if len(prompt) == 0:
            raise ValueError("empty prompt: every probe prompt needs at least one token")
    if config.generate_batch_size == 1:
        return [_greedy_one(model, prompt, config.max_new_tokens, eos_token_id) for prompt in prompts]
    by_len = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[ProbeSample | None] = [None] * len(prompts)
    for start in range(0, len(by_len), config.generate_batch_size):
        idx = by_len[start : start + config.generate_batch_size]
        answers = _greedy_batch(model, [prompts[i] for i in idx], config, eos_token_id)
        for i, answer in zip(idx, answers, strict=True):
            out[i] = ProbeSample(tuple(int(t) for t in prompts[i]), answer)
    return out  # type: ignore[return-value]


def _cut_at_eos(tokens: Sequence[int], eos_token_id: int | None) -> tuple[int, ...]:
    if eos_token_id is not None and eos_token_id in tokens:
        tokens = tokens[: list(tokens).index(eos_token_id) + 1]
    return tuple(int(t) for t in tokens)


@torch.no_grad()
def _greedy_batch(model: torch.nn.Module, prompts: Sequence[Sequence[int]], config: SensitivityConfig,
                  eos_token_id: int | None) -> list[tuple[int, ...]]:
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), config.pad_token_id, dtype=torch.long)  # (B, P), left padded
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    # A fresh generation config: the checkpoint's own (sampling, repetition penalty, its eos) must not apply.
    gen = type(model.generation_config)(
        do_sample=False, num_beams=1, max_new_tokens=config.max_new_tokens, eos_token_id=eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen)
    new = out[:, width:].cpu().tolist()  # (B, <= max_new_tokens); finished rows are padded
    return [_cut_at_eos(row, eos_token_id) for row in new]


@torch.no_grad()
def _greedy_one(model: torch.nn.Module, prompt: Sequence[int], max_new_tokens: int, eos_token_id: int | None) -> ProbeSample:
    """One prompt, no padding; a KV cache through the model's forward."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt)], device=device)  # (1, P)
    out = model(input_ids=ids, use_cache=True)
    cache_kw = "cache" if hasattr(out, "cache") else "past_key_values"  # transformers >= 5.x renamed it
    answer: list[int] = []
    for _ in range(max_new_tokens):
        nxt = int(out.logits[0, -1].argmax())
        answer.append(nxt)
        if eos_token_id is not None and nxt == eos_token_id:
            break
        step = torch.tensor([[nxt]], device=device)  # (1, 1)
        out = model(input_ids=step, use_cache=True, **{cache_kw: getattr(out, cache_kw)})
    return ProbeSample(tuple(int(t) for t in prompt), tuple(answer))


def _fast_runner(model: torch.nn.Module, samples: Sequence[ProbeSample], config: SensitivityConfig):
    """A SuffixRunner with the cached uncompressed streams and baseline, or None (full-forward path)."""
    if not config.fast_path:
        return None
    from calderalab.sensitivity.fastpath import FastPathUnsupported, SuffixRunner

    try:
        return SuffixRunner(model, samples, config.batch_size, config.pad_token_id)
    except FastPathUnsupported as err:
        log.warning("fast path unavailable, one full forward per layer: %s", err)
        return None


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
    Fast path (config.fast_path): the baseline pass caches the uncompressed stream and each
    layer's inputs, and layer l's run executes only layers l..L-1 and the head at answer
    positions; layers are visited in ascending order. The noise floor is always a full forward
    under another batch layout, so it also bounds the fast path's own numerical difference.
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
    runner = _fast_runner(model, samples, config)
    if runner is not None:
        base = runner.base
    else:
        base = teacher_forced_logprobs(model, samples, config.batch_size, config.pad_token_id)
    noise = compare_run(base, teacher_forced_logprobs(model, samples, config.noise_batch_size, config.pad_token_id), samples)
    log.info("noise floor: fidelity %.3f, kl %.3g", noise.fidelity, noise.kl)
    rows = []
    for done, layer in enumerate(layers):
        mapping = dict(weights_for_layer(layer))
        foreign = sorted({k for k in mapping if k[0] != layer})
        if foreign:
            raise ValueError(f"weights_for_layer({layer}) returned weights of other layers: {foreign}")
        if runner is not None:
            runner.advance(layer)  # through the ORIGINAL layers, before the swap
        with swap(model, mapping):
            if runner is not None:
                run = runner.run_from(layer)
            else:
                run = teacher_forced_logprobs(model, samples, config.batch_size, config.pad_token_id)
        metrics = compare_run(base, run, samples)
        del run
        rows.append(LayerRow.against_noise(layer, metrics, noise))
        log.info("layer %d: fidelity %.3f margin %+.4f kl %.3g", layer, metrics.fidelity, metrics.margin, metrics.kl)
        if progress is not None:
            progress(done + 1, len(layers))
    meta = {"n_samples": len(samples), "batch_size": config.batch_size, "noise_batch_size": config.noise_batch_size,
            "max_new_tokens": config.max_new_tokens, "fast_path": runner is not None, **(settings or {})}
    return SensitivityProfile(n_layers=n_layers, rows=tuple(rows), noise=noise, settings=meta)

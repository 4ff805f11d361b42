"""Activation drift: how far each decoder layer's hidden state moves when weights are compressed.

The sensitivity profile says WHICH layer hurts the answer when compressed alone; this module
answers the report's other question, "how does compression change activations?": with a whole
compressed model (uniform) or the same model with some layers kept original (selective), how
far is the hidden state after each decoder layer from the original model's, and does it keep
growing with depth or stop where the protected layers are?

Protocol: the original model answers N probe prompts greedily (the sensitivity pipeline's
samples: `probe_prompt_ids` + `greedy_reference_samples`); the original and the compressed
model are each run teacher-forced on prompt + that answer, and the output of every decoder
layer is captured. Per layer, two per-token numbers compare h_c (compressed) with h_o:
cosine similarity <h_o, h_c> / (‖h_o‖‖h_c‖) and relative norm ‖h_c − h_o‖ / ‖h_o‖, averaged
over the positions that predict answer tokens and over all positions (pooled over samples).
Models through calderalab.models; never imports experiments, report, results or cli.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from calderalab import models

WeightMap = Mapping[tuple[int, str], torch.Tensor]


@dataclass(frozen=True)
class ActivationSettings:
    """N probe samples (drawn evenly over the task families with `seed`, as the sensitivity run
    draws them) and the cap of the original's reference answers. Every sample costs one original and one
    compressed forward per profile, so N is small by default (8); a layer's drift is a mean over
    every token of every sample (hundreds), far less noisy than a per-sample rate at the same N."""

    n_samples: int = 8
    seed: int = 0
    max_new_tokens: int = 24

    def __post_init__(self) -> None:
        if self.n_samples < 1 or self.max_new_tokens < 1:
            raise ValueError(f"need n_samples >= 1 and max_new_tokens >= 1, got {self.n_samples}, {self.max_new_tokens}")


@dataclass(frozen=True)
class LayerDrift:
    """One layer's drift: means over answer-predicting positions and over all positions."""

    layer: int
    cos_answer: float
    rel_answer: float
    cos_all: float
    rel_all: float


@dataclass(frozen=True)
class DriftProfile:
    """The drift of every decoder layer for one compressed model (`label`: "uniform", "selective")."""

    label: str
    protected: tuple[int, ...]
    n_samples: int
    layers: tuple[LayerDrift, ...]

    def to_dict(self) -> dict:
        return {"label": self.label, "protected": list(self.protected), "n_samples": self.n_samples,
                "layers": [vars(row) for row in self.layers]}


def token_drift(h_original: torch.Tensor, h_compressed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (cosine similarity, relative norm of the difference) of two hidden states.

    h_original, h_compressed: (T, d) -> two (T,) float64 tensors:
    cos[t] = <h_o[t], h_c[t]> / (‖h_o[t]‖ ‖h_c[t]‖), rel[t] = ‖h_c[t] − h_o[t]‖ / ‖h_o[t]‖.
    Computed in float64 so identical states give exactly (1, 0) up to rounding of the norms.
    """
    if h_original.shape != h_compressed.shape or h_original.dim() != 2:
        raise ValueError(f"need two (T, d) hidden states of one shape, got {tuple(h_original.shape)} and {tuple(h_compressed.shape)}")
    a, b = h_original.double(), h_compressed.double()
    norm_a, norm_b = a.norm(dim=1), b.norm(dim=1)  # (T,)
    cos = (a * b).sum(1) / (norm_a * norm_b)  # (T,)
    rel = (b - a).norm(dim=1) / norm_a  # (T,)
    return cos, rel


def layer_outputs(model: torch.nn.Module, ids: Sequence[int]) -> torch.Tensor:
    """(n_layers, T, d) float32: the hidden state after each decoder layer for one sequence of T ids."""
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output  # (1, T, d)
        captured.append(hidden[0].detach().float())

    handles = [t.layer.register_forward_hook(hook) for t in models.discover_layers(model)]
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(input_ids=torch.tensor([list(ids)], device=device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(captured).cpu()  # (n_layers, T, d)


def without_layers(weights: WeightMap, protected: Iterable[int]) -> dict[tuple[int, str], torch.Tensor]:
    """The selective model's weights: `weights` less every module of a protected layer."""
    keep_original = set(protected)
    return {key: W for key, W in weights.items() if key[0] not in keep_original}


def drift_profile(
    model: torch.nn.Module,
    samples: Sequence[object],
    weights: WeightMap,
    label: str,
    protected: Sequence[int] = (),
    reference: Sequence[torch.Tensor] | None = None,
) -> DriftProfile:
    """Drift per layer of the model with `weights` swapped in, against the original model.

    samples: ProbeSample-like (prompt_ids, answer_ids), non-empty answers. reference: the
    original's layer_outputs per sample when already computed (pass it to compare several
    weight sets against one original run). Answer-predicting positions of a sample with P
    prompt and A answer tokens: P−1 .. P+A−2 (the positions whose logits give the answer).
    """
    seqs = [list(s.prompt_ids) + list(s.answer_ids) for s in samples]
    originals = list(reference) if reference is not None else [layer_outputs(model, ids) for ids in seqs]
    cos_ans, rel_ans, cos_all, rel_all = [], [], [], []
    with models.swapped_weights(model, weights):
        for sample, ids, h_o in zip(samples, seqs, originals, strict=True):
            h_c = layer_outputs(model, ids)  # (n_layers, T, d)
            p, a = len(sample.prompt_ids), len(sample.answer_ids)
            per_layer = [token_drift(h_o[l], h_c[l]) for l in range(h_o.shape[0])]
            cos = torch.stack([c for c, _ in per_layer])  # (n_layers, T)
            rel = torch.stack([r for _, r in per_layer])  # (n_layers, T)
            cos_all.append(cos), rel_all.append(rel)
            cos_ans.append(cos[:, p - 1 : p + a - 1]), rel_ans.append(rel[:, p - 1 : p + a - 1])
    means = [torch.cat(parts, dim=1).mean(dim=1) for parts in (cos_ans, rel_ans, cos_all, rel_all)]  # 4 x (n_layers,)
    rows = tuple(LayerDrift(l, *(float(m[l]) for m in means)) for l in range(len(means[0])))
    return DriftProfile(label, tuple(sorted(set(protected))), len(samples), rows)


def uniform_and_selective(
    model: torch.nn.Module,
    samples: Sequence[object],
    weights: WeightMap,
    protected: Sequence[int] = (),
) -> list[DriftProfile]:
    """The uniform profile (all `weights`) and, when `protected` is given, the selective one
    (the same weights less the protected layers), both against one original run."""
    reference = [layer_outputs(model, list(s.prompt_ids) + list(s.answer_ids)) for s in samples]
    out = [drift_profile(model, samples, weights, "uniform", (), reference)]
    if protected:
        out.append(drift_profile(model, samples, without_layers(weights, protected), "selective", protected, reference))
    return out


def activation_drift(
    model: torch.nn.Module,
    tokenizer: object,
    store: object,
    protected: Sequence[int] = (),
    settings: ActivationSettings = ActivationSettings(),
    plan: object = None,
) -> list[DriftProfile]:
    """Uniform (and, with `protected`, selective) drift profiles of `store`'s modules on the probe prompts.

    The store is read once (checksummed, fingerprint-checked: artifacts.assemble_weights); the
    selective model is the same weights less the protected layers, so the two profiles differ
    only in those layers.
    """
    from calderalab.artifacts import assemble_weights
    from calderalab.sensitivity.measure import greedy_reference_samples
    from calderalab.sensitivity.pipeline import probe_prompt_ids
    from calderalab.sensitivity.settings import SensitivityConfig

    prompts = probe_prompt_ids(tokenizer, settings.n_samples, settings.seed)
    pad = getattr(tokenizer, "pad_token_id", None)
    config = SensitivityConfig(max_new_tokens=settings.max_new_tokens, **({"pad_token_id": pad} if pad is not None else {}))
    samples = greedy_reference_samples(model, prompts, config, getattr(tokenizer, "eos_token_id", None))
    weights = assemble_weights(store, model, plan=plan)
    return uniform_and_selective(model, samples, weights, protected)

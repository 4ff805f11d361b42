"""The one sensitivity pipeline: probe prompts -> reference answers -> layer l's compressed weights
(from a provider) swapped in one layer at a time -> profile and critical zone.

`calderalab sensitivity` (weights compressed here, or read from an artifact store) and the study's
sensitivity stage (the uniform plan's stored weights) both call `run_sensitivity` with a
`SensitivitySettings`. A provider says where layer l's Ŵ comes from:
- `CompressOnTheFly(spec, calib)`: decompose(W, H, spec) with H from the ORIGINAL model's
  activations on the calibration data (calderalab.calib, calderalab.core);
- `StoredWeights(store, plan)`: the modules of an artifact store (checksummed and
  fingerprint-checked against this model), so the profile describes the deployed artifacts.
Imports torch; models through `calderalab.models`. Never imports experiments, report, results or
cli (writing tables and plots is `calderalab.report.sensitivity_report`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch

from calderalab.sensitivity.measure import greedy_reference_samples, layer_sensitivity
from calderalab.sensitivity.noise import threshold_zone
from calderalab.sensitivity.profile import SensitivityProfile
from calderalab.sensitivity.settings import SensitivitySettings

log = logging.getLogger(__name__)

WeightMap = Mapping[tuple[int, str], torch.Tensor]
WeightsOf = Callable[[int], WeightMap]  # layer l -> {(l, module name): Ŵ (d_out, d_in)}


class LayerWeights(Protocol):
    """Where each layer's compressed weights come from."""

    def record(self) -> dict[str, Any]:
        """Provenance for the profile's settings, known before any work (JSON values)."""

    def prepare(self, model: torch.nn.Module, tokenizer: Any, layers: Sequence[int]) -> tuple[WeightsOf, dict[str, Any]]:
        """Check and build what the run needs; returns (weights of layer l, provenance learned meanwhile)."""


@dataclass(frozen=True)
class SensitivityRun:
    profile: SensitivityProfile
    zone: tuple[int, ...]  # the critical zone at the settings' threshold (may be empty)


def probe_instances(n_samples: int, seed: int = 0) -> tuple[list[Any], dict[str, str]]:
    """N execution-probe instances drawn evenly over the task families by
    `eval.tasks.generate_instances`, and each family's category (family id -> category)."""
    from calderalab.eval.tasks import generate_instances, load_families

    families = load_families()
    per_family = max(1, math.ceil(n_samples / len(families)))
    drawn = generate_instances(families, per_family, seed)
    # Round robin over the families (first instance of each, then the second, ...), so cutting at
    # N keeps every family when N >= their number, not the first few families in full.
    seen: Counter[str] = Counter()
    keyed = []
    for i, inst in enumerate(drawn):
        keyed.append(((seen[inst.family], i), inst))  # (its index within its family, draw order)
        seen[inst.family] += 1
    return [inst for _, inst in sorted(keyed, key=lambda t: t[0])][:n_samples], {f.id: f.category for f in families}


def probe_prompt_ids(tokenizer: Any, n_samples: int, seed: int = 0) -> list[list[int]]:
    """Token ids of N execution-probe prompts (chat template when the tokenizer has one), drawn
    as `probe_instances` draws them."""
    from calderalab.eval.probes import execution_messages

    out = []
    for inst in probe_instances(n_samples, seed)[0]:
        messages = execution_messages(inst)
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = "\n".join(m["content"] for m in messages) + "\n"
        out.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return out


def sample_groups(n_samples: int, seed: int = 0) -> dict[str, list[str]]:
    """What each probe sample is, in sample order, for `--by-family` (JSON values for the profile's
    settings): its task family and that family's category."""
    instances, category = probe_instances(n_samples, seed)
    return {"sample_families": [i.family for i in instances], "sample_categories": [category[i.family] for i in instances]}


def run_sensitivity(
    model: torch.nn.Module,
    tokenizer: Any,
    settings: SensitivitySettings,
    weights: LayerWeights,
    layers: Sequence[int] | None = None,
    model_ref: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
) -> SensitivityRun:
    """Profile every (or the given) layer of `model` and find the critical zone.

    stage(name) is called as each stage ends ("layer weights", "reference answers", "layer runs"),
    so callers can time them; progress(done, total) after each layer run."""
    from calderalab.models import num_layers

    n_layers = num_layers(model)
    settings.groups.ranges(n_layers)  # a model too shallow for the layer groups fails now, before any work
    chosen = list(range(n_layers)) if layers is None else sorted(set(layers))
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None:
        settings = dataclasses.replace(settings, measure=dataclasses.replace(settings.measure, pad_token_id=int(pad)))
    record = {**({"model": model_ref} if model_ref else {}), **settings.record(), **weights.record(),
              **sample_groups(settings.n_samples, settings.seed)}
    return profile_prompts(model, probe_prompt_ids(tokenizer, settings.n_samples, settings.seed), settings, weights,
                           tokenizer, chosen, getattr(tokenizer, "eos_token_id", None), record, progress, stage)


def profile_prompts(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    settings: SensitivitySettings,
    weights: LayerWeights,
    tokenizer: Any = None,
    layers: Sequence[int] | None = None,
    eos_token_id: int | None = None,
    record: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
) -> SensitivityRun:
    """`run_sensitivity` on given prompt token ids (the tokenizer is only passed to the provider)."""
    from calderalab.models import num_layers, swapped_weights

    n_layers = num_layers(model)
    layers = list(range(n_layers)) if layers is None else list(layers)
    stage = stage or (lambda _name: None)
    weights_of, learned = weights.prepare(model, tokenizer, layers)
    stage("layer weights")
    samples = greedy_reference_samples(model, prompt_ids, settings.measure, eos_token_id)
    stage("reference answers")
    profile = layer_sensitivity(model, samples, weights_of, n_layers, layers, settings.measure, swap=swapped_weights,
                                progress=progress, settings={**dict(record or {}), **learned})
    stage("layer runs")
    return SensitivityRun(profile, chosen_zone(profile, settings))


def chosen_zone(profile: SensitivityProfile, settings: SensitivitySettings) -> tuple[int, ...]:
    """The zone by the settings' rule: the fidelity threshold (`noise.threshold_zone`: below the
    threshold and beyond the noise) when no zone metric is set, else the bootstrap rule on that
    metric (`intervals.interval_zone`)."""
    if settings.zone_metric is None:
        return threshold_zone(profile, settings.threshold, settings.groups)
    from calderalab.sensitivity.intervals import zone_of

    return zone_of(profile, settings.zone_metric, settings.bootstrap)


# ------------------------------------------------------------------ providers


@dataclass(frozen=True)
class CompressOnTheFly:
    """Layer l's Ŵ = decompose(W, H, spec).reconstruct(), every H from the ORIGINAL model's
    activations on `calib` (a CalibConfig, or ready token batches (batch, seq_len))."""

    spec: Any  # core.CompressionSpec
    calib: Any  # calib.CalibConfig | Sequence[torch.Tensor]
    offload_dir: str | None = None  # calibration activations between layers as files here (collect_hessians)

    def record(self) -> dict[str, Any]:
        source = getattr(self.calib, "source", "batches")
        return {"spec": self.spec.to_dict(), "spec_key": self.spec.key(), "calib_source": source}

    def prepare(self, model: torch.nn.Module, tokenizer: Any, layers: Sequence[int]) -> tuple[WeightsOf, dict[str, Any]]:
        from calderalab.calib import collect_hessians, load_calibration
        from calderalab.core import decompose
        from calderalab.models import target_linear

        if isinstance(self.calib, Sequence):
            batches, learned, forward_dtype = list(self.calib), {}, None
        else:
            data = load_calibration(model, tokenizer, self.calib)
            batches, learned, forward_dtype = list(data.batches), {"calib": data.description}, data.forward_dtype
        # Decompositions, not Ŵ, are kept: codes and factors; each layer's Ŵ is rebuilt when it is run
        out: dict[int, dict[str, Any]] = {}
        for layer, hessians in collect_hessians(model, batches, layers=layers, offload_dir=self.offload_dir,
                                                forward_dtype=forward_dtype):
            W = {name: target_linear(model, layer, name).weight.detach().float() for name in hessians}
            out[layer] = {name: decompose(W[name], H.float(), self.spec) for name, H in hessians.items()}
        return (lambda layer: {(layer, name): d.reconstruct() for name, d in out[layer].items()}), learned


class StoredWeights:
    """Layer l's Ŵ from an artifact store. The store's manifest is read when this is made (a bad URL
    or a store of several specs fails before the model loads); every profiled layer's coverage
    and fingerprints are checked in `prepare`, before any run."""

    def __init__(self, store: Any, plan: Any = None) -> None:
        self.store, self.plan = store, plan
        self.spec = _one_spec(store, plan)

    def record(self) -> dict[str, Any]:
        out = {"spec": self.spec.to_dict(), "spec_key": self.spec.key(), "artifacts": self.store.url}
        return out | ({"plan_hash": self.plan.hash()} if self.plan is not None else {})

    def prepare(self, model: torch.nn.Module, tokenizer: Any, layers: Sequence[int]) -> tuple[WeightsOf, dict[str, Any]]:
        from calderalab.artifacts import assemble_weights, check_fingerprints, select_entries
        from calderalab.models import num_layers

        entries = select_entries(self.store.manifest(), num_layers(model), layers=layers, plan=self.plan)
        check_fingerprints(model, entries, self.store.url)
        return (lambda layer: assemble_weights(self.store, model, layers=[layer], plan=self.plan)), {}


def _one_spec(store: Any, plan: Any) -> Any:
    """The one CompressionSpec of the plan's compressed modules, or of the store's modules."""
    from calderalab.core import CompressionSpec
    from calderalab.errors import CalderalabError

    if plan is not None:
        specs = {s.key(): s for _, s in plan.compressed()}
    else:
        specs = {key: CompressionSpec.from_dict(e.spec) for (_, _, key), e in store.manifest().modules.items()}
    if len(specs) != 1:
        raise CalderalabError(
            f"artifact store {store.url} holds {len(specs)} compression specs for this profile "
            f"({', '.join(sorted(specs)) or 'none'}); a sensitivity profile measures one spec: compress with one spec "
            "(e.g. `calderalab compress --bits B --rank K`) or pass the plan that picks it"
        )
    return next(iter(specs.values()))

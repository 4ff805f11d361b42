"""The `calderalab sensitivity` job as library code: probe prompts -> reference answers ->
per-layer compressed weights -> profile -> tables and plot. Imports torch; model access goes
through `calderalab.models`, compression through `calderalab.core`, calibration through
`calderalab.calib` (with a hook-based fallback while that package is not available).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from calderalab.sensitivity.measure import SensitivityConfig, greedy_reference_samples, layer_sensitivity
from calderalab.sensitivity.profile import LayerGroups, SensitivityProfile, critical_zone

log = logging.getLogger(__name__)

Compress = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (W (d_out, d_in), H (d_in, d_in)) -> W_hat


def probe_prompt_ids(tokenizer: Any, n_samples: int, seed: int = 0) -> list[list[int]]:
    """Token ids of N execution-probe prompts (chat template when the tokenizer has one),
    drawn evenly over the task families by `eval.tasks.generate_instances`."""
    from calderalab.eval.probes import execution_messages
    from calderalab.eval.tasks import generate_instances, load_families

    families = load_families()
    per_family = max(1, math.ceil(n_samples / len(families)))
    instances = generate_instances(families, per_family, seed)[:n_samples]
    out = []
    for inst in instances:
        messages = execution_messages(inst)
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = "\n".join(m["content"] for m in messages) + "\n"
        out.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return out


def layer_hessians(model: torch.nn.Module, batches: Sequence[torch.Tensor], layers: Sequence[int]) -> Iterable[tuple[int, dict[str, torch.Tensor]]]:
    """Stream (layer, {module name: H}) from the ORIGINAL model's activations (calderalab.calib's driver)."""
    from calderalab.calib import collect_hessians

    return collect_hessians(model, batches, layers=layers)


@dataclass(frozen=True)
class SensitivityJob:
    """Settings of one sensitivity run (the CLI fills it; defaults live here only)."""

    n_samples: int = 64
    threshold: float = 0.15
    calib_samples: int = 16
    calib_seq_len: int = 256
    calib_source: str = "self"  # calderalab.calib source: "self" or a text / GSM8K .jsonl path
    seed: int = 0
    measure: SensitivityConfig = SensitivityConfig()
    groups: LayerGroups = LayerGroups()

    def __post_init__(self) -> None:
        if self.n_samples < 1 or self.calib_samples < 1 or self.calib_seq_len < 2:
            raise ValueError(
                f"n_samples, calib_samples must be >= 1 and calib_seq_len >= 2, got {self.n_samples}, "
                f"{self.calib_samples}, {self.calib_seq_len}"
            )


def compressed_layer_weights(
    model: torch.nn.Module, batches: Sequence[torch.Tensor], layers: Sequence[int], compress: Compress
) -> dict[int, dict[tuple[int, str], torch.Tensor]]:
    """W_hat for every module of every requested layer, each from the original model's Hessians."""
    from calderalab.models import target_linear

    out: dict[int, dict[tuple[int, str], torch.Tensor]] = {}
    for layer, hessians in layer_hessians(model, batches, layers):
        out[layer] = {
            (layer, name): compress(target_linear(model, layer, name).weight.detach().float(), H.float())
            for name, H in hessians.items()
        }
    return out


def run_sensitivity(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    calib_batches: Sequence[torch.Tensor] | None,
    compress: Compress | None,
    job: SensitivityJob = SensitivityJob(),
    layers: Sequence[int] | None = None,
    eos_token_id: int | None = None,
    settings: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
    layer_weights: Callable[[int], dict[tuple[int, str], torch.Tensor]] | None = None,
) -> tuple[SensitivityProfile, tuple[int, ...]]:
    """Profile every (or the given) layer and find the critical zone.

    Layer l's compressed weights come from `compress(W, H)` on Hessians of `calib_batches`, or,
    when `layer_weights` is given, from `layer_weights(l)` (e.g. an artifact store's modules; then
    calib_batches and compress are unused and may be None).
    stage(name) is called as each stage ends (reference answers, Hessians + decompositions,
    layer runs), so callers can time them."""
    from calderalab.models import num_layers, swapped_weights

    n_layers = num_layers(model)
    layers = list(range(n_layers)) if layers is None else list(layers)
    stage = stage or (lambda _name: None)
    samples = greedy_reference_samples(model, prompt_ids, job.measure, eos_token_id)
    stage("reference answers")
    if layer_weights is None:
        if calib_batches is None or compress is None:
            raise ValueError("run_sensitivity needs calib_batches and compress, or layer_weights")
        layer_weights = compressed_layer_weights(model, calib_batches, layers, compress).__getitem__
        stage("hessians + decompositions")
    profile = layer_sensitivity(
        model, samples, layer_weights, n_layers, layers, job.measure, swap=swapped_weights,
        progress=progress, settings={"threshold": job.threshold, "seed": job.seed, **(settings or {})},
    )
    stage("layer runs")
    return profile, critical_zone(profile, job.threshold, job.groups)


def write_outputs(profile: SensitivityProfile, zone: Sequence[int], out_dir: Path, groups: LayerGroups = LayerGroups(),
                  ultra: dict[int, int] | None = None, base_rank: int | None = None) -> dict[str, Path]:
    """profile.json, sensitivity.md (group table, critical table, ultra ranks) and fidelity.png."""
    from calderalab.report.plots import fidelity_plot
    from calderalab.report.sensitivity_tables import critical_table, group_table, noise_line, ultra_table

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"profile": profile.save(out_dir / "profile.json")}
    parts = ["# Layer sensitivity\n", noise_line(profile), "\n## Layer groups\n\n", group_table(profile, groups),
             "\n## Critical layers\n\n", critical_table(profile, zone)]
    if ultra and base_rank:
        parts += ["\n## Ultra ranks\n\n", ultra_table(base_rank, ultra)]
    paths["tables"] = out_dir / "sensitivity.md"
    paths["tables"].write_text("".join(parts))
    paths["plot"] = fidelity_plot(profile, out_dir / "fidelity.png", zone, groups)
    return paths

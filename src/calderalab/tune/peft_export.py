"""Export a store as a PEFT LoRA adapter over the de-quantised Q backbone.

Output directory:
    backbone/   a Hugging Face checkpoint (models.export_checkpoint) whose target weights are
                W_Q = w_scale·T_out⁻¹ Q T_in⁻ᵀ (modules without factors: their full Ŵ; modules not in
                the store: the original weight)
    adapter/    adapter_config.json + adapter_model.safetensors, the layout PeftModel.from_pretrained
                reads: per module lora_A.weight = A (k, d_in) and lora_B.weight = B (d_out, k) with
                B·A = the stored low-rank part in the original basis (tune.factors.lora_pair; a 16-bit
                part of the rank is k16 more columns of B and rows of A), and
                lora_alpha = r so PEFT's scaling alpha/r is 1.
backbone + adapter computes exactly calderalab's Ŵ = W_Q + B·A, up to float rounding.
Writes files only; peft itself is not imported (tests load the result with it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from calderalab.artifacts import ArtifactStore
from calderalab.tune.factors import backbone, lora_pair, stored_factors
from calderalab.tune.store import load_modules

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModel wraps the causal LM as base_model.model


def adapter_config(ranks: dict[str, int], base_path: str) -> dict[str, Any]:
    """adapter_config.json for LoRA on the modules `ranks` names (qualified name -> k), scaling 1 everywhere.

    Ranks may differ per module: r/lora_alpha hold the most common one and rank_pattern/alpha_pattern
    (regex keys, escaped qualified names) the rest, with alpha = r for each so alpha/r = 1.
    """
    counts: dict[int, int] = {}
    for k in ranks.values():
        counts[k] = counts.get(k, 0) + 1
    r = max(sorted(counts), key=lambda k: counts[k])
    pattern = {re.escape(name): k for name, k in sorted(ranks.items()) if k != r}
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_path,
        "r": r, "lora_alpha": r, "rank_pattern": pattern, "alpha_pattern": dict(pattern),
        "target_modules": sorted(ranks), "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "use_rslora": False, "use_dora": False, "modules_to_save": None, "inference_mode": True,
        "init_lora_weights": True,
    }


def export_peft(model: torch.nn.Module, tokenizer: Any, store: ArtifactStore, out_dir: str | Path,
                overwrite: bool = False) -> Path:
    """Write backbone/ and adapter/ for `store` (made from `model`) under out_dir; return out_dir.

    `model` must hold the original weights; its target weights are overwritten by the backbone's.
    """
    from safetensors.torch import save_file

    from calderalab import models

    out_dir = Path(out_dir).expanduser().resolve()
    layers = models.discover_layers(model)
    base_weights, lora, ranks = {}, {}, {}
    for entry, decomposition in load_modules(store, model):
        key = (entry.layer, entry.module)
        if decomposition.factors is None and decomposition.dense is None:
            base_weights[key] = decomposition.reconstruct()
            continue
        base_weights[key] = backbone(decomposition)
        L, R = stored_factors(decomposition)  # (d_out, k + k16), (k + k16, d_in): the 16-bit part is more rank
        B, A = lora_pair(L, R, decomposition.rotation_seeds, decomposition.w_scale)
        name = layers[entry.layer].qualified_names[entry.module]
        lora[f"{PEFT_PREFIX}{name}.lora_A.weight"] = A.contiguous()  # (k, d_in)
        lora[f"{PEFT_PREFIX}{name}.lora_B.weight"] = B.contiguous()  # (d_out, k)
        ranks[name] = decomposition.rank + decomposition.rank16
    if not ranks:
        raise ValueError(f"{store.url} holds no low-rank factors (no caldera modules): there is no LoRA adapter to export")
    models.set_weights(model, base_weights)
    backbone_dir = models.export_checkpoint(model, tokenizer, out_dir / "backbone", overwrite=overwrite)
    adapter_dir = out_dir / "adapter"
    adapter_dir.mkdir(parents=True, exist_ok=overwrite)
    dtype = next(model.parameters()).dtype
    save_file({k: v.to(dtype) for k, v in lora.items()}, str(adapter_dir / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config = adapter_config(ranks, str(backbone_dir))
    (adapter_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=1, sort_keys=True))
    return out_dir

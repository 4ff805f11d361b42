"""The PEFT export: the adapter over the backbone computes calderalab's own compressed model."""

from __future__ import annotations

import copy
import json

import torch

from calderalab import models
from calderalab.artifacts import assemble_weights
from calderalab.tune import export_peft
from calderalab.tune.peft_export import ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapter_config
from planted_tune import SPEC


def test_peft_loads_the_adapter_and_matches_calderalab_logits(planted_problem, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    original, tokenizer, store, *_ = planted_problem
    model = copy.deepcopy(original)  # export_peft overwrites the target weights with the backbone
    ids = torch.randint(4, 260, (2, 24), generator=torch.Generator().manual_seed(5))
    with models.swapped_weights(model, assemble_weights(store, model)), torch.no_grad():
        expected = model(input_ids=ids).logits  # calderalab's forward of the compressed model
    out = export_peft(model, tokenizer, store, tmp_path / "lora")
    keys = load_file(str(out / "adapter" / ADAPTER_WEIGHTS))
    assert len(keys) == 2 * 14 and "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in keys
    base = AutoModelForCausalLM.from_pretrained(out / "backbone", dtype=torch.float32)
    tuned = PeftModel.from_pretrained(base, out / "adapter").eval()
    with torch.no_grad():
        got = tuned(input_ids=ids).logits
        with tuned.disable_adapter():
            backbone_only = tuned(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    assert (backbone_only - expected).abs().max() > 1e-2  # the adapter carries the low-rank part
    config = json.loads((out / "adapter" / ADAPTER_CONFIG).read_text())
    assert config["r"] == config["lora_alpha"] == SPEC.rank


def test_adapter_config_keeps_scaling_one_for_mixed_ranks():
    config = adapter_config({"model.layers.0.self_attn.q_proj": 8, "model.layers.1.self_attn.q_proj": 8,
                             "model.layers.1.mlp.up_proj": 4}, "backbone")
    assert (config["r"], config["lora_alpha"]) == (8, 8)
    assert config["rank_pattern"] == config["alpha_pattern"] == {r"model\.layers\.1\.mlp\.up_proj": 4}
    from peft import LoraConfig

    lora = LoraConfig(**{k: v for k, v in config.items() if k != "peft_type"})
    assert lora.r == 8 and lora.rank_pattern == config["rank_pattern"]

"""Run ONE peer quantiser on an fp32 HF checkpoint and write what the main process scores.

Runs inside the peer's own virtual environment (benchmarks/peers.py starts it), so it imports
only torch, transformers, safetensors and the peer; never calderalab. Output, in --out:
  weights.safetensors  every tensor of the decoder stack (model.layers.*, model.norm.*), de-quantised
                       to float32: the quantised weights as the peer would compute with them, and
                       anything else the peer changed (AWQ folds its scales into the norms)
  meta.json            {"seconds": compression wall time, "version": the peer's version}

    python peer_worker.py --peer hqq --bits 4 --group-size 64 --model-dir DIR --out DIR [--calib ids.pt] [--rank R]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PACKAGES = {"hqq": "hqq", "torchao": "torchao", "quanto": "optimum-quanto", "llmc-gptq": "llmcompressor",
            "llmc-awq": "llmcompressor", "gptqmodel": "gptqmodel", "gptq-eora": "gptqmodel"}


def load_fp32(model_dir: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def target_linears(model) -> dict[str, torch.nn.Linear]:
    """Qualified name → nn.Linear for the seven projections of every decoder layer."""
    return {name: m for name, m in model.named_modules()
            if name.startswith("model.layers.") and name.rsplit(".", 1)[-1] in TARGETS}


def decoder_state(model, weights: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Every model.layers.* / model.norm.* tensor in float32; `weights` overrides `<linear>.weight`."""
    state = {k: v for k, v in model.state_dict().items()
             if (k.startswith("model.layers.") or k.startswith("model.norm.")) and v.is_floating_point()}
    state.update(weights or {})
    return {k: v.detach().float().contiguous().clone() for k, v in state.items()}


def run_hqq(args) -> dict[str, torch.Tensor]:
    """HQQ's own API: HQQLinear per target, fp16 scale/zero (HQQ's default storage), then dequantize()."""
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    model = load_fp32(args.model_dir)
    config = BaseQuantizeConfig(nbits=args.bits, group_size=args.group_size, axis=1)
    weights = {}
    for name, linear in target_linears(model).items():
        hqq = HQQLinear(linear, config, compute_dtype=torch.float32, device="cpu", del_orig=False)
        weights[f"{name}.weight"] = hqq.dequantize().reshape(linear.weight.shape)
    return decoder_state(model, weights)


def run_torchao(args) -> dict[str, torch.Tensor]:
    """torchao IntxWeightOnlyConfig, asymmetric, per group, on the decoder linears only."""
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quant_primitives import MappingType

    model = load_fp32(args.model_dir)
    names = set(target_linears(model))
    config = IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{args.bits}"), granularity=PerGroup(args.group_size),
                                  mapping_type=MappingType.ASYMMETRIC)
    quantize_(model, config, filter_fn=lambda module, fqn: fqn in names)
    weights = {f"{n}.weight": m.weight.dequantize() for n, m in target_linears(model).items()}
    return decoder_state(_plain_linears(model, weights), weights)


def _plain_linears(model, weights: dict[str, torch.Tensor]):
    """Put plain float weights back, so state_dict() holds ordinary tensors."""
    for name, linear in target_linears(model).items():
        linear.weight = torch.nn.Parameter(weights[f"{name}.weight"].float(), requires_grad=False)
    return model


def run_quanto(args) -> dict[str, torch.Tensor]:
    """optimum-quanto: quantize(weights=qint2/qint4) + freeze on the decoder linears, then dequantize."""
    from optimum import quanto

    model = load_fp32(args.model_dir)
    qtype = {2: quanto.qint2, 4: quanto.qint4}[args.bits]
    quanto.quantize(model.model.layers, weights=qtype)
    quanto.freeze(model.model.layers)
    weights = {f"{n}.weight": m.qweight.dequantize() for n, m in model.named_modules()
               if n.startswith("model.layers.") and n.rsplit(".", 1)[-1] in TARGETS}
    state = {k: v for k, v in model.state_dict().items() if k.startswith("model.norm.") or
             (k.startswith("model.layers.") and "norm" in k)}
    return {k: v.detach().float().contiguous().clone() for k, v in {**state, **weights}.items()}


def calibration_rows(path: str) -> torch.Tensor:
    ids = torch.load(path, weights_only=True)  # (n_samples, seq_len) int64
    if ids.ndim != 2:
        raise ValueError(f"{path} holds token ids of shape {tuple(ids.shape)}, expected (n_samples, seq_len)")
    return ids


def run_llmc(args) -> dict[str, torch.Tensor]:
    """llm-compressor oneshot with GPTQModifier (symmetric) or AWQModifier (asymmetric), int weights
    in groups; returns the quantise-dequantised weights and AWQ's folded scales (in the norms)."""
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.awq import AWQModifier
    from llmcompressor.modifiers.quantization import GPTQModifier

    if not torch.cuda.is_available():
        # AWQ pins its cached activations for host-to-device copies; on a machine without an
        # accelerator pin_memory() raises (llmcompressor 0.14), and there is nothing to copy to
        from llmcompressor.pipelines.cache import IntermediatesCache

        IntermediatesCache.pin_memory = lambda self, batch_index, input_names=None: None
    model = load_fp32(args.model_dir)
    ids = calibration_rows(args.calib)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    awq = args.peer == "llmc-awq"
    scheme = {"targets": ["Linear"], "weights": {"num_bits": args.bits, "type": "int", "symmetric": not awq,
                                                 "strategy": "group", "group_size": args.group_size}}
    modifier = (AWQModifier if awq else GPTQModifier)(config_groups={"group_0": scheme}, ignore=["lm_head"])
    oneshot(model=model, dataset=data, recipe=[modifier], max_seq_length=ids.shape[1],
            num_calibration_samples=ids.shape[0])
    # GPTQ writes its quantised weights back; AWQ only smooths them and leaves scale / zero point beside
    # them (compressed-tensors quantises in forward or when saving), so every weight is fake-quantised
    # here by compressed-tensors itself: a no-op on weights already on the grid
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    weights = {f"{name}.weight": fake_quantize(m.weight, m.weight_scale, getattr(m, "weight_zero_point", None),
                                               m.quantization_scheme.weights)
               for name, m in target_linears(model).items()}
    return decoder_state(model, weights)


def run_gptqmodel(args) -> dict[str, torch.Tensor]:
    """GPTQModel GPTQ (v1 format, symmetric, no act-order) on CPU; with --rank, EoRA fitted AFTER
    quantisation (EoRA during quantisation deadlocks on CPU) and added as W_q + B·A."""
    from gptqmodel import GPTQModel, QuantizeConfig

    ids = calibration_rows(args.calib)
    calib = [{"input_ids": row.tolist(), "attention_mask": [1] * len(row)} for row in ids]
    quant_dir = Path(args.quantized_dir or Path(args.out) / "gptq")
    if not args.quantized_dir:  # EoRA rows reuse the GPTQ row's quantised model (the table adds its time)
        model = GPTQModel.load(args.model_dir, QuantizeConfig(bits=args.bits, group_size=args.group_size, desc_act=False),
                               device="cpu")
        model.quantize(calib, batch_size=1)
        model.save(str(quant_dir))
    weights = gptq_weights(quant_dir)
    if args.rank:
        delta = eora_delta(args, quant_dir, calib)
        missing = sorted(set(weights) - set(delta))
        if missing:
            raise RuntimeError(f"EoRA wrote no factors for {len(missing)} weights, e.g. {missing[:2]}")
        weights = {k: w + delta[k] for k, w in weights.items()}
    return decoder_state(_plain_linears(load_fp32(args.model_dir), weights), weights)


def gptq_weights(quant_dir: Path) -> dict[str, torch.Tensor]:
    """The de-quantised (d_out, d_in) weights of a saved GPTQModel checkpoint. Loaded with the pure-torch
    kernel (the AUTO choice on CPU compiles a native int4 kernel first) and de-quantised by the packing
    code every GPTQ kernel shares (PackableQuantLinear), not the torch.compile'd override."""
    from gptqmodel import BACKEND, GPTQModel
    from gptqmodel.nn_modules.qlinear import PackableQuantLinear

    quantized = GPTQModel.load(str(quant_dir), device="cpu", backend=BACKEND.GPTQ_TORCH)
    return {f"{n}.weight": PackableQuantLinear.dequantize_weight(m).T.float() for n, m in quantized.model.named_modules()
            if n.startswith("model.layers.") and n.rsplit(".", 1)[-1] in TARGETS}


def eora_delta(args, quant_dir: Path, calib: list[dict]) -> dict[str, torch.Tensor]:
    from gptqmodel import GPTQModel
    from gptqmodel.adapter.adapter import Lora
    from safetensors.torch import load_file

    eora_dir = Path(args.out) / "eora"
    GPTQModel.adapter.generate(adapter=Lora(path=str(eora_dir), rank=args.rank), model_id_or_path=args.model_dir,
                               quantized_model_id_or_path=str(quant_dir), calibration_dataset=calib)
    tensors = load_file(str(next(eora_dir.glob("*.safetensors"))))
    out = {}
    for key, A in tensors.items():
        if ".lora_A." in key:
            B = tensors[key.replace(".lora_A.", ".lora_B.")]
            name = key.split(".lora_A.")[0].removeprefix("base_model.model.")
            out[f"{name}.weight"] = (B.float() @ A.float())  # (d_out, r) @ (r, d_in)
    return out


RUNNERS = {"hqq": run_hqq, "torchao": run_torchao, "quanto": run_quanto, "llmc-gptq": run_llmc,
           "llmc-awq": run_llmc, "gptqmodel": run_gptqmodel, "gptq-eora": run_gptqmodel}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", required=True, choices=sorted(RUNNERS))
    parser.add_argument("--bits", type=int, required=True)
    parser.add_argument("--group-size", type=int, required=True)
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--calib", default=None, help="(n_samples, seq_len) int64 token ids, torch.save'd")
    parser.add_argument("--out", required=True)
    parser.add_argument("--quantized-dir", default=None, help="gptq-eora: the GPTQModel checkpoint to fit EoRA to")
    args = parser.parse_args()
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    state = RUNNERS[args.peer](args)
    seconds = time.perf_counter() - t0
    save_file(state, os.path.join(args.out, "weights.safetensors"))
    meta = {"seconds": seconds, "version": importlib.metadata.version(PACKAGES[args.peer]), "torch": torch.__version__}
    Path(args.out, "meta.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    main()

"""Find the decoder layers of a causal LM and, in each, the seven target linears.

Discovery works from structure plus name patterns, not a table of model families:
1. the decoder layer list is the `nn.ModuleList` of identical blocks that holds the most
   parameters (in a decoder-only model that is always the transformer stack; expert lists
   inside an MoE layer are smaller than the stack that contains them);
2. inside a layer, each `nn.Linear` is classified by its own name, and for the ambiguous names
   (`dense`, `c_proj`, `out_proj`, ...) by whether it sits under an attention or MLP block.

Layouts calderalab cannot compress module by module (fused QKV or gate/up projections, GPT-2
Conv1D, mixture-of-experts, non-gated MLPs) raise UnsupportedModelError naming what was found.
Embeddings, norms and lm_head are never targets: they are not inside the decoder layers' linears.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from calderalab.errors import ModelRefError

from calderalab.core.spec import MODULE_NAMES  # one definition; core.spec imports only the stdlib


class UnsupportedModelError(ModelRefError):
    """A model whose decoder layers do not have separate q/k/v/o/gate/up/down linears."""


@dataclass(frozen=True, eq=False)
class LayerTargets:
    """The target linears of one decoder layer.

    modules: canonical name -> nn.Linear; qualified_names: canonical name -> full module path
    ("model.layers.3.self_attn.q_proj"); shapes: canonical name -> weight shape (d_out, d_in);
    path: the layer's own qualified name ("model.layers.3").
    """

    index: int
    layer: nn.Module
    modules: dict[str, nn.Linear]
    qualified_names: dict[str, str]
    shapes: dict[str, tuple[int, int]]
    path: str = ""  # qualified name of the layer itself, e.g. "model.layers.3"


# Leaf names that identify a module on their own.
_LEAF_PATTERNS: dict[str, re.Pattern] = {
    "q": re.compile(r"^(q_proj|query|wq|q)$"),
    "k": re.compile(r"^(k_proj|key|wk|k)$"),
    "v": re.compile(r"^(v_proj|value|wv|v)$"),
    "o": re.compile(r"^(o_proj|wo)$"),
    "gate": re.compile(r"^(gate_proj|w1|gate)$"),
    "up": re.compile(r"^(up_proj|w3|up)$"),
    "down": re.compile(r"^(down_proj|w2|down)$"),
}
# Names whose meaning depends on the enclosing block (attention output vs MLP output).
_ATTN_OUT = re.compile(r"^(out_proj|dense|c_proj|proj)$")
_MLP_OUT = re.compile(r"^(c_proj|dense_4h_to_h|fc2|proj)$")
_ATTN_BLOCK = re.compile(r"attn|attention", re.IGNORECASE)
_MLP_BLOCK = re.compile(r"mlp|ffn|feed_forward", re.IGNORECASE)
_FUSED = re.compile(r"^(qkv_proj|c_attn|query_key_value|wqkv|qkv|gate_up_proj|w13)$", re.IGNORECASE)
_EXPERTS = re.compile(r"(^|\.)experts?(\.|$)")


def _is_conv1d(module: nn.Module) -> bool:
    # transformers' GPT-2 Conv1D stores weight as (d_in, d_out); matched by name to avoid an import.
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(qualified name, ModuleList) of the decoder layer stack."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(block) for block in module}) != 1:
            continue
        if not any(isinstance(m, nn.Linear) or _is_conv1d(m) for m in module[0].modules()):
            continue
        size = _n_params(module)
        if best is None or size > best[0]:
            best = (size, name, module)
    if best is None:
        raise UnsupportedModelError(
            f"no decoder layer list found in {type(model).__name__}: expected an nn.ModuleList of identical "
            "blocks containing linear layers (e.g. model.layers)"
        )
    return best[1], best[2]


def _canonical_name(relative: str) -> str | None:
    """Canonical target name of a linear at `relative` path inside a layer, or None."""
    parent, _, leaf = relative.rpartition(".")
    for canonical, pattern in _LEAF_PATTERNS.items():
        if pattern.match(leaf):
            return canonical
    in_attn, in_mlp = bool(_ATTN_BLOCK.search(parent)), bool(_MLP_BLOCK.search(parent))
    if in_attn and _ATTN_OUT.match(leaf):
        return "o"
    if in_mlp and _MLP_OUT.match(leaf):
        return "down"
    return None


def _reject_unsupported(index: int, layer: nn.Module, layer_path: str) -> None:
    for relative, module in layer.named_modules():
        where = f"{layer_path}.{relative}"
        if _is_conv1d(module):
            raise UnsupportedModelError(
                f"{where} is a GPT-2 style Conv1D (weight stored as (d_in, d_out), fused QKV); calderalab "
                "compresses separate nn.Linear q/k/v/o/gate/up/down projections (Llama, Qwen, Mistral, Gemma, ...)"
            )
        if isinstance(module, nn.Linear) and _FUSED.match(relative.rpartition(".")[2]):
            raise UnsupportedModelError(
                f"{where} is a fused projection ({module.out_features}x{module.in_features}); calderalab needs "
                "separate q/k/v and gate/up linears: convert the checkpoint to an unfused layout "
                "(e.g. Phi-3 -> Llama format) first"
            )
    if any(_EXPERTS.search(name) for name, _ in layer.named_modules()):
        raise UnsupportedModelError(
            f"decoder layer {index} ({layer_path}) is a mixture-of-experts block; only dense decoders are supported"
        )


def _layer_targets(index: int, layer: nn.Module, layer_path: str) -> LayerTargets:
    _reject_unsupported(index, layer, layer_path)
    found: dict[str, list[tuple[str, nn.Linear]]] = {name: [] for name in MODULE_NAMES}
    linears = [(rel, m) for rel, m in layer.named_modules() if isinstance(m, nn.Linear)]
    for relative, module in linears:
        canonical = _canonical_name(relative)
        if canonical is not None:
            found[canonical].append((relative, module))
    problems = [f"{n}: none" for n in MODULE_NAMES if not found[n]]
    problems += [f"{n}: {[r for r, _ in found[n]]}" for n in MODULE_NAMES if len(found[n]) > 1]
    if problems:
        raise UnsupportedModelError(
            f"decoder layer {index} ({layer_path}) does not have exactly one linear per target "
            f"({'; '.join(problems)}); its linears are {[r for r, _ in linears]}. calderalab needs separate "
            "q, k, v, o, gate, up, down projections (a gated MLP)"
        )
    modules = {n: found[n][0][1] for n in MODULE_NAMES}
    return LayerTargets(
        index=index,
        layer=layer,
        modules=modules,
        qualified_names={n: f"{layer_path}.{found[n][0][0]}" for n in MODULE_NAMES},
        shapes={n: (m.out_features, m.in_features) for n, m in modules.items()},
        path=layer_path,
    )


def discover_layers(model: nn.Module) -> list[LayerTargets]:
    """One LayerTargets per decoder layer, in order. Raises UnsupportedModelError for odd layouts."""
    stack_path, stack = find_decoder_layers(model)
    prefix = f"{stack_path}." if stack_path else ""
    return [_layer_targets(i, block, f"{prefix}{i}") for i, block in enumerate(stack)]


def num_layers(model: nn.Module) -> int:
    """Number of decoder layers (length of the discovered layer stack)."""
    return len(find_decoder_layers(model)[1])


def module_shapes(model: nn.Module) -> dict[tuple[int, str], tuple[int, int]]:
    """(layer, canonical name) -> weight shape (d_out, d_in) of every target module; a meta-device
    skeleton (`load_skeleton`) is enough, so plans can be checked before the weights load."""
    return {(t.index, name): shape for t in discover_layers(model) for name, shape in t.shapes.items()}


def check_module_name(name: str) -> str:
    if name not in MODULE_NAMES:
        raise ValueError(f"unknown target module {name!r}: valid names are {', '.join(MODULE_NAMES)}")
    return name


def check_layer_index(layer: int, n_layers: int) -> int:
    if isinstance(layer, bool) or not hasattr(layer, "__index__"):
        raise ValueError(f"layer index must be an integer, got {layer!r}")
    layer = int(layer.__index__())
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} is out of range: the model has {n_layers} decoder layers (0..{n_layers - 1})")
    return layer


def target_linear(model: nn.Module, layer: int, name: str) -> nn.Linear:
    """The nn.Linear for (layer, canonical name); clear ValueError for a bad layer or name."""
    check_module_name(name)
    stack_path, stack = find_decoder_layers(model)
    layer = check_layer_index(layer, len(stack))
    prefix = f"{stack_path}." if stack_path else ""
    return _layer_targets(layer, stack[layer], f"{prefix}{layer}").modules[name]

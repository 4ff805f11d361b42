"""collect_hessians: layer-by-layer capture equals a full-model forward; memory is one layer deep."""

import threading
import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from calderalab.calib import collect_hessians, input_groups

PROJ = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
        "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def build(family: str, n_layers: int = 3, hidden: int = 32, inter: int = 64, seed: int = 0):
    import transformers

    torch.manual_seed(seed)
    common = dict(vocab_size=97, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=n_layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    if family == "llama":
        cfg = transformers.LlamaConfig(**common)
        cls = transformers.LlamaForCausalLM
    elif family == "qwen2":  # alternating sliding-window layers: per-layer masks differ
        cfg = transformers.Qwen2Config(**common, use_sliding_window=True, sliding_window=4,
                                       layer_types=["sliding_attention", "full_attention"] * (n_layers // 2) + ["full_attention"] * (n_layers % 2))
        cls = transformers.Qwen2ForCausalLM
    elif family == "gemma":
        cfg = transformers.GemmaConfig(**common, head_dim=8)
        cls = transformers.GemmaForCausalLM
    else:
        raise AssertionError(family)
    cfg._attn_implementation = "eager"
    return cls(cfg).eval()


def targets(model):
    return [SimpleNamespace(index=i, layer=layer, modules={n: layer.get_submodule(p) for n, p in PROJ.items()})
            for i, layer in enumerate(model.model.layers)]


def reference_hessians(model, batches):
    """XᵀX/n of every target module's input from one ordinary full-model forward."""
    sums, counts, handles = {}, {}, []
    for t in targets(model):
        for name, mod in t.modules.items():
            def hook(_m, inputs, _out, key=(t.index, name)):
                X = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
                sums[key] = sums.get(key, 0) + X.T @ X
                counts[key] = counts.get(key, 0) + X.shape[0]
            handles.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        for b in batches:
            model(input_ids=b)
    for h in handles:
        h.remove()
    return {k: (sums[k] / counts[k]).float() for k in sums}


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma"])
def test_layerwise_equals_full_forward(family):
    model = build(family, n_layers=4)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 97, (2, 12), generator=gen) for _ in range(3)]
    ref = reference_hessians(model, batches)
    got = dict(collect_hessians(model, batches, targets=targets(model)))
    assert sorted(got) == [0, 1, 2, 3]
    for (layer, name), H in ref.items():
        torch.testing.assert_close(got[layer][name], H, rtol=1e-4, atol=1e-5)
    # q/k/v and gate/up share one Hessian object; o and down have their own
    assert got[0]["q"] is got[0]["k"] is got[0]["v"]
    assert got[0]["gate"] is got[0]["up"]
    assert got[0]["o"] is not got[0]["q"]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_bfloat16_forward_equals_a_bfloat16_model(family):
    """forward_dtype=bfloat16 gives the Hessians of the same model held in bfloat16 (its forward is the same
    arithmetic: embeddings, rotary cos/sin and masks cast as transformers casts them), up to the one
    bfloat16 rounding per product chunk; the float32 model itself is left as it was, float32."""
    import copy

    model = build(family, n_layers=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(4)
    batches = [torch.randint(0, 97, (2, 12), generator=gen) for _ in range(3)]
    twin = copy.deepcopy(model).to(torch.bfloat16)
    twin.model.rotary_emb.inv_freq = model.model.rotary_emb.inv_freq.clone()  # .to() rounds this buffer; capture does not
    ref = reference_hessians(twin, batches)
    fp32 = dict(collect_hessians(model, batches, targets=targets(model)))
    got = dict(collect_hessians(model, batches, targets=targets(model), forward_dtype=torch.bfloat16))
    rel = lambda a, b: float((a.double() - b.double()).norm() / b.double().norm())  # noqa: E731
    for (layer, name), H in ref.items():
        assert got[layer][name].dtype == torch.float32
        assert rel(got[layer][name], H) < 2**-9, (layer, name)
    assert max(rel(fp32[layer][name], H) for (layer, name), H in ref.items()) > 2**-8  # float32 is another forward
    assert all(torch.equal(v, state[k]) and v.dtype == torch.float32 for k, v in model.state_dict().items())


def test_subset_of_layers_and_model_untouched():
    model = build("llama", n_layers=4)
    batches = [torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(2))]
    before = model(input_ids=batches[0]).logits
    all_H = dict(collect_hessians(model, batches, targets=targets(model)))
    some = dict(collect_hessians(model, batches, layers=[2, 1], targets=targets(model)))
    assert sorted(some) == [1, 2]
    torch.testing.assert_close(some[2]["down"], all_H[2]["down"])
    # the recording forwards were removed again: the model computes exactly as before
    assert torch.equal(model(input_ids=batches[0]).logits, before)
    with pytest.raises(ValueError, match=r"\[7\] out of range"):
        list(collect_hessians(model, batches, layers=[7], targets=targets(model)))


def test_yielded_before_layer_is_modified():
    """Replacing layer l's weights after it is yielded must not change later Hessians."""
    model = build("llama", n_layers=3)
    batches = [torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(3))]
    ref = dict(collect_hessians(model, batches, targets=targets(model)))
    got = {}
    for layer, Hs in collect_hessians(model, batches, targets=targets(model)):
        got[layer] = Hs
        with torch.no_grad():
            for mod in targets(model)[layer].modules.values():
                mod.weight.mul_(0.0)
    torch.testing.assert_close(got[2]["q"], ref[2]["q"])


def test_input_groups():
    assert input_groups(["q", "k", "v", "o", "gate", "up", "down"]) == [("q", "k", "v"), ("o",), ("gate", "up"), ("down",)]
    assert input_groups(["v", "o", "extra"]) == [("v",), ("o",), ("extra",)]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _peak_extra_rss(model, batches) -> int:
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        for _layer, Hs in collect_hessians(model, batches, targets=targets(model)):
            peak[0] = max(peak[0], _rss_bytes())
            del Hs
    finally:
        stop.set()
        thread.join()
    return peak[0] - base


def test_peak_memory_is_one_layer_not_depth():
    """Depth 4 vs 16 at equal width: extra peak memory must not grow with depth.

    Per layer the float64 accumulators of down_proj alone are 8 MiB (1024² · 8 B); holding every
    layer's Hessians would cost 4x more at depth 16 than at depth 4.
    """
    batches = [torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(4))]
    peaks = {}
    for depth in (4, 16):
        model = build("llama", n_layers=depth, hidden=128, inter=1024)
        _peak_extra_rss(model, batches)  # warm-up: allocator pools, lazy imports
        peaks[depth] = _peak_extra_rss(model, batches)
        del model
    one_layer = 1024 * 1024 * 8
    assert peaks[16] < peaks[4] + 2 * one_layer, peaks

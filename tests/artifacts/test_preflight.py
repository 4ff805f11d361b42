"""The structure check run before any weights load: which stores cannot belong to a model of these shapes."""

from __future__ import annotations

from calderalab.artifacts import Manifest, ManifestHeader, ModuleEntry
from calderalab.artifacts.preflight import structure_mismatch

SHAPES = {(layer, name): (32, 32) for layer in range(3) for name in ("q", "k")} | {(1, "up"): (64, 32)}


def _manifest(modules: dict[tuple[int, str], tuple[int, int]], architecture: str | None = "LlamaForCausalLM") -> Manifest:
    header = ManifestHeader({"ref": "m", "architecture": architecture}, {}, "0.1.0", "now")
    entries = {(layer, name, "s"): ModuleEntry(layer, name, "s", {}, shape, "f", f"modules/{layer}.{name}", "h", 1, {})
               for (layer, name), shape in modules.items()}
    return Manifest(header, entries)


def test_a_store_of_this_structure_fits_whole_or_partial():
    assert structure_mismatch(_manifest(SHAPES), SHAPES, "LlamaForCausalLM") is None
    assert structure_mismatch(_manifest({(1, "up"): (64, 32)}), SHAPES, "LlamaForCausalLM") is None
    assert structure_mismatch(_manifest(SHAPES, architecture=None), SHAPES, "LlamaForCausalLM") is None  # not recorded


def test_another_architecture_a_missing_layer_or_another_shape_is_named():
    assert structure_mismatch(_manifest(SHAPES), SHAPES, "Qwen2ForCausalLM") == (
        "the store holds modules of a LlamaForCausalLM, the model is a Qwen2ForCausalLM")
    deeper = {**SHAPES, (3, "q"): (32, 32)}
    assert structure_mismatch(_manifest(deeper), SHAPES, "LlamaForCausalLM") == (
        "module 3.q is stored but the model has 3 layers (0-2)")
    wider = {**SHAPES, (1, "up"): (96, 32)}
    assert structure_mismatch(_manifest(wider), SHAPES, "LlamaForCausalLM") == (
        "module 1.up is (96, 32) in the store but (64, 32) in the model")

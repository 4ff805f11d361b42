"""Perplexity, KL and top-1 of SmolLM2 on WikiText-2 test: baseline vs rtn / ldlq / caldera at 2, 3, 4 bits.

One command, one table, the same context for every row:

    PYTHONPATH=src python benchmarks/ppl.py            # defaults below; artifacts cached

Hessians are collected ONCE (cached on disk by calibration sha256 and calib code hash) and reused
by every method; each configuration's artifacts go to <cache>/<spec key>, so a rerun only
evaluates, unless the store's modules were made by another calderalab version or other core code:
compress_model then recomputes them (and logs why). bpw is the
honest count from the artifacts (scales and zero points included), averaged over the compressed
weights by parameter count. KL(original ‖ compressed) and top-1 agreement are measured against the
original model on the same windows; what the original's reference needs is cached in
<cache>/reference once per (model, window set) (see calderalab.eval.fidelity).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from calderalab import __version__, core, models, plans
from calderalab.artifacts import ArtifactStore, assemble_weights
from calderalab.artifacts.provenance import source_hash
from calderalab.calib import CalibConfig, collect_hessians, load_calibration
from calderalab.calib.sources import with_hessian_dtype
from calderalab.compress import compress_model
from calderalab.eval.fidelity import load_or_build_reference, measure_against
from calderalab.eval.perplexity import token_ids

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"


def configs(bits_list: list[int], ranks: list[int], lr_bits: int = 4,
            codebooks: tuple[str, ...] = ("scalar",)) -> list[core.CompressionSpec]:
    out = []
    for bits in bits_list:
        if bits == 2 and "e8p" in codebooks:  # the E8P lattice backbone exists at 2 bits only
            out.append(core.CompressionSpec("ldlq", 2, codebook="e8p"))
            out += [core.CompressionSpec("caldera", 2, rank=k, lr_bits=lr_bits, codebook="e8p") for k in ranks]
        if "scalar" not in codebooks:
            continue
        out.append(core.CompressionSpec("rtn", bits))
        # Whole-row grids make RTN a harsh floor (576 and 1536 do not divide by 128); the
        # usual group-64 RTN (+0.5 bpw of fp16 scale/offset) is the floor other tools report.
        out.append(core.CompressionSpec("rtn", bits, group_size=64))
        out.append(core.CompressionSpec("ldlq", bits))
        out += [core.CompressionSpec("caldera", bits, rank=k, lr_bits=lr_bits) for k in ranks]
    return out


def hessian_tag(calib) -> str:
    """File-name suffix of a calibration's Hessian dtype: none for float32 (the names made before the option)."""
    return "" if calib.hessian_dtype == "float32" else f"-{calib.hessian_dtype}"


def cached_hessians(model, calib, cache: Path, on_collect=None) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """Hessians of `calib`, cached under a name keyed on the calibration tokens, their Hessian dtype AND the
    code that collects them (calderalab version, calib/*.py hash): a file made by other calib code is never
    found, and a file whose recorded provenance disagrees is recollected, with the reason printed.
    on_collect(seconds) is called when they were collected now (not read from the file)."""
    provenance = with_hessian_dtype({"calibration": calib.sha256, "calderalab": __version__,
                                     "calib_code": source_hash("calib")}, calib.hessian_dtype)
    path = cache / f"hessians-{calib.sha256[:16]}-calib{provenance['calib_code'][:8]}-v{__version__}{hessian_tag(calib)}.pt"
    if path.exists():
        stored = torch.load(path)
        if isinstance(stored, dict) and stored.get("provenance") == provenance:
            return stored["hessians"]
        found = stored.get("provenance") if isinstance(stored, dict) else None
        print(f"{path.name}: collected with {found}, this code is {provenance}: recollecting")
    t0 = time.perf_counter()
    hessians = list(collect_hessians(model, calib.batches, forward_dtype=calib.forward_dtype))
    seconds = time.perf_counter() - t0
    print(f"collected Hessians of {len(hessians)} layers on {calib.n_tokens} tokens in {seconds:.1f}s")
    if on_collect is not None:
        on_collect(seconds)
    torch.save({"provenance": provenance, "hessians": hessians}, path)
    return hessians


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", default=str(DATA / "test.txt"))
    parser.add_argument("--calib", default=str(DATA / "valid.txt"))
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--stride", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--bits", default="2,3,4")
    parser.add_argument("--ranks", default="32,64")
    parser.add_argument("--methods", default="rtn,ldlq,caldera")
    parser.add_argument("--lr-bits", type=int, default=4, help="bits of the CALDERA factors L and R")
    parser.add_argument("--codebooks", default="scalar",
                        help="backbone quantisers, comma-separated: scalar (group grid), e8p (E8 lattice, 2-bit rows only)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "calderalab" / "bench-ppl"))
    return parser.parse_args()


def row_label(spec: core.CompressionSpec) -> tuple[str, str, str]:
    """(method, bits, rank) columns of a spec's row."""
    method = spec.method if spec.group_size is None else f"{spec.method} g{spec.group_size}"
    method += "" if spec.codebook == "scalar" else f" {spec.codebook}"
    rank = f"{spec.rank}" + (f" (L,R {spec.lr_bits}-bit)" if spec.lr_bits != 4 else "") if spec.rank else "-"
    return method, str(spec.bits), rank


def print_table(rows: list, base, args: argparse.Namespace, calib) -> None:
    """rows: (method, bits, rank, bpw, FidelityResult or None for the baseline)."""
    print()
    print(f"WikiText-2 test, {args.model}, {base.n_scored_tokens} scored tokens in {base.n_windows} windows "
          f"(first {args.max_tokens} tokens), context {args.context}, stride {args.stride}; calibration: {calib.description}. "
          "KL(original ‖ compressed) in nats per scored token over the full vocabulary; top-1: argmax agrees with the "
          "original's. 95% intervals: paired bootstrap over windows (original and compressed on the same tokens).")
    print()
    print("| method | bits | rank | bpw | ppl | vs baseline (95%) | KL (95%) | top-1 (95%) |")
    print("|---|---|---|---|---|---|---|---|")
    for method, bits, rank, bpw, result in rows:
        if result is None:
            print(f"| {method} | {bits} | {rank} | {bpw:.3f} | {base.perplexity:.3f} | - | - | - |")
            continue
        ratio, lo, hi = result.ratio_interval()
        kl, kl_lo, kl_hi = result.kl_interval()
        top1, t_lo, t_hi = result.top1_interval()
        print(f"| {method} | {bits} | {rank} | {bpw:.3f} | {result.perplexity.perplexity:.3f} | "
              f"{100 * (ratio - 1):+.1f}% ({100 * (lo - 1):+.1f} .. {100 * (hi - 1):+.1f}) | "
              f"{kl:.4f} ({kl_lo:.4f} .. {kl_hi:.4f}) | {100 * top1:.1f}% ({100 * t_lo:.1f} .. {100 * t_hi:.1f}) |")


def main() -> None:
    args = parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    model, tokenizer = models.load_model(args.model)
    ids = token_ids(tokenizer, Path(args.data).read_text(encoding="utf-8"), args.max_tokens)
    calib = load_calibration(model, tokenizer, CalibConfig(args.calib, args.calib_samples, args.seq_len))
    hessians = cached_hessians(model, calib, cache)
    n_layers = models.num_layers(model)

    t0 = time.perf_counter()  # the original's perplexity and what KL needs, cached per window set
    reference = load_or_build_reference(model, ids, args.context, args.stride, cache / "reference")
    base = reference.baseline
    print(f"baseline ppl {base.perplexity:.3f} ({time.perf_counter() - t0:.0f}s)")
    rows = [("baseline (fp32)", "-", "-", 32.0, None)]
    methods = set(args.methods.split(","))
    specs = [s for s in configs([int(b) for b in args.bits.split(",")], [int(k) for k in args.ranks.split(",")],
                                args.lr_bits, tuple(args.codebooks.split(","))) if s.method in methods]
    for spec in specs:
        t0 = time.perf_counter()
        store = ArtifactStore(str(cache / f"{n_layers}L-{calib.sha256[:12]}-{spec.key()}"))  # one store per calibration
        report = compress_model(model, plans.uniform_plan(n_layers, spec), store, calib, hessians=hessians)
        seconds_compress = time.perf_counter() - t0
        bpw = sum(m.bpw * m.n_params for m in report.modules) / sum(m.n_params for m in report.modules)
        with models.swapped_weights(model, assemble_weights(store, model)):
            result = measure_against(model, reference, ids)
        rows.append((*row_label(spec), bpw, result))
        print(f"{spec.key():45s} bpw {bpw:.3f}  ppl {result.perplexity.perplexity:.3f}  KL {result.kl_interval()[0]:.4f}  "
              f"corr {report.mean_weight_correlation:.4f}  ({seconds_compress:.0f}s compress"
              f"{f', {report.n_resumed} modules resumed' if report.n_resumed else ''})")
    print_table(rows, base, args, calib)


if __name__ == "__main__":
    main()

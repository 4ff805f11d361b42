"""Relative error and time of CALDERA against its outer / inner iteration counts, on a real model's Hessians.

    PYTHONPATH=src python benchmarks/caldera_iters.py --layers 5,20 --iters 4/3,4/1,4/0,3/1,2/3,2/1

For each chosen decoder layer of the model (default the embedded SmolLM2), its 7 modules are
decomposed at 3-bit rank 32 from Hessians of the default calibration (GSM8K questions, 32 x 256
tokens) once per "outer/inner" setting. Prints per setting the mean relative error over the
modules, its change against the first setting, and the decomposition time per layer. This is
what `experiments.config.default_spec` chose the study's iteration counts from.

--profile N also runs the first setting's decompositions under cProfile and prints the N functions of
most cumulative time (where a layer's decomposition time goes), e.g.

    PYTHONPATH=src python benchmarks/caldera_iters.py --layers 5 --iters 4/3 --rank 64 --profile 12
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--layers", default="5,20")
    parser.add_argument("--iters", default="4/3,4/1,4/0,3/1,2/3,2/1", help="outer/inner settings, comma-separated")
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--profile", type=int, default=0, help="print the N functions of most cumulative time "
                        "of the first setting's decompositions (cProfile); 0: off")
    args = parser.parse_args()
    import cProfile
    import pstats

    from calderalab.calib.capture import collect_hessians
    from calderalab.calib.sources import load_calibration
    from calderalab.core import CompressionSpec, decompose
    from calderalab.experiments.config import CompressSettings
    from calderalab.models import discover_layers, load_model

    settings = [tuple(int(x) for x in s.split("/")) for s in args.iters.split(",")]
    layers = [int(x) for x in args.layers.split(",")]
    model, tokenizer = load_model(args.model)
    calib = load_calibration(model, tokenizer, CompressSettings().calib)
    targets = discover_layers(model)
    errors = {s: [] for s in settings}
    seconds = {s: 0.0 for s in settings}
    profiler = cProfile.Profile()
    for layer, hessians in collect_hessians(model, calib.batches, layers=layers):
        for name, H in hessians.items():
            W = targets[layer].modules[name].weight.detach().float()
            for outer, inner in settings:
                spec = CompressionSpec("caldera", args.bits, rank=args.rank, outer_iters=outer, inner_iters=inner)
                profiling = args.profile and (outer, inner) == settings[0]
                started = time.perf_counter()
                d = profiler.runcall(decompose, W, H, spec) if profiling else decompose(W, H, spec)
                seconds[(outer, inner)] += time.perf_counter() - started
                errors[(outer, inner)].append(d.relative_error(W, H))
        print(f"layer {layer} done", flush=True)
    first = sum(errors[settings[0]]) / len(errors[settings[0]])
    print(f"\n{args.model}, layers {args.layers}, {args.bits}-bit rank {args.rank}, {calib.description}")
    print("| outer/inner | mean relative error | vs first | seconds per layer |")
    print("|---|---|---|---|")
    for s in settings:
        mean = sum(errors[s]) / len(errors[s])
        print(f"| {s[0]}/{s[1]} | {mean:.5f} | {100 * (mean / first - 1):+.1f}% | {seconds[s] / len(layers):.2f} |")
    if args.profile:  # the first setting's seconds above include the profiler's overhead
        print(f"\ncProfile of the {settings[0][0]}/{settings[0][1]} decompositions:")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)


if __name__ == "__main__":
    main()

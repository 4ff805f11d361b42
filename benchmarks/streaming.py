"""Compress a checkpoint larger than the memory the process may use: peak RSS against checkpoint size.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 15 python benchmarks/streaming.py --size-gb 8 --cap-gb 3

1. Builds (once, cached under --cache-dir) a random Llama-architecture checkpoint of about
   --size-gb: hidden 2048, intermediate 5632, 16 heads, vocab 8192, float32 storage, one
   safetensors shard per decoder layer (206 MB each), as many layers as the size asks for
   (--hidden makes the layers smaller, for a quick try).
2. Runs the compression in a child process under a hard memory cap: a `systemd-run --user
   --scope -p MemoryMax=` scope when that works here, else `prlimit --as` (caps the address
   space, which is stricter than RSS). The child opens the checkpoint with `models.open_model`
   (decoder layers stay on the meta device and are read one at a time) and compresses it with
   `compress_model` at 3-bit rank 32 (CALDERA, Q by LDLQ) on a handful of short random-token
   calibration samples, exactly as `calderalab compress` does.
3. Prints checkpoint size, cap, peak RSS, most decoder layers in memory at once, and the wall
   time of each compressed layer.

--compress-layers last:K decomposes only the last K layers; every earlier layer is still read
from disk and run (the calibration activations flow through the whole stack), which shows the
streaming over the full checkpoint when decomposing all of it would take hours on a small CPU.

--job sensitivity runs the layer-sensitivity measurement instead (`calderalab sensitivity --load
layers`): greedy reference answers to --samples random prompts, the noise pass, and the per-layer
runs of the --compress-layers layers, each forward reading every decoder layer as it reaches it.
It prints the same memory figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HIDDEN, HEADS, VOCAB = 2048, 16, 8192  # intermediate = 2.75 x hidden (5632), as in TinyLlama
BYTES_PER_WEIGHT = 4  # float32 storage: what is on disk is what a loaded layer holds


def layer_params(hidden: int) -> int:
    return 4 * hidden * hidden + 3 * hidden * (hidden * 11 // 4) + 2 * hidden


def bench_config(size_gb: float, hidden: int = HIDDEN):
    from transformers import LlamaConfig

    outside = 2 * VOCAB * hidden + hidden  # embedding, lm_head, final norm
    n_layers = max(1, round((size_gb * 1e9 / BYTES_PER_WEIGHT - outside) / layer_params(hidden)))
    return LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_attention_heads=HEADS,
                       num_key_value_heads=HEADS, num_hidden_layers=n_layers, vocab_size=VOCAB,
                       max_position_embeddings=512, tie_word_embeddings=False, architectures=["LlamaForCausalLM"])


def _random_tensors(shapes: dict[str, torch.Size], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Norm weights 1, everything else N(0, 0.02²): the scale of a trained Llama's linears."""
    return {name: torch.ones(shape) if "norm" in name else torch.randn(shape, generator=gen) * 0.02
            for name, shape in shapes.items()}


def _write_checkpoint(folder: Path, config, seed: int) -> None:
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    from calderalab.models import tiny_tokenizer

    with torch.device("meta"):
        shapes = {n: p.shape for n, p in LlamaForCausalLM(config).named_parameters()}
    groups: list[list[str]] = [[n for n in shapes if ".layers." not in n]]
    groups += [[n for n in shapes if n.startswith(f"model.layers.{i}.")] for i in range(config.num_hidden_layers)]
    gen = torch.Generator().manual_seed(seed)
    weight_map, total = {}, 0
    for i, names in enumerate(groups):  # one group in memory at a time
        file_name = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = _random_tensors({n: shapes[n] for n in names}, gen)
        save_file(tensors, str(folder / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file_name))
        total += sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)  # byte-level; the benchmark feeds random token ids


def cached_checkpoint(cache_dir: Path, size_gb: float, hidden: int, seed: int) -> Path:
    """The checkpoint of about `size_gb`, built on first use (atomically: built aside, then renamed)."""
    config = bench_config(size_gb, hidden)
    folder = cache_dir / f"llama-h{hidden}-i{config.intermediate_size}-l{config.num_hidden_layers}-fp32-seed{seed}"
    if (folder / "model.safetensors.index.json").is_file():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=folder.name + ".building-", dir=cache_dir))
    try:
        started = time.perf_counter()
        _write_checkpoint(building, config, seed)
        building.rename(folder)
        print(f"built {folder} in {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


def checkpoint_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def memory_cap_prefix(cap_bytes: int) -> tuple[list[str], str]:
    """(command prefix, description) of the hardest memory cap that works on this machine."""
    scope = ["systemd-run", "--user", "--scope", "--quiet", "-p", f"MemoryMax={cap_bytes}", "-p", "MemorySwapMax=0"]
    if shutil.which("systemd-run") and subprocess.run([*scope, "true"], capture_output=True).returncode == 0:
        return scope, f"systemd-run scope MemoryMax={cap_bytes / 2**30:.2f} GiB"
    if shutil.which("prlimit"):
        return ["prlimit", f"--as={cap_bytes}", "--"], f"prlimit --as={cap_bytes / 2**30:.2f} GiB (address space)"
    raise SystemExit("no way to cap memory here: neither `systemd-run --user --scope` nor `prlimit` works")


def _vm_peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) * 1024
    return 0


def _timed_loads(reader) -> list[float]:
    """Wall-clock times at which each decoder layer starts being read (in order, one read per layer)."""
    times: list[float] = []
    load = reader.load

    def timed(layer, path):
        if not reader.is_loaded(path):
            times.append(time.perf_counter())
            if len(times) > 1:  # progress on stderr, so a run stopped early still tells how far it got
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                print(f"layer {len(times) - 2} done in {times[-1] - times[-2]:.1f} s; peak RSS so far {_gib(peak)}",
                      file=sys.stderr, flush=True)
        load(layer, path)

    reader.load = timed
    return times


def child(args: argparse.Namespace) -> None:
    """Runs under the cap: open lazily, compress, print one JSON line of figures."""
    from calderalab import core, models, plans
    from calderalab.artifacts import ArtifactStore
    from calderalab.calib import CalibData
    from calderalab.compress import compress_model
    from calderalab.models.lazy import layer_weights

    started = time.perf_counter()
    model, _ = models.open_model(args.checkpoint)
    rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    n_layers = models.num_layers(model)
    spec = core.CompressionSpec("caldera", 3, rank=32, outer_iters=args.outer_iters)
    compressed = plans.parse_layer_set(args.compress_layers, n_layers)
    plan = plans.selective_plan(n_layers, spec, tuple(i for i in range(n_layers) if i not in compressed))
    ids = torch.randint(0, VOCAB, (args.calib_samples, args.seq_len), generator=torch.Generator().manual_seed(0))
    reader = layer_weights(model)
    loads = _timed_loads(reader)
    with tempfile.TemporaryDirectory(dir=args.scratch) as out:
        report = compress_model(model, plan, ArtifactStore(out), CalibData(ids, "random token ids", batch_size=2),
                                model_ref="streaming-benchmark",
                                offload_dir=str(Path(out) / "activations") if args.offload else None)
    loads.append(time.perf_counter())  # the end of the last layer's work
    seconds = [b - a for a, b in zip(loads, loads[1:])]  # layer i: read, forward, Hessians, decomposition, store
    print(json.dumps({
        "n_layers": n_layers, "compressed_layers": list(compressed), "n_modules": len(report.modules),
        "compressed_seconds": [seconds[i] for i in compressed],
        "streamed_seconds": [s for i, s in enumerate(seconds) if i not in compressed],
        "rss_after_open": rss_open, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "vm_peak": _vm_peak_bytes(), "peak_layers_in_memory": reader.peak_loaded, "layers_read": reader.n_reads,
        "mean_weight_correlation": report.mean_weight_correlation, "seconds": time.perf_counter() - started,
    }), flush=True)


def child_sensitivity(args: argparse.Namespace) -> None:
    """Runs under the cap: open lazily, profile the chosen layers with streamed forwards, print figures."""
    from calderalab import core, models, plans
    from calderalab.models.lazy import layer_weights
    from calderalab.sensitivity import SensitivityConfig, SensitivitySettings
    from calderalab.sensitivity.pipeline import CompressOnTheFly, profile_prompts

    started = time.perf_counter()
    model, _ = models.open_model(args.checkpoint)
    rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    n_layers = models.num_layers(model)
    layers = plans.parse_layer_set(args.compress_layers, n_layers)
    spec = core.CompressionSpec("caldera", 3, rank=32, outer_iters=args.outer_iters)
    gen = torch.Generator().manual_seed(0)
    calib = [torch.randint(0, VOCAB, (args.calib_samples, args.seq_len), generator=gen)]
    prompts = [torch.randint(0, VOCAB, (16,), generator=gen).tolist() for _ in range(args.samples)]
    settings = SensitivitySettings(n_samples=args.samples, measure=SensitivityConfig(batch_size=args.samples,
                                                                                     max_new_tokens=args.new_tokens))
    stages: dict[str, float] = {}
    last = [time.perf_counter()]

    def stage(name: str) -> None:
        now = time.perf_counter()
        stages[name] = now - last[0]
        last[0] = now
        print(f"{name}: {stages[name]:.0f} s", file=sys.stderr, flush=True)

    run = profile_prompts(model, prompts, settings, CompressOnTheFly(spec, calib), layers=layers, stage=stage)
    reader = layer_weights(model)
    print(json.dumps({
        "n_layers": n_layers, "profiled_layers": list(layers), "stages": stages,
        "kl": {str(r.layer): r.metrics.kl for r in run.profile.rows},
        "rss_after_open": rss_open, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "vm_peak": _vm_peak_bytes(), "peak_layers_in_memory": reader.peak_loaded, "layers_read": reader.n_reads,
        "seconds": time.perf_counter() - started,
    }), flush=True)


def _spread(seconds: list[float]) -> str:
    return f"median {seconds[len(seconds) // 2]:.1f} s (min {seconds[0]:.1f}, max {seconds[-1]:.1f}, n={len(seconds)})"


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def parent(args: argparse.Namespace) -> None:
    folder = cached_checkpoint(Path(args.cache_dir).expanduser(), args.size_gb, args.hidden, args.seed)
    size = checkpoint_bytes(folder)
    cap = int(args.cap_gb * 2**30)
    prefix, how = memory_cap_prefix(cap)
    command = [*prefix, sys.executable, __file__, "--child", "--checkpoint", str(folder), "--scratch", str(folder.parent),
               "--compress-layers", args.compress_layers, "--outer-iters", str(args.outer_iters),
               "--calib-samples", str(args.calib_samples), "--seq-len", str(args.seq_len), *(["--offload"] if args.offload else []),
               "--job", args.job, "--samples", str(args.samples), "--new-tokens", str(args.new_tokens)]
    print(f"{args.job} of {folder} under {how}", file=sys.stderr, flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)  # the child's progress goes to stderr
    if done.returncode != 0:
        sys.exit(f"the capped run failed (exit {done.returncode}) under {how}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if args.job == "sensitivity":
        return print_sensitivity(args, folder, size, cap, how, figures)
    compressed, streamed = sorted(figures["compressed_seconds"]), sorted(figures["streamed_seconds"])
    print(f"| streaming compression, 3-bit rank 32 CALDERA (LDLQ), outer_iters {args.outer_iters} | value |")
    print("|---|---|")
    print(f"| checkpoint | {folder.name}: {_gib(size)} float32, {figures['n_layers']} decoder layers of "
          f"{_gib(layer_params(args.hidden) * BYTES_PER_WEIGHT)} |")
    print(f"| memory cap | {how} = {cap / size:.0%} of the checkpoint |")
    print(f"| layers compressed | {args.compress_layers} ({figures['n_modules']} modules); every layer read: "
          f"{figures['layers_read']} reads |")
    print(f"| calibration | {args.calib_samples} random sequences x {args.seq_len} tokens"
          f"{', activations offloaded to disk' if args.offload else ''} |")
    print(f"| peak RSS | {_gib(figures['peak_rss'])} = {figures['peak_rss'] / size:.0%} of the checkpoint "
          f"(after open: {_gib(figures['rss_after_open'])}; peak address space {_gib(figures['vm_peak'])}) |")
    print(f"| decoder layers in memory at once (most) | {figures['peak_layers_in_memory']} |")
    print(f"| wall time per compressed layer (read, forward, Hessians, decompose, store) | {_spread(compressed)} |")
    if streamed:
        print(f"| wall time per layer only streamed (read, forward) | {_spread(streamed)} |")
    print(f"| total wall time (child) | {figures['seconds']:.0f} s |")
    print(f"| mean weight correlation | {figures['mean_weight_correlation']:.4f} |")


def print_sensitivity(args, folder: Path, size: int, cap: int, how: str, figures: dict) -> None:
    print("| streamed sensitivity (`--load layers`), 3-bit rank 32 CALDERA per layer | value |")
    print("|---|---|")
    print(f"| checkpoint | {folder.name}: {_gib(size)} float32, {figures['n_layers']} decoder layers of "
          f"{_gib(layer_params(args.hidden) * BYTES_PER_WEIGHT)} |")
    print(f"| memory cap | {how} = {cap / size:.0%} of the checkpoint |")
    print(f"| probe | {args.samples} random prompts x 16 tokens, {args.new_tokens} greedy answer tokens; layers profiled "
          f"{args.compress_layers}; {figures['layers_read']} layer reads |")
    print(f"| peak RSS | {_gib(figures['peak_rss'])} = {figures['peak_rss'] / size:.0%} of the checkpoint "
          f"(after open: {_gib(figures['rss_after_open'])}; peak address space {_gib(figures['vm_peak'])}) |")
    print(f"| decoder layers in memory at once (most) | {figures['peak_layers_in_memory']} |")
    print("| wall time per stage | " + ", ".join(f"{k} {v:.0f} s" for k, v in figures["stages"].items()) + " |")
    print(f"| total wall time (child) | {figures['seconds']:.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=8.0, help="checkpoint size to build (default 8)")
    parser.add_argument("--cap-gb", type=float, default=3.0, help="memory cap of the compressing process in GiB")
    parser.add_argument("--cache-dir", default=str(Path("~/.cache/calderalab/bench")))
    parser.add_argument("--compress-layers", default="all", help="layers to decompose: 'all' or a layer set (last:2)")
    parser.add_argument("--outer-iters", type=int, default=1, help="CALDERA outer iterations (default 1: CPU time)")
    parser.add_argument("--calib-samples", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--offload", action="store_true", help="spill calibration activations to disk")
    parser.add_argument("--hidden", type=int, default=HIDDEN, help="hidden size (default 2048; smaller for a quick try)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--job", choices=("compress", "sensitivity"), default="compress")
    parser.add_argument("--samples", type=int, default=4, help="--job sensitivity: probe prompts")
    parser.add_argument("--new-tokens", type=int, default=4, help="--job sensitivity: greedy answer tokens")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compress_layers == "all":
        args.compress_layers = "first:" + str(bench_config(args.size_gb, args.hidden).num_hidden_layers)
    if not args.child:
        parent(args)
    elif args.job == "sensitivity":
        child_sensitivity(args)
    else:
        child(args)


if __name__ == "__main__":
    main()

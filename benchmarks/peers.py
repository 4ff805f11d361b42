"""calderalab against the quantisers a user would otherwise pick, at equal bits, in one run.

    PYTHONPATH=src python benchmarks/peers.py [--quick] [--calib-samples 32] [--peers hqq,quanto]

Every row is the embedded SmolLM2 compressed one way and scored by calderalab's own code
(eval.fidelity: perplexity, KL(original ‖ compressed) per token over the full vocabulary, top-1
agreement, paired window-bootstrap intervals) on the same windows: --windows non-overlapping
--context-token windows of WikiText-2 test. Calibrated methods (calderalab ldlq/caldera, GPTQ,
AWQ, EoRA) all get the same calibration tokens: --calib-samples × --seq-len tokens of valid.txt.

Peers run in their own virtual environments (benchmarks/peer_envs.py) as subprocesses
(benchmarks/peer_worker.py) on one fp32 export of the model, and hand back de-quantised weights.
bpw is every stored bit, counted per peer from its configuration (benchmarks/peer_specs.py) and
for calderalab from its artifacts. Compression wall time: the peer's whole run (loading, its
calibration passes, quantisation); for calderalab the Hessian collection plus compress_model.
Peer outputs, calderalab stores, Hessians and the original's reference are cached under --cache
and reused on rerun (keys: peer, version, config, calibration, worker code).

--kl-plans 2.5,3.3,4.3 adds calderalab's KL plan rows (`compress --plan kl`: LDLQ bits per module by
predicted KL, over the ldlq E8P / scalar candidates this benchmark stores), each paired over windows
with the uniform candidate under it, and a map of each plan's bits per module (<plot>-plans.png).
--tune-steps 32 --tune-kl-plans 4.1 --tune-rank16 4 also tunes the 4.1 plan's store through a 16-bit part
of rank 4 on every module (calderalab tune --rank16; its bits in the row's bpw), paired with its source and
with the untuned plan of the fewest bpw at or above it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import get_args

import torch
from safetensors.torch import load_file

from calderalab import __version__, core, kl_budget, models, plans
from calderalab.artifacts import ArtifactStore, assemble_weights
from calderalab.calib import CalibConfig, load_calibration
from calderalab.calib.sources import HESSIAN_DTYPES
from calderalab.core.spec import SVDS
from calderalab.compress import compress_model
from calderalab.executors import ExecutorName
from calderalab.core.e8p_matrix import BITS as E8P_BITS
from calderalab.calib import fisher
from calderalab.eval.fidelity import FidelityResult, load_or_build_reference, measure_against, paired_kl_line
from calderalab.eval.perplexity import PerplexityResult, token_ids
from calderalab.report.plots import bits_map_plot
from calderalab.tune.run import tune_store
from calderalab.tune.train import TuneConfig
from peer_envs import ensure_env, run_worker
from peer_specs import PEERS, PeerConfig, model_bpw, output_key, peer_configs, unsupported
from peer_table import ORIGINAL, ORIGINAL_METHOD, Row, format_table, leads, parse_table, plot, speed, tuning_windows_plot
from ppl import cached_hessians, hessian_tag

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--data", default=str(DATA / "test.txt"))
    p.add_argument("--calib", default=str(DATA / "valid.txt"))
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--windows", type=int, default=40, help="non-overlapping evaluation windows")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--bits", default="2,3,4")
    p.add_argument("--peers", default=",".join(PEERS), help="peers to run ('' for none)")
    p.add_argument("--eora-ranks", default="64")
    p.add_argument("--methods", default="rtn,ldlq,caldera", help="calderalab methods ('' for none)")
    p.add_argument("--ranks", default="32,64,128", help="calderalab caldera ranks")
    p.add_argument("--groups", default="row,128,64", help="calderalab group sizes ('row' = one per row)")
    p.add_argument("--codebooks", default="scalar,e8p", help="calderalab backbone quantisers: scalar, e8p (E8P lattice; "
                   "residual E8P codebooks at 3 and 4 bits)")
    p.add_argument("--seeds", default="0", help="calderalab's rotation seeds (CompressionSpec.seed: the random "
                   "Hadamard signs), comma-separated; a row per seed, seeds other than 0 labelled ' s<seed>': their "
                   "spread is the run-to-run noise of a compression, which a paired window interval does not see")
    p.add_argument("--margin", type=float, default=0.0, help="run-to-run spread (nats/token) a paired change between "
                   "two separately compressed models must clear (the KL plan lines); the spread over --seeds runs "
                   "measures it (0.0067 for caldera r64 at 3 bits on SmolLM2); 0: the window interval alone")
    p.add_argument("--quick", action="store_true", help="calderalab ldlq and caldera rank 64, row groups only")
    p.add_argument("--tune-steps", type=int, default=0,
                   help="also recovery-tune every caldera store (calderalab.tune, on the calibration windows) "
                        "for this many steps and score the tuned store as a row of its own (0: off)")
    p.add_argument("--tune-lr", default=None, help="tuning learning rates, comma-separated; one tuned row each "
                   "(default: TuneConfig's)")
    p.add_argument("--tune-kl-plans", default="", help="with --tune-steps: also tune the KL plan stores of these "
                   "--kl-plans targets through a 16-bit part of rank --tune-rank16 on every module (their bits count "
                   "in the row's bpw), comma-separated")
    p.add_argument("--tune-rank16", type=int, default=4, help="rank of that 16-bit part (TuneConfig.rank16)")
    p.add_argument("--kl-plans", default="", help="also calderalab's KL plan (compress --plan kl: LDLQ bits per module, "
                   "least predicted KL) at these target bpw, comma-separated, e.g. 2.5,3.3,4.3; its candidates are "
                   "the ldlq E8P / scalar stores of this benchmark")
    p.add_argument("--executor", choices=list(get_args(ExecutorName)), default="local",
                   help="where calderalab's uniform rows decompose (compress --executor); a row of another setting "
                        "than the default is labelled with it and cached apart")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads of each decomposition of those rows "
                   "(compress --threads; default torch's count)")
    p.add_argument("--svd", choices=list(SVDS), default="exact", help="caldera's SVD start (CompressionSpec.svd); "
                   "randomized rows are labelled rsvd and stored apart (their spec key says so)")
    p.add_argument("--hessian-dtype", choices=list(HESSIAN_DTYPES), default="float32",
                   help="dtype of the Hessian capture of those rows (compress --hessian-dtype): bfloat16 runs the "
                        "calibration forwards and XᵀX products in bfloat16 (rows labelled and cached apart)")
    p.add_argument("--cached-only", action="store_true", help="report peers from cached outputs only, run none")
    p.add_argument("--peer-timeout", type=float, default=10800.0, help="seconds one peer run may take (llm-compressor "
                   "AWQ at 4 bits took 3649 s on the 2-core CPU: its scale search forwards every grid point)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "calderalab" / "peers"))
    p.add_argument("--plot", default=str(DOCS / "peers-kl.png"))
    p.add_argument("--replot", default=None, metavar="FILE", help="run nothing: read the first peer table printed in "
                   "FILE (e.g. README.md), print its verdict and speed lines and redraw --plot from it")
    p.add_argument("--pair", nargs=2, default=None, metavar=("BASE", "OTHER"), help="run nothing: the window-paired KL "
                   "line of OTHER against BASE, each a scored row's store name under --cache/calderalab (as the table "
                   "run made it, e.g. 30L-5404b6c04562-caldera-b3-grow-h1-d0.01-r64-lr4-o4-i3-s0) or its score file; "
                   "with --margin, the run-to-run spread the change must clear")
    args = p.parse_args(argv)
    if args.quick:
        args.methods, args.ranks, args.groups = "ldlq,caldera", "64", "row"
    return args


def calderalab_specs(methods: list[str], bits: list[int], ranks: list[int], groups: list[str],
                     codebooks: tuple[str, ...] = ("scalar",)) -> list[core.CompressionSpec]:
    specs = []
    for b in bits:
        if "e8p" in codebooks and b in E8P_BITS:  # the E8P lattice backbone (+ a residual code at 3, 4 bits), a scale per row
            specs += [core.CompressionSpec(m, b, rank=k, codebook="e8p") for m in methods if m != "rtn"
                      for k in (ranks if m == "caldera" else [0])]
        if "scalar" not in codebooks:
            continue
        for g in groups:
            group = None if g == "row" else int(g)
            for method in methods:
                for k in (ranks if method == "caldera" else [0]):
                    specs.append(core.CompressionSpec(method, b, rank=k, group_size=group))
    return specs


def hessians_key(calib) -> str:
    return f"hessians-{calib.sha256[:16]}-v{__version__}{hessian_tag(calib)}"


def timed_hessians(model, calib, cache: Path, timings: "Timings") -> list:
    """ppl.cached_hessians, with the time of collecting them kept: the time of the latest collection (a
    file collected again, say after calib/ changed, times anew; a reused file reports the old time)."""
    return cached_hessians(model, calib, cache, lambda seconds: timings.put(hessians_key(calib), seconds))


def timed_compress(model, plan, store_dir: Path, calib, hessians, timings: "Timings", executor: str = "local",
                   threads: int | None = None):
    """compress_model into store_dir; its wall time kept under the store's name when the store was made
    now from scratch or had no time yet (a resumed store keeps the time it took to make)."""
    t0 = time.perf_counter()
    report = compress_model(model, plan, ArtifactStore(str(store_dir)), calib, hessians=hessians, executor=executor,
                            threads=threads)
    if timings.get(store_dir.name) is None or report.n_resumed == 0:
        timings.put(store_dir.name, time.perf_counter() - t0)
    return report


class Timings:
    """Compression wall times, kept beside the caches they belong to (a reused store still reports
    the time it took to make)."""

    def __init__(self, path: Path):
        self.path = path
        self.times = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str) -> float | None:
        return self.times.get(key)

    def put(self, key: str, seconds: float) -> None:
        self.times[key] = seconds
        self.path.write_text(json.dumps(self.times, indent=1, sort_keys=True))


def shapes_of(model) -> list[tuple[int, int]]:
    return list(models.module_shapes(model).values())


def row_from(result: FidelityResult, **fields) -> Row:
    kl, kl_lo, kl_hi = result.kl_interval()
    return Row(ppl=result.perplexity.perplexity, ppl_ratio=result.ratio_interval()[0], kl=kl, kl_lo=kl_lo, kl_hi=kl_hi,
               top1=result.top1_interval()[0], **fields)


SCORE_SEP = "-score-"


def score_path(store_dir: Path, reference) -> Path:
    """Where the score of the store at `store_dir` against `reference` is cached: beside the store."""
    return store_dir.parent / f"{store_dir.name}{SCORE_SEP}{reference.key[:16]}.json"


def store_name(score: Path) -> str:
    """The name of the store a score file belongs to (`score_path`'s inverse)."""
    return score.name.split(SCORE_SEP)[0]


def cached_result(path: Path, measure, fresh: bool = False) -> FidelityResult:
    """The FidelityResult stored at `path`, or measure() now and store it. Scoring a row costs a full
    pass over the windows, so a rerun that changes nothing only re-prints. fresh=True re-measures."""
    if path.exists() and not fresh:
        d = json.loads(path.read_text())
        to_result = lambda f: PerplexityResult(**{**f, "window_nll": tuple(f["window_nll"]), "window_tokens": tuple(f["window_tokens"])})
        return FidelityResult(to_result(d["perplexity"]), to_result(d["baseline"]), tuple(d["window_kl"]), tuple(d["window_top1"]))
    result = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(result)))
    return result


def measure_state(model, state: dict[str, torch.Tensor], reference, ids) -> FidelityResult:
    """Score the model with `state` (decoder tensors from a peer) loaded, then put the original back."""
    own = model.state_dict()
    # llm-compressor leaves its quantisation parameters beside each weight (weight_scale,
    # weight_zero_point); the weight itself is already de-quantised, so they are dropped here
    state = {k: v for k, v in state.items() if k in own or not k.rsplit(".", 1)[-1].startswith("weight_")}
    unknown = sorted(set(state) - set(own))
    missing = sorted(k for k in own if k.startswith("model.layers.") and k.endswith("proj.weight") and k not in state)
    if unknown or missing:
        raise ValueError(f"peer output does not match the model: unknown {unknown[:3]}, missing {missing[:3]}")
    original = {k: own[k].clone() for k in state}
    try:
        model.load_state_dict(state, strict=False)
        return measure_against(model, reference, ids)
    finally:
        model.load_state_dict(original, strict=False)


def worker_code_hash(peer: str) -> str:
    """sha256 of the worker code that makes `peer`'s output: its runner plus the shared helpers, so
    editing one peer's runner does not invalidate the others' cached outputs."""
    import inspect

    import peer_worker as w

    parts = [w.load_fp32, w.target_linears, w.decoder_state, w._plain_linears, w.calibration_rows, w.main, w.RUNNERS[peer]]
    parts += [w.gptq_weights, w.eora_delta] if peer.startswith("gptq") else []
    return hashlib.sha256("".join(inspect.getsource(f) for f in parts).encode()).hexdigest()[:12]


def gptq_base(config: PeerConfig, cache: Path, version: str, model: str, calib_sha: str) -> Path | None:
    """For a gptq-eora row: the finished gptqmodel output of the same bits and group, whose quantised
    model EoRA is fitted to (and whose time the row adds); None for other peers or when missing."""
    if config.peer != "gptq-eora":
        return None
    base_config = PeerConfig("gptqmodel", config.bits, config.group_size)
    base = cache / "outputs" / output_key(base_config, version, model, calib_sha, worker_code_hash("gptqmodel"))
    return base if (base / "meta.json").exists() and (base / "gptq").is_dir() else None


def peer_rows(args, model, tokenizer, calib, reference, ids, cache: Path) -> list[Row]:
    checkpoint = cache / "checkpoints" / f"{args.model}-fp32"
    if not (checkpoint / "config.json").exists():
        models.export_checkpoint(model, tokenizer, checkpoint, overwrite=True)
    calib_path = cache / "calibration" / f"{calib.sha256[:16]}.pt"
    calib_path.parent.mkdir(parents=True, exist_ok=True)
    if not calib_path.exists():
        torch.save(calib.token_ids.contiguous(), calib_path)
    env = {**os.environ, "GPTQMODEL_CPU_WORKERS": "2", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)  # the peer's venv must not see calderalab's sources or the main venv
    bits = [int(b) for b in args.bits.split(",")]
    if not args.peers:
        return []
    rows = [Row(method=name, series=name, bits=str(b), group=str(PEERS[name].default_group), rank="-", version="-",
                failure=reason) for name, b, reason in unsupported(args.peers.split(","), bits)]
    for config in peer_configs(args.peers.split(","), bits, [int(r) for r in args.eora_ranks.split(",")]):
        peer = PEERS[config.peer]
        fields = dict(method=config.peer, series=f"{config.peer} g{config.group_size}" + (f" r{config.rank}" if config.rank else ""),
                      bits=str(config.bits), group=str(config.group_size), rank=str(config.rank or "-"))
        venv = ensure_env(config.peer, cache)
        if venv.reason:
            rows.append(Row(version="-", failure=venv.reason, **fields))
            continue
        worker_sha = worker_code_hash(config.peer)
        out = cache / "outputs" / output_key(config, venv.version, args.model, calib.sha256, worker_sha)
        base = gptq_base(config, cache, venv.version, args.model, calib.sha256)
        if config.rank and base is None:
            rows.append(Row(version=venv.version, failure="needs the gptqmodel row of the same bits (run it too)", **fields))
            continue
        if not (out / "meta.json").exists() and args.cached_only:
            rows.append(Row(version=venv.version, failure="not run in this invocation (--cached-only, no cached output)", **fields))
            continue
        if not (out / "meta.json").exists():
            cmd = ["--peer", config.peer, "--bits", str(config.bits), "--group-size", str(config.group_size),
                   "--rank", str(config.rank), "--model-dir", str(checkpoint), "--out", str(out)]
            cmd += ["--calib", str(calib_path)] if peer.calibrated else []
            cmd += ["--quantized-dir", str(base / "gptq")] if base else []
            print(f"running {config.label()} ({peer.package} {venv.version}) ...", flush=True)
            reason = run_worker(venv.python, cmd, cache / f"{config.label().replace(' ', '-')}.log", env, args.peer_timeout)
            if reason:
                rows.append(Row(version=venv.version, failure=reason, **fields))
                continue
        meta = json.loads((out / "meta.json").read_text())
        result = cached_result(out / f"score-{reference.key[:16]}.json",
                               lambda: measure_state(model, load_file(str(out / "weights.safetensors")), reference, ids))
        rows.append(row_from(result, version=f"{peer.package} {meta['version']}", bpw=model_bpw(config, shapes_of(model)),
                             seconds=meta["seconds"] + (json.loads((base / "meta.json").read_text())["seconds"] if base else 0.0),
                             **fields))
        print(format_table([rows[-1]]).splitlines()[-1], flush=True)
    return rows


def tune_lrs(args) -> list[float]:
    """The --tune-lr values; TuneConfig's default when none is given."""
    return [float(lr) for lr in args.tune_lr.split(",")] if args.tune_lr else [TuneConfig().lr]


def run_tag(args) -> tuple[str, str]:
    """(label suffix, store-name suffix) of a non-default --executor / --threads / --hessian-dtype: such a row is timed
    apart (its own store) and named apart (its own series, which `speed` also reads)."""
    parts = []
    if args.executor != "local" or args.threads is not None:
        parts.append(args.executor + ("" if args.threads is None else f" t{args.threads}"))
    if args.hessian_dtype != "float32":
        parts.append(f"H {args.hessian_dtype}")
    if not parts:
        return "", ""
    return f" [{', '.join(parts)}]", "".join("-" + p.replace(" ", "-") for p in parts)


def calderalab_rows(args, model, calib, reference, ids, cache: Path, timings: Timings
                    ) -> tuple[list[Row], list[tuple[str, FidelityResult, FidelityResult]]]:
    """The calderalab rows, and per tuned row (its label, the source's scores, its scores)."""
    if not args.methods:
        return [], []
    calib = dataclasses.replace(calib, hessian_dtype=args.hessian_dtype)  # these rows' Hessians only
    key = hessians_key(calib)
    if not args.cached_only:
        hessians = timed_hessians(model, calib, cache, timings)
    n_layers = models.num_layers(model)
    rows, tunings = [], []
    specs = [dataclasses.replace(spec, seed=seed, svd=args.svd) for seed in [int(x) for x in args.seeds.split(",")]
             for spec in calderalab_specs(args.methods.split(","), [int(b) for b in args.bits.split(",")],
                                          [int(k) for k in args.ranks.split(",")], args.groups.split(","),
                                          tuple(args.codebooks.split(",")))]
    tag, store_tag = run_tag(args)
    for spec in specs:
        group = "row" if spec.group_size is None else str(spec.group_size)
        book = "" if spec.codebook == "scalar" else f" {spec.codebook}"
        variant = f" s{spec.seed}" if spec.seed else ""
        variant += " rsvd" if spec.method == "caldera" and spec.svd == "randomized" else ""
        fields = dict(method=spec.method + book + variant + tag,
                      series=f"{spec.method}{f' r{spec.rank}' if spec.rank else ''} {group}{book}{variant}{tag}",
                      bits=str(spec.bits), group=group, rank=str(spec.rank or "-"), version=f"calderalab {__version__}")
        try:
            [core.expected_bpw(spec, m, n) for m, n in shapes_of(model)]
        except ValueError as err:
            rows.append(Row(failure=str(err), **fields))
            continue
        store_dir = cache / "calderalab" / f"{n_layers}L-{calib.sha256[:12]}-{spec.key()}{store_tag}"
        score = score_path(store_dir, reference)
        if args.cached_only:  # the honest bpw formula the artifacts follow (core.bpw), no store read
            if not score.exists():  # a grid point never run is left out of the table, and counted
                print(f"--cached-only: {store_dir.name} has no cached score; left out", flush=True)
                continue
            shapes = shapes_of(model)
            bpw = sum(core.expected_bpw(spec, m, n) * m * n for m, n in shapes) / sum(m * n for m, n in shapes)
            result = cached_result(score, None)
        else:
            report = timed_compress(model, plans.uniform_plan(n_layers, spec), store_dir, calib, hessians, timings,
                                    args.executor, args.threads)
            bpw = sum(m.bpw * m.n_params for m in report.modules) / sum(m.n_params for m in report.modules)
            def measure():
                with models.swapped_weights(model, assemble_weights(ArtifactStore(str(store_dir)), model)):
                    return measure_against(model, reference, ids)
            # a store any of whose modules were (re)made now is scored afresh, never read from an old score
            result = cached_result(score, measure, report.n_resumed < len(report.modules))
        rows.append(row_from(result, bpw=bpw, seconds=timings.get(store_dir.name) + timings.get(key), **fields))
        if not args.cached_only:
            print(format_table([rows[-1]]).splitlines()[-1], flush=True)
        for lr in tune_lrs(args) if args.tune_steps and spec.rank else []:
            tuned = tuned_row(args, lr, model, calib, reference, ids, store_dir, bpw, timings,
                              timings.get(store_dir.name) + timings.get(key), fields)
            if tuned is not None:
                rows.append(tuned[0])
                tunings.append((f"{tuned[0].series} b{fields['bits']}", result, tuned[1]))
                if not args.cached_only:
                    print(format_table([rows[-1]]).splitlines()[-1], flush=True)
    return rows, tunings


def sensitivity_timing_key(calib, config) -> str:
    """The cached Fisher's name (and its time's key): calibration, settings and calib/fisher.py's code."""
    code = hashlib.sha256(Path(fisher.__file__).read_bytes()).hexdigest()
    return "fisher-" + hashlib.sha256(json.dumps([calib.sha256, dataclasses.asdict(config), code]).encode()).hexdigest()[:16]


def cached_sensitivity(model, calib, config, cache: Path, timings: Timings) -> dict:
    """calib.fisher.output_sensitivity on the calibration set, cached by calibration, settings and code."""
    path = cache / f"{sensitivity_timing_key(calib, config)}.json"
    if path.exists():
        return {(l, n): v for l, n, v in json.loads(path.read_text())}
    t0 = time.perf_counter()
    sensitivity = fisher.output_sensitivity(model, calib.token_ids, config)
    timings.put(path.stem, time.perf_counter() - t0)
    path.write_text(json.dumps([[l, n, v] for (l, n), v in sensitivity.items()]))
    return sensitivity


def plan_bits(store_dir: Path) -> dict[tuple[int, str], int]:
    """{(layer, module): Q bits} of a store holding one spec per module (a KL plan's own store)."""
    return {(e.layer, e.module): int(e.spec["bits"]) for e in ArtifactStore(str(store_dir)).manifest().modules.values()}


def kl_plan_rows(args, model, calib, reference, ids, cache: Path, timings: Timings
                 ) -> tuple[list[Row], list[str], list[Path], list[tuple[str, FidelityResult, FidelityResult]]]:
    """One row per --kl-plans target: the KL plan over the ldlq candidates (kl_budget.candidate_specs,
    each the uniform store this benchmark also scores), compressed into a store of its own and scored.
    Its time: Hessians + Fisher + every candidate + the plan's own compression. The --tune-kl-plans targets
    also get a row for the plan store tuned through a 16-bit part of rank --tune-rank16 (`tuned_row`).
    Returns the rows, a line per row pairing it with the uniform candidate of the most bpw at or under the
    plan's (when that is scored) and per tuned row one against the untuned plan of the fewest bpw at or above
    its own, each untuned row's store (in the order of the untuned rows), and per tuned row (label, source
    scores, tuned scores) as `calderalab_rows` gives them (main prints `tuning_line` and draws them)."""
    targets = [float(t) for t in args.kl_plans.split(",") if t.strip()]
    if not targets:
        return [], [], [], []
    n_layers, shapes = models.num_layers(model), models.module_shapes(model)
    root = cache / "calderalab"
    prefix = f"{n_layers}L-{calib.sha256[:12]}"
    hessians = None
    rows, lines, stores = [], [], []
    plain, tuned_plans = {}, []  # target -> (bpw, scores) of the untuned plan; the tuned plan rows
    tuned_targets = {float(t) for t in args.tune_kl_plans.split(",") if t.strip()}
    if bad := sorted(tuned_targets - set(targets)):
        raise ValueError(f"--tune-kl-plans {bad} are not among --kl-plans {targets}: a plan is tuned only where it is made")
    for target in targets:
        settings = kl_budget.KLBudgetSettings(target)
        fields = dict(method="ldlq kl-plan", series="ldlq kl-plan", bits=f"{target:g}", group="row", rank="-",
                      version=f"calderalab {__version__}")
        record = root / f"{prefix}-klplan-{target:g}-{hashlib.sha256(repr(settings).encode()).hexdigest()[:12]}.json"
        if args.cached_only:
            if not record.exists():
                print(f"--cached-only: {record.name} not made yet; left out", flush=True)
                continue
            made = json.loads(record.read_text())
        else:
            hessians = hessians or timed_hessians(model, calib, cache, timings)
            sensitivity = cached_sensitivity(model, calib, settings.fisher, cache, timings)
            compress_candidate = lambda plan: timed_compress(  # noqa: E731  into the uniform store the table scores
                model, plan, root / f"{prefix}-{plan.spec(0, 'q').key()}", calib, hessians, timings)
            chosen = kl_budget.kl_budget_plan(model, settings, sensitivity, hessians, compress_candidate)
            store_dir = root / f"{prefix}-klplan-{chosen.plan.hash()[:16]}"
            report = timed_compress(model, chosen.plan, store_dir, calib, hessians, timings)
            seconds = sum(timings.get(name) for name in [hessians_key(calib), sensitivity_timing_key(calib, settings.fisher),
                                                         store_dir.name] +
                          [f"{prefix}-{spec.key()}" for spec in kl_budget.candidate_specs(settings).values()])
            made = {"store": store_dir.name, "bpw": chosen.bpw, "predicted_kl": chosen.predicted_kl,
                    "seconds": seconds,
                    "mix": dict(sorted(Counter(n for _, n in chosen.choice).items()))}
            score = score_path(store_dir, reference)
            def measure():
                with models.swapped_weights(model, assemble_weights(ArtifactStore(str(store_dir)), model)):
                    return measure_against(model, reference, ids)
            cached_result(score, measure, report.n_resumed < len(report.modules))
            record.write_text(json.dumps(made, indent=1))
        result = cached_result(score_path(root / made["store"], reference), None)
        rows.append(row_from(result, bpw=made["bpw"], seconds=made["seconds"], **fields))
        stores.append(root / made["store"])
        plain[target] = (made["bpw"], result)
        print(f"KL plan {target:g}: {made['bpw']:.3f} bpw, predicted KL {made['predicted_kl']:.4f}, measured "
              f"{rows[-1].kl:.4f}; modules per candidate {made['mix']}", flush=True)
        below = [(kl_budget.uniform_bpw(s, shapes), s) for s in kl_budget.candidate_specs(settings).values()]
        below = [(b, s) for b, s in below if b <= made["bpw"]]
        bpw, spec = max(below, key=lambda pair: pair[0]) if below else (0.0, None)
        base = score_path(root / f"{prefix}-{spec.key()}", reference) if spec else None
        if base is not None and base.exists():
            lines.append(paired_kl_line(f"KL plan {target:g} ({made['bpw']:.3f} bpw) against uniform {spec.key()} ({bpw:.3f} bpw)",
                                        cached_result(base, None), result, args.margin))
        for lr in tune_lrs(args) if args.tune_steps and target in tuned_targets else []:
            tuned = tuned_row(args, lr, model, calib, reference, ids, root / made["store"], made["bpw"], timings,
                              made["seconds"], fields, args.tune_rank16)
            if tuned is not None:
                rows.append(tuned[0])
                tuned_plans.append((tuned[0], tuned[1], target, result))
    tunings = [(f"{row.series} {target:g}", source, tuned_result) for row, tuned_result, target, source in tuned_plans]
    for row, tuned_result, target, source in tuned_plans:
        # at equal or more bits: the untuned KL plan of the fewest bpw at or above the tuned row's own
        over = [(bpw, t) for t, (bpw, _) in plain.items() if bpw >= row.bpw - 1e-9]
        if over:
            bpw, t = min(over)
            lines.append(paired_kl_line(f"{row.series} {target:g} ({row.bpw:.3f} bpw) against KL plan {t:g} ({bpw:.3f} bpw)",
                                        plain[t][1], tuned_result, args.margin))
    return rows, lines, stores, tunings


def tuning_line(series: str, source: FidelityResult, tuned: FidelityResult) -> str:
    """The tuned store's KL change against its source (`paired_kl_line`)."""
    return paired_kl_line(f"tuning {series}", source, tuned)


def tuned_paths(args, lr: float, store_dir: Path, reference, rank16: int = 0) -> tuple[TuneConfig, Path, Path]:
    """(tuning settings, tuned store dir, its score file), keyed by the settings and the source's manifest."""
    config = TuneConfig(steps=args.tune_steps, lr=lr, rank16=rank16)
    manifest_hash = ArtifactStore(str(store_dir)).manifest().content_hash()
    digest = hashlib.sha256(json.dumps([config.to_dict(), manifest_hash], sort_keys=True).encode()).hexdigest()
    out_dir = store_dir.parent / f"{store_dir.name}-tune-{digest[:12]}"
    return config, out_dir, score_path(out_dir, reference)


def store_bpw(store_dir: Path) -> float:
    """Every stored bit per weight of a store holding one spec per module (the manifest's per-module bpw)."""
    entries = ArtifactStore(str(store_dir)).manifest().modules.values()
    return sum(e.metrics["bpw"] * e.shape[0] * e.shape[1] for e in entries) / sum(e.shape[0] * e.shape[1] for e in entries)


def tuned_row(args, lr: float, model, calib, reference, ids, store_dir: Path, bpw: float, timings: Timings,
              source_seconds: float, fields: dict, rank16: int = 0) -> tuple[Row, FidelityResult] | None:
    """The store at `store_dir` recovery-tuned on the calibration windows, scored like every row.

    Its cache key is the tuning settings and the source store's manifest, so a source made anew is
    tuned anew. Without rank16 tuning keeps every bit width (Q frozen, L and R re-quantised): the bpw is
    the source's; with it the tuned store's own (a 16-bit part of that rank on every module).
    Its time: source_seconds (what making the source took) plus the tuning's.
    Returns the row and its scores; None under --cached-only when it was never tuned."""
    config, out_dir, score = tuned_paths(args, lr, store_dir, reference, rank16)
    label = (f" +tune r16 {rank16}" if rank16 else " +tune") + f" lr {lr:g}"
    tuned_fields = {**fields, "method": fields["method"] + label, "series": fields["series"] + label}
    if args.cached_only and not score.exists():  # never tuned: left out, as a grid point never run
        print(f"--cached-only: {out_dir.name} has no cached score; left out", flush=True)
        return None
    if not score.exists():
        source = ArtifactStore(str(store_dir))
        if out_dir.exists():  # an interrupted tuning: its store is incomplete, start it again
            shutil.rmtree(out_dir)
        t0 = time.perf_counter()
        tune_store(model, source, ArtifactStore(str(out_dir)), calib, config,
                   progress=lambda i, n, loss: print(f"  tune {out_dir.name}: step {i}/{n}, KL {loss:.4f}", flush=True))
        timings.put(out_dir.name, time.perf_counter() - t0)

    def measure():
        with models.swapped_weights(model, assemble_weights(ArtifactStore(str(out_dir)), model)):
            return measure_against(model, reference, ids)
    result = cached_result(score, measure)
    return row_from(result, bpw=store_bpw(out_dir) if rank16 else bpw, seconds=source_seconds + timings.get(out_dir.name),
                    **tuned_fields), result


def plot_title(args, n_windows: int) -> str:
    return (f"{args.model}, WikiText-2 test, {n_windows}×{args.context} tokens; "
            f"calibration {args.calib_samples}×{args.seq_len} tokens of valid.txt")


def replot(args) -> None:
    """--replot: the verdicts and the plot of a published table, whose runs' caches may be gone."""
    rows = parse_table(Path(args.replot).read_text(encoding="utf-8"))
    print(f"{len(rows)} rows read from {args.replot}")
    print("\n".join(leads(rows) + speed(rows)))
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    plot(rows, args.plot, plot_title(args, args.windows) + f" (drawn from the table in {Path(args.replot).name})")
    print(f"plot: {args.plot}")


def score_file(name: str, cache: Path) -> Path:
    """The score file a --pair argument names: a path, or the one score of a store under cache/calderalab."""
    if Path(name).is_file():
        return Path(name)
    found = sorted((cache / "calderalab").glob(f"{name}{SCORE_SEP}*.json"))
    if len(found) != 1:
        known = sorted(store_name(p) for p in (cache / "calderalab").glob(f"*{SCORE_SEP}*.json"))
        raise SystemExit(f"--pair {name!r}: {'no' if not found else len(found)} score files of that store under "
                         f"{cache / 'calderalab'}; scored stores: {', '.join(known) or 'none'}")
    return found[0]


def pair(args) -> str:
    """--pair: OTHER's KL against BASE's over the same windows, from their cached scores (nothing run)."""
    cache = Path(args.cache).expanduser()
    base, other = (score_file(name, cache) for name in args.pair)
    return paired_kl_line(f"{store_name(other)} against {store_name(base)}", cached_result(base, None), cached_result(other, None),
                          args.margin)


def main() -> None:
    args = parse_args()
    if args.replot:
        return replot(args)
    if args.pair:
        return print(pair(args))
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    model, tokenizer = models.load_model(args.model)
    ids = token_ids(tokenizer, Path(args.data).read_text(encoding="utf-8"), args.windows * args.context)
    reference = load_or_build_reference(model, ids, args.context, args.context, cache / "reference")
    calib = load_calibration(model, tokenizer, CalibConfig(args.calib, args.calib_samples, args.seq_len))
    print(f"original ppl {reference.baseline.perplexity:.3f} on {reference.baseline.n_scored_tokens} tokens "
          f"in {reference.baseline.n_windows} windows; calibration: {calib.description}", flush=True)
    timings = Timings(cache / "timings.json")
    rows = [Row(method=ORIGINAL_METHOD, series=ORIGINAL, bits="-", group="-", rank="-", version="-", bpw=32.0,
                ppl=reference.baseline.perplexity, ppl_ratio=1.0, kl=0.0, kl_lo=0.0, kl_hi=0.0, top1=1.0)]
    ours, tunings = calderalab_rows(args, model, calib, reference, ids, cache, timings)
    rows += ours
    planned, kl_lines, plan_stores, plan_tunings = kl_plan_rows(args, model, calib, reference, ids, cache, timings)
    rows += planned
    tunings += plan_tunings
    if planned:
        path = Path(args.plot).with_name(Path(args.plot).stem + "-plans.png")
        bits_map_plot({f"KL plan {r.bits} ({r.bpw:.3f} bpw, KL {r.kl:.4f})": plan_bits(store)
                       for r, store in zip([r for r in planned if r.method == "ldlq kl-plan"], plan_stores)}, path,
                      f"{args.model}: Q bits per module chosen by the KL plan (E8P at 2-4 bits, scalar grid above)")
        print(f"KL plan map: {path}")
    rows += peer_rows(args, model, tokenizer, calib, reference, ids, cache)
    print()
    print(f"{args.model}, WikiText-2 test: {reference.baseline.n_windows} windows × {args.context} tokens "
          f"({reference.baseline.n_scored_tokens} scored); calibration {calib.description}; torch {torch.__version__}")
    print(format_table(rows))
    print()
    print("\n".join(leads(rows) + speed(rows) + [tuning_line(*t) for t in tunings] + kl_lines))
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    plot(rows, args.plot, plot_title(args, reference.baseline.n_windows))
    print(f"plot: {args.plot}")
    if tunings:
        path = Path(args.plot).with_name(Path(args.plot).stem + "-tuning.png")
        tuning_windows_plot(tunings, str(path), f"{args.model}: KL per test window ({args.context} tokens), "
                                        f"tuned store against its source; {args.tune_steps} steps")
        print(f"tuning plot: {path}")


if __name__ == "__main__":
    main()

"""The peers of benchmarks/peers.py: what each one installs, which bit widths and groups it supports,
and how many bits it stores per weight. Pure: no torch, no subprocesses, so tests can check it.

bpw accounting, the same rule for every row (calderalab's core.bpw counts its own rows this way):
every stored bit per weight of a (d_out, d_in) matrix, codes at b bits (packed), every scale and
every floating zero/offset at 16 bits (the fp16/bf16 a checkpoint of a half-precision model
stores; the peers here run on the fp32 checkpoint and may keep fp32 scales in memory, which only
helps them), integer zero points at b bits, index tensors at their stored width. Per peer:

  hqq        b + 32/g                 fp16 scale + fp16 zero per group (HQQ's default: neither quantised)
  torchao    b + (16 + b)/g           asymmetric IntxWeightOnly: scale + integer zero point per group
  quanto     b + 32/g                 scale + floating shift per group; only qint2 / qint4, group 128
                                      where it divides d_in, else 96 or 64 (see group_for)
  llmc-gptq  b + 16/g + 64/(m·n)      symmetric int: scale per group, weight_shape (2 × int32) per matrix
  llmc-awq   b + (16 + b)/g + 64/(m·n) asymmetric int: scale + packed zero point per group
  gptqmodel  b + (16 + b)/g + 32/m    GPTQ v1 format: scales, packed qzeros (stored even when
                                      symmetric), g_idx int32 per input column
  gptq-eora  gptqmodel + 16·r(m + n)/(m·n)   the EoRA factors A (r, n) and B (m, r) in fp16
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class PeerConfig:
    """One peer row: the peer, its bit width, its group size, the EoRA rank (0 for none)."""

    peer: str
    bits: int
    group_size: int
    rank: int = 0

    def __post_init__(self) -> None:
        if self.peer not in PEERS:
            raise ValueError(f"unknown peer {self.peer!r}; known: {sorted(PEERS)}")
        peer = PEERS[self.peer]
        if self.bits not in peer.bits:
            raise ValueError(f"{self.peer} supports bits {peer.bits}, not {self.bits}")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if (self.rank > 0) != peer.has_rank:
            raise ValueError(f"{self.peer} {'needs a rank >= 1' if peer.has_rank else 'takes no rank'}, got {self.rank}")

    def label(self) -> str:
        return f"{self.peer} b{self.bits} g{self.group_size}" + (f" r{self.rank}" if self.rank else "")


@dataclass(frozen=True)
class Peer:
    """How to install and account for one peer.

    requirements: pip specs installed with torch pinned (torch==2.13.0 in a constraints file);
    no_deps: specs installed first with --no-deps (their declared dependencies would pull another
    torch), then `requirements` fill in what they need; package: the distribution whose version
    the table reports; venv: the environment it runs in (peers that share one pin share it).
    """

    name: str
    package: str
    venv: str
    requirements: tuple[str, ...]
    bits: tuple[int, ...]
    default_group: int
    calibrated: bool
    zero_bits: str  # "float" (16-bit zero), "int" (b-bit zero point) or "none"
    extra_matrix_bits: int = 0  # per matrix (shape records)
    index_bits_per_column: int = 0  # per input column (g_idx)
    has_rank: bool = False
    no_deps: tuple[str, ...] = field(default=())


SCALE_BITS = 16
FACTOR_BITS = 16
_HF = ("transformers", "safetensors", "accelerate")
_GPTQMODEL_DEPS = _HF + ("datasets", "pyarrow", "protobuf", "threadpoolctl", "pillow", "tokenicer", "logbar",
                         "device-smi", "pypcre", "huggingface_hub", "dill", "defuser", "maturin", "random_word")

PEERS: dict[str, Peer] = {p.name: p for p in (
    Peer("hqq", "hqq", "hqq", ("hqq",) + _HF, (2, 3, 4), 64, False, "float"),
    Peer("torchao", "torchao", "torchao", ("torchao",) + _HF, (2, 3, 4), 64, False, "int"),
    Peer("quanto", "optimum-quanto", "quanto", ("optimum-quanto",) + _HF, (2, 4), 128, False, "float"),
    Peer("llmc-gptq", "llmcompressor", "llmc", ("llmcompressor",), (2, 3, 4), 64, True, "none", extra_matrix_bits=64),
    Peer("llmc-awq", "llmcompressor", "llmc", ("llmcompressor",), (2, 3, 4), 64, True, "int", extra_matrix_bits=64),
    Peer("gptqmodel", "gptqmodel", "gptqmodel", _GPTQMODEL_DEPS, (2, 3, 4), 64, True, "int",
         index_bits_per_column=32, no_deps=("gptqmodel",)),
    Peer("gptq-eora", "gptqmodel", "gptqmodel", _GPTQMODEL_DEPS, (2, 3, 4), 64, True, "int",
         index_bits_per_column=32, has_rank=True, no_deps=("gptqmodel",)),
)}


def matrix_bpw(config: PeerConfig, d_out: int, d_in: int) -> float:
    """Every stored bit of one (d_out, d_in) weight under `config`, per weight (see the module docstring)."""
    peer, b, g = PEERS[config.peer], config.bits, group_for(config, d_in)
    zero = {"float": SCALE_BITS, "int": b, "none": 0}[peer.zero_bits]
    n_groups = d_out * -(-d_in // g)  # a last partial group still stores its scale
    bits = b * d_out * d_in + (SCALE_BITS + zero) * n_groups + peer.extra_matrix_bits
    bits += peer.index_bits_per_column * d_in
    bits += FACTOR_BITS * config.rank * (d_out + d_in)
    return bits / (d_out * d_in)


def group_for(config: PeerConfig, d_in: int) -> int:
    """The group size the peer really uses on a row of d_in weights. quanto (nn/qmodule.py) starts
    at 128 and steps down by 32 (to no less than 64) until it divides d_in, else one group per row
    (also when d_in <= 128): SmolLM2's 576-wide rows get groups of 96, its 1536-wide rows 128."""
    if config.peer != "quanto":
        return config.group_size
    g = config.group_size
    if d_in <= g:
        return d_in
    while d_in % g and g > 32:
        g -= 32
    return g if d_in % g == 0 else d_in


def model_bpw(config: PeerConfig, shapes: list[tuple[int, int]]) -> float:
    """bpw over the compressed matrices, weighted by parameter count: Σ bits / Σ weights."""
    if not shapes:
        raise ValueError("model_bpw needs at least one (d_out, d_in) shape")
    total = sum(matrix_bpw(config, m, n) * m * n for m, n in shapes)
    return total / sum(m * n for m, n in shapes)


def output_key(config: PeerConfig, version: str, model: str, calib_sha: str | None, worker_sha: str) -> str:
    """Directory name of a peer's cached output: peer, version, config, model, calibration (calibrated
    peers only) and the worker code that made it. Any change there makes a new key, so a rerun
    reuses exactly what this code with these settings would produce."""
    payload = {"config": asdict(config), "version": version, "model": model, "worker": worker_sha,
               "calibration": calib_sha if PEERS[config.peer].calibrated else None}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return f"{config.peer}-{version}-b{config.bits}-g{config.group_size}-r{config.rank}-{digest}"


def peer_configs(peers: list[str], bits: list[int], ranks: list[int]) -> list[PeerConfig]:
    """Rows for each peer at each bit width it supports, at its group size; gptq-eora once per rank."""
    out = []
    for name in peers:
        if name not in PEERS:
            raise ValueError(f"unknown peer {name!r}; known: {sorted(PEERS)}")
        peer = PEERS[name]
        for b in bits:
            if b not in peer.bits:
                continue
            for r in (ranks if peer.has_rank else [0]):
                out.append(PeerConfig(name, b, peer.default_group, r))
    return out


def unsupported(peers: list[str], bits: list[int]) -> list[tuple[str, int, str]]:
    """(peer, bits, reason) for each bit width a peer has no format for, so the gap shows in the table."""
    return [(name, b, f"{PEERS[name].package} has no {b}-bit weight type (supports {PEERS[name].bits})")
            for name in peers for b in bits if name in PEERS and b not in PEERS[name].bits]

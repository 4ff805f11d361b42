"""The compression spec: one frozen value that says how one weight matrix is compressed.

Owns `CompressionSpec` and `MODULE_NAMES`. Imports nothing but the standard library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

MODULE_NAMES: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")

Method = Literal["rtn", "ldlq", "caldera"]
METHODS: tuple[str, ...] = get_args(Method)
Codebook = Literal["scalar", "e8p"]
CODEBOOKS: tuple[str, ...] = get_args(Codebook)
Svd = Literal["exact", "randomized"]
SVDS: tuple[str, ...] = get_args(Svd)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class CompressionSpec:
    """How one weight W (d_out, d_in) is compressed.

    Fields:
      method: "rtn" (round-to-nearest, no calibration: the floor), "ldlq" (Hessian-aware rounding,
        the GPTQ family, rank 0) or "caldera" (W ≈ Q + L·R).
      bits: b_Q, bits per entry of the backbone Q, 2..8.
      rank: k of the low-rank factors; 0 for rtn/ldlq, ≥ 1 for caldera.
      lr_bits: b_L = b_R, bits per entry of L and R (2..8), one fp16 scale + offset per rank
        component (column of L, row of R).
      group_size: columns sharing one fp16 scale + offset in Q. Default None = one group per row:
        after the incoherence rotation rows are Gaussian-like, so a row-wide grid loses little,
        costs only 32/d_in bits per weight, and divides every d_in (128 does not divide 576).
      outer_iters / inner_iters: alternations of the CALDERA solver (Q vs L·R) and of the L/R least
        squares inside each. The paper ran 15 outer / 10 inner (the latest reference script 20 / 50).
        Defaults 4 / 3, from measurement on SmolLM2 layer 10 (3-bit, rank 64, mean over its 7
        modules): best-so-far relative error 0.0512 after 1 outer iteration, 0.0496 after 4, 0.0493
        after 8 (LDLQ alone: 0.0616); inner 0 / 3 / 8 differ by < 0.5%. Cost is about linear in
        outer_iters: ~2 CPU-s per outer iteration per layer single-threaded, so 4 outer iterations
        keep a full 30-layer compression near 4 CPU-minutes (2–3 min wall on 2 cores).
      damp: added to the diagonal of H / mean(diag H) before factorising it (0.01 as in the paper).
      hadamard: random-sign Hadamard rotation of W and H on both sides (incoherence). None resolves
        to the method's default: True for ldlq and caldera, False for rtn (the uncalibrated floor).
      seed: seeds the random signs of the rotation; same seed, same result bit for bit.
      codebook: the quantiser of Q. "scalar": the uniform group grid (fp16 scale + offset per
        group). "e8p": the QuIP# E8P lattice codebook (core.e8p), 8 weights per 16-bit code, one
        fp16 scale per group; group_size (and d_in) a multiple of 8. bits 2: E8P alone; 3 and 4:
        QuIP#'s residual codebooks (E8P + an 8-bit E81B code, E8P + a second E8P code). Its honest
        bpw is bits + 16/group_size (+ the W scale and seeds), vs bits + 32/group_size for the grid.
      svd: how caldera starts each LPLR round's factors (the top-`rank` SVD of (W − Q)·C, C the damped
        Hessian's Cholesky factor). "exact": LAPACK's full SVD. "randomized": a seeded randomized range
        finder (Halko, Martinsson & Tropp 2011, Alg. 4.4: rank + 16 columns, 2 power iterations), about
        3x faster on SmolLM2's widths; the inner least-squares rounds then refine the start either way.
        Same bpw; other bits.
    """

    method: Method
    bits: int
    rank: int = 0
    lr_bits: int = 4
    group_size: int | None = None
    outer_iters: int = 4
    inner_iters: int = 3
    damp: float = 0.01
    hadamard: bool | None = None
    seed: int = 0
    codebook: Codebook = "scalar"
    svd: Svd = "exact"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not one of {METHODS}")
        if not _is_int(self.bits) or not 2 <= self.bits <= 8:
            raise ValueError(f"bits={self.bits!r} must be an integer in 2..8")
        if not _is_int(self.lr_bits) or not 2 <= self.lr_bits <= 8:
            raise ValueError(f"lr_bits={self.lr_bits!r} must be an integer in 2..8")
        if not _is_int(self.rank) or self.rank < 0:
            raise ValueError(f"rank={self.rank!r} must be a non-negative integer")
        if self.method == "caldera" and self.rank == 0:
            raise ValueError("method='caldera' needs rank >= 1 (rank=0 is method='ldlq')")
        if self.method != "caldera" and self.rank != 0:
            raise ValueError(f"rank={self.rank} is only meaningful for method='caldera', not {self.method!r}")
        if self.group_size is not None and (not _is_int(self.group_size) or self.group_size < 1):
            raise ValueError(f"group_size={self.group_size!r} must be a positive integer or None (one group per row)")
        if not _is_int(self.outer_iters) or self.outer_iters < 1:
            raise ValueError(f"outer_iters={self.outer_iters!r} must be an integer >= 1")
        if not _is_int(self.inner_iters) or self.inner_iters < 0:
            raise ValueError(f"inner_iters={self.inner_iters!r} must be an integer >= 0")
        if not isinstance(self.damp, (int, float)) or isinstance(self.damp, bool) or not 0 < self.damp < 1e3:
            raise ValueError(f"damp={self.damp!r} must be a positive finite number")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**62:
            raise ValueError(f"seed={self.seed!r} must be an integer in [0, 2**62)")
        if self.codebook not in CODEBOOKS:
            raise ValueError(f"codebook={self.codebook!r} is not one of {CODEBOOKS}")
        if self.codebook == "e8p" and self.bits not in (2, 3, 4):
            raise ValueError(f"codebook='e8p' has 2, 3 and 4-bit codebooks: set bits to one of them (got bits={self.bits}), "
                             "or codebook='scalar'")
        if self.codebook == "e8p" and self.group_size is not None and self.group_size % 8:
            raise ValueError(f"codebook='e8p' codes 8 columns at a time: group_size={self.group_size} must be a multiple of 8")
        if self.svd not in SVDS:
            raise ValueError(f"svd={self.svd!r} is not one of {SVDS}")
        if self.hadamard is None:
            object.__setattr__(self, "hadamard", self.method != "rtn")
        elif not isinstance(self.hadamard, bool):
            raise ValueError(f"hadamard={self.hadamard!r} must be True, False or None")
        object.__setattr__(self, "damp", float(self.damp))

    def key(self) -> str:
        """A short stable string naming every field that changes the result (for file names).

        Fields a method ignores are left out, so e.g. two rtn specs that differ only in
        `outer_iters` share a key (they produce identical artifacts).
        """
        group = "row" if self.group_size is None else str(self.group_size)
        parts = [self.method, f"b{self.bits}", f"g{group}", f"h{int(bool(self.hadamard))}"]
        if self.method != "rtn":
            parts.append(f"d{self.damp:g}")
        if self.method == "caldera":
            parts += [f"r{self.rank}", f"lr{self.lr_bits}", f"o{self.outer_iters}", f"i{self.inner_iters}"]
        if self.hadamard:
            parts.append(f"s{self.seed}")
        if self.codebook != "scalar":  # scalar keys stay as they were before the option existed
            parts.append(self.codebook)
        if self.method == "caldera" and self.svd != "exact":  # exact keys stay as they were before the option
            parts.append("rsvd")
        return "-".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-ready (hadamard resolved to a bool).

        `codebook` is left out while it is "scalar" (and `svd` while "exact"), so plans, manifests and their hashes written
        before the option existed stay the same (from_dict restores the default)."""
        data = asdict(self)
        if data["codebook"] == "scalar":
            del data["codebook"]
        if data["svd"] == "exact":  # likewise
            del data["svd"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompressionSpec":
        """Inverse of `to_dict`; unknown keys raise ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"a CompressionSpec needs a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CompressionSpec field(s) {unknown}; known: {sorted(known)}")
        missing = [name for name in ("method", "bits") if name not in data]
        if missing:
            raise ValueError(f"CompressionSpec needs field(s) {missing}")
        return cls(**data)

"""The frozen result of `decompose` and its exact tensor serialisation. Imports torch only.

Ŵ = w_scale · Uᵀ·(Q + L·R + L16·R16)·V (L16·R16 only when present), where U, V are the random-sign Hadamard transforms named by
`rotation_seeds` (identity when the spec has hadamard=False).

Serialised form (`to_tensors` + `metadata`, safetensors-ready: contiguous tensors, str → str):
  Q.codes / L.codes / R.codes  uint8, bit-packed codes (core.pack) of Q (d_out, d_in), Lᵀ (k, d_out), R (k, d_in)
  Q.scale, Q.offset            float16 (d_out, n_groups);  L.* (k, 1), R.* (k, 1) likewise
                               (codebook "e8p": Q.codes holds 16-bit codes of 8-vectors, core.pack.pack_codes16,
                               and Q.offset is absent; at 3 and 4 bits Q.resid holds the residual codes:
                               uint8 (one E81B code per 8-vector) at 3 bits, pack_codes16 at 4 bits)
  L16 / R16                    float16 (k16, d_out) and (k16, d_in): the optional 16-bit part of the rank
                               (core.lowrank.DenseFactors; only recovery tuning adds it), added to Q + L·R
  w_scale                      float32 (1,)
  rotation_seeds               int64 (2,): seeds of the d_out and d_in sides (only when rotated)
  metadata: format (v1; v2 when L16/R16 are present), spec (JSON), shape, errors (JSON), best_iter, q_group_size
`from_tensors` rebuilds an equal Decomposition, so `reconstruct()` is bit-identical.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import Tensor

from calderalab.core.bpw import paper_bpw, storage_bits
from calderalab.core.hadamard import inverse_rht
from calderalab.core.lowrank import DenseFactors, LowRankFactors
from calderalab.core.metrics import relative_error
from calderalab.core.e8p_matrix import E8PMatrix
from calderalab.core.pack import pack_codes, pack_codes16, unpack_codes, unpack_codes16
from calderalab.core.quantize import QuantizedMatrix
from calderalab.core.spec import CompressionSpec

FORMAT = "calderalab.decomposition.v1"
# A decomposition with a 16-bit part of the rank: a reader that knows only v1 would drop L16·R16 and return a
# different Ŵ without a word, so such files name v2 and v1 readers refuse them.
FORMAT_DENSE = "calderalab.decomposition.v2"


@dataclass(frozen=True, eq=False)
class Decomposition:
    """W ≈ w_scale·Uᵀ(Q + L·R)V for one module.

    shape: (d_out, d_in); Q: codes (d_out, d_in); factors: Lᵀ (k, d_out) and R (k, d_in), or None
    for rtn/ldlq; errors: relative H-weighted error per outer iteration (one entry for rtn/ldlq);
    best_iter: which iterate was kept; dense: the optional 16-bit part of the rank (recovery tuning),
    L16ᵀ (k16, d_out) and R16 (k16, d_in) float16, None for everything `decompose` makes.
    """

    spec: CompressionSpec
    shape: tuple[int, int]
    w_scale: float
    rotation_seeds: tuple[int, int] | None
    Q: QuantizedMatrix | E8PMatrix
    factors: LowRankFactors | None
    errors: tuple[float, ...]
    best_iter: int
    dense: DenseFactors | None = None

    def reconstruct(self) -> Tensor:
        """Ŵ (d_out, d_in) float32 in the original basis and scale."""
        W_hat = self.Q.dequantize()  # (d_out, d_in), rotated basis
        if self.factors is not None:
            W_hat = W_hat + self.factors.product()
        if self.dense is not None:
            W_hat = W_hat + self.dense.product()
        if self.rotation_seeds is not None:
            s_out, s_in = self.rotation_seeds
            W_hat = inverse_rht(inverse_rht(W_hat, s_out, dim=0), s_in, dim=1)  # (d_out, d_in)
        return W_hat * self.w_scale

    @property
    def rank(self) -> int:
        """Rank of the quantised factors (the spec's); the 16-bit part is `rank16`."""
        return 0 if self.factors is None else self.factors.R.shape[0]

    @property
    def rank16(self) -> int:
        return 0 if self.dense is None else self.dense.rank

    @property
    def bpw(self) -> float:
        """Every stored bit (codes, scales, offsets, W scale, seeds) per weight; see core.bpw."""
        factors = None if self.factors is None else (self.factors.Lt, self.factors.R)
        fp16_values = 0 if self.dense is None else self.dense.Lt.numel() + self.dense.R.numel()
        bits = storage_bits(self.Q, factors, self.rotation_seeds is not None, fp16_values)
        return bits / (self.shape[0] * self.shape[1])

    @property
    def bpw_paper(self) -> float:
        """The paper's B_Q + B_LR·k(m+n)/(mn), scales excluded."""
        return paper_bpw(self.spec.bits, self.spec.lr_bits, self.rank, *self.shape)

    def relative_error(self, W: Tensor, H: Tensor | None = None) -> float:
        """√(tr(ΔHΔᵀ)/tr(WHWᵀ)) of reconstruct() against W (d_out, d_in); H None means H = I."""
        if tuple(W.shape) != self.shape:
            raise ValueError(f"W {tuple(W.shape)} does not match the decomposition's shape {self.shape}")
        return relative_error(W, self.reconstruct(), H)

    def to_tensors(self) -> dict[str, Tensor]:
        """Packed codes, fp16 grids, the W scale and rotation seeds (see the module docstring)."""
        parts = {"Q": self.Q}
        if self.factors is not None:
            parts.update(L=self.factors.Lt, R=self.factors.R)
        out: dict[str, Tensor] = {}
        for name, qm in parts.items():
            out[f"{name}.scale"] = qm.scale.contiguous()
            if isinstance(qm, E8PMatrix):
                out[f"{name}.codes"] = pack_codes16(qm.codes).contiguous()
                if qm.resid is not None:  # 3 bits: one byte per 8 weights (E81B); 4 bits: a second 16-bit code
                    out[f"{name}.resid"] = (qm.resid.reshape(-1).to(torch.uint8) if qm.bits == 3
                                            else pack_codes16(qm.resid)).contiguous()
                continue
            out[f"{name}.codes"] = pack_codes(qm.codes, qm.bits).contiguous()
            out[f"{name}.offset"] = qm.offset.contiguous()
        if self.dense is not None:
            out["L16"], out["R16"] = self.dense.Lt.contiguous(), self.dense.R.contiguous()
        out["w_scale"] = torch.tensor([self.w_scale], dtype=torch.float32)
        if self.rotation_seeds is not None:
            out["rotation_seeds"] = torch.tensor(self.rotation_seeds, dtype=torch.int64)
        return out

    def metadata(self) -> dict[str, str]:
        """Strings only (safetensors metadata): format, spec, shape, errors, best_iter, q_group_size."""
        return {
            "format": FORMAT if self.dense is None else FORMAT_DENSE,
            "spec": json.dumps(self.spec.to_dict(), sort_keys=True),
            "shape": json.dumps(list(self.shape)),
            "errors": json.dumps(list(self.errors)),
            "best_iter": str(self.best_iter),
            "q_group_size": str(self.Q.group_size),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], metadata: dict[str, str]) -> "Decomposition":
        """Exact inverse of (to_tensors, metadata); ValueError naming whatever is missing or inconsistent."""
        if metadata.get("format") not in (FORMAT, FORMAT_DENSE):
            raise ValueError(f"metadata format {metadata.get('format')!r} is not {FORMAT!r} or {FORMAT_DENSE!r}")
        missing = [k for k in ("spec", "shape", "errors", "best_iter", "q_group_size") if k not in metadata]
        if missing:
            raise ValueError(f"decomposition metadata lacks {missing}")
        spec = CompressionSpec.from_dict(json.loads(metadata["spec"]))
        d_out, d_in = (int(x) for x in json.loads(metadata["shape"]))
        q_group = int(metadata["q_group_size"])
        if spec.codebook == "e8p":
            Q = _read_e8p(tensors, "Q", (d_out, d_in), q_group, spec.bits)
        else:
            Q = _read_quantized(tensors, "Q", spec.bits, (d_out, d_in), q_group)
        factors = None
        if spec.rank:
            Lt = _read_quantized(tensors, "L", spec.lr_bits, (spec.rank, d_out), d_out)
            R = _read_quantized(tensors, "R", spec.lr_bits, (spec.rank, d_in), d_in)
            factors = LowRankFactors(Lt, R)
        dense = _read_dense(tensors, d_out, d_in)
        if (dense is not None) != (metadata["format"] == FORMAT_DENSE):
            raise ValueError(f"metadata format {metadata['format']!r} does not match the tensors: L16/R16 (a 16-bit "
                             f"rank part) {'present' if dense is not None else 'absent'}; only {FORMAT_DENSE!r} holds them")
        seeds = None
        if spec.hadamard:
            if "rotation_seeds" not in tensors:
                raise ValueError("tensors lack 'rotation_seeds' but the spec is rotated (hadamard=True)")
            seeds = tuple(int(s) for s in tensors["rotation_seeds"].tolist())
        if "w_scale" not in tensors:
            raise ValueError("tensors lack 'w_scale'")
        return cls(
            spec=spec, shape=(d_out, d_in), w_scale=float(tensors["w_scale"].float()[0]), rotation_seeds=seeds,
            Q=Q, factors=factors, errors=tuple(float(e) for e in json.loads(metadata["errors"])),
            best_iter=int(metadata["best_iter"]), dense=dense,
        )


def _read_dense(tensors: dict[str, Tensor], d_out: int, d_in: int) -> DenseFactors | None:
    present = [k for k in ("L16", "R16") if k in tensors]
    if not present:
        return None
    if len(present) == 1:
        raise ValueError(f"decomposition tensors hold {present[0]} without its partner (L16 and R16 go together)")
    Lt, R = tensors["L16"], tensors["R16"]
    if Lt.dim() != 2 or R.dim() != 2 or Lt.shape[1] != d_out or R.shape[1] != d_in:
        raise ValueError(f"L16 {tuple(Lt.shape)} / R16 {tuple(R.shape)} do not fit the shape ({d_out}, {d_in})")
    return DenseFactors(Lt, R)


def _read_quantized(tensors: dict[str, Tensor], name: str, bits: int, shape: tuple[int, int], group: int) -> QuantizedMatrix:
    keys = [f"{name}.codes", f"{name}.scale", f"{name}.offset"]
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise ValueError(f"decomposition tensors lack {missing}")
    rows, cols = shape
    codes = unpack_codes(tensors[keys[0]], bits, rows * cols).reshape(rows, cols)  # (rows, cols)
    scale, offset = tensors[keys[1]], tensors[keys[2]]
    if cols % group or scale.shape != (rows, cols // group) or offset.shape != scale.shape:
        raise ValueError(
            f"{name}: scale {tuple(scale.shape)} / offset {tuple(offset.shape)} do not fit codes {shape} with group {group}"
        )
    return QuantizedMatrix(codes, scale.to(torch.float16), offset.to(torch.float16), bits, group)


def _read_e8p(tensors: dict[str, Tensor], name: str, shape: tuple[int, int], group: int, bits: int) -> E8PMatrix:
    keys = [f"{name}.codes", f"{name}.scale"] + ([f"{name}.resid"] if bits > 2 else [])
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise ValueError(f"decomposition tensors lack {missing}")
    rows, cols = shape
    scale = tensors[keys[1]]
    if cols % 8 or cols % group or group % 8 or scale.shape != (rows, cols // group):
        raise ValueError(f"{name}: E8P scale {tuple(scale.shape)} does not fit codes {shape} with group {group}")
    n_vec = rows * cols // 8
    codes = unpack_codes16(tensors[keys[0]], n_vec).reshape(rows, cols // 8)  # (rows, cols // 8)
    resid = None
    if bits == 3:
        packed = tensors[keys[2]]
        if packed.dtype != torch.uint8 or tuple(packed.shape) != (n_vec,):
            raise ValueError(f"{name}.resid: {packed.dtype} {tuple(packed.shape)} is not ({n_vec},) uint8 E81B codes")
        resid = packed.to(torch.int64).reshape(rows, cols // 8)
    elif bits == 4:
        resid = unpack_codes16(tensors[keys[2]], n_vec).reshape(rows, cols // 8)
    return E8PMatrix(codes, scale.to(torch.float16), group, bits, resid)

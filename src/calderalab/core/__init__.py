"""calderalab.core — pure tensor math for CALDERA (W ≈ Q + L·R) and its baselines.

Imports torch only (and calderalab.errors). Every function is pure: no printing, no disk, no hidden
device, no input mutation; randomness comes from explicit seeds.
"""

from calderalab.core.bpw import expected_bpw, module_bits, paper_bpw
from calderalab.core.decompose import decompose
from calderalab.core.decomposition import Decomposition
from calderalab.core.hadamard import inverse_rht, kron_factors, rht
from calderalab.core.metrics import relative_error, sqnr_db, weight_correlation
from calderalab.core.quantize import QuantizedMatrix, quantize_rtn
from calderalab.core.spec import MODULE_NAMES, CompressionSpec

__all__ = [
    "MODULE_NAMES",
    "CompressionSpec",
    "Decomposition",
    "QuantizedMatrix",
    "decompose",
    "expected_bpw",
    "inverse_rht",
    "kron_factors",
    "module_bits",
    "paper_bpw",
    "quantize_rtn",
    "relative_error",
    "rht",
    "sqnr_db",
    "weight_correlation",
]

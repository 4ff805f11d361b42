"""Calibration: streaming Hessians, the layer-by-layer capture driver, calibration data sources.

Imports torch only at module level (the model is passed in; discovery is imported lazily).
"""

from calderalab.calib.capture import collect_hessians, input_groups
from calderalab.calib.hessian import HessianAccumulator
from calderalab.calib.sources import CalibConfig, CalibData, load_calibration, token_sha256

__all__ = ["CalibConfig", "CalibData", "HessianAccumulator", "collect_hessians", "input_groups", "load_calibration", "token_sha256"]

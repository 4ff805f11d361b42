"""Recovery tuning: train a store's L, R against the original model (Q frozen), write a new store,
and export the factors as a PEFT LoRA adapter over the de-quantised Q backbone.

Sits beside `compress`: imports artifacts, calib, eval, models and core, never the CLI or experiments.
"""

from calderalab.tune.factors import LowRankLinear, backbone, lora_pair, quantize_factor
from calderalab.tune.peft_export import export_peft
from calderalab.tune.run import TuneReport, TuneRow, tune_store
from calderalab.tune.train import TuneConfig

__all__ = ["LowRankLinear", "TuneConfig", "TuneReport", "TuneRow", "backbone", "export_peft", "lora_pair",
           "quantize_factor", "tune_store"]

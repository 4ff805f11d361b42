"""The `tune` job: measure, tune L and R, re-quantise, write a new store, measure what it stores.

Order: cache the original's calibration states and held-out reference (original weights) →
measure the source store → train → write the tuned store → measure the tuned store as read back
from disk (assemble_weights), so the "after" row is exactly what the new store gives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from calderalab import models
from calderalab.artifacts import ArtifactStore, ModuleEntry, assemble_weights
from calderalab.calib import CalibData
from calderalab.core.decomposition import Decomposition
from calderalab.eval.fidelity import FidelityResult, Reference, build_reference, measure_against, paired_kl_line
from calderalab.eval.perplexity import CONTEXT_LEN, STRIDE
from calderalab.tune.factors import LowRankLinear, tunable
from calderalab.tune.store import check_new_store, load_modules, write_store
from calderalab.tune.train import TuneConfig, calib_kl, head_inputs, tune_modules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneRow:
    """One model measured: mean KL(P_orig ‖ P) per token on the calibration windows and on held-out
    windows (nats), held-out perplexity (None when no held-out text was given), and the bits per weight
    of the store's modules (every stored bit; 16 for the original)."""

    label: str
    calib_kl: float
    heldout_kl: float | None
    heldout_ppl: float | None
    bpw: float = 16.0


@dataclass(frozen=True)
class TuneReport:
    rows: tuple[TuneRow, ...]  # original, source store, tuned store
    losses: tuple[float, ...]  # training KL per step
    out_url: str
    n_tuned: int  # modules whose L, R were trained
    n_copied: int  # modules without a low-rank part and no rank16 (ldlq/rtn), written unchanged
    paired: str | None = None  # held-out KL change with its window-paired 95% interval (eval.fidelity.paired_kl_line)

    def verdict(self) -> str | None:
        """None when the tuned store is better than its source on held-out text (on the calibration
        windows when no held-out text was given); else the sentence that says it is not."""
        _, before, after = self.rows
        held_out = before.heldout_kl is not None and after.heldout_kl is not None
        b, a = (before.heldout_kl, after.heldout_kl) if held_out else (before.calib_kl, after.calib_kl)
        if a < b:
            return None
        where = "held-out" if held_out else "calibration (no held-out text given)"
        return (f"tuning did not help: the {where} KL went from {b:.5f} to {a:.5f}; the source store is better "
                "(more calibration text, fewer steps or a lower learning rate may; see TuneConfig)")


def stored_bpw(modules: list[tuple[ModuleEntry, Decomposition]]) -> float:
    """Every stored bit of the modules per weight (core Decomposition.bpw, weighted by size)."""
    sizes = [d.shape[0] * d.shape[1] for _, d in modules]
    return sum(d.bpw * n for (_, d), n in zip(modules, sizes)) / sum(sizes)


def _measure(label: str, model, weights, calib: CalibData, teacher, reference: Reference | None,
             heldout_ids: torch.Tensor | None, bpw: float) -> tuple[TuneRow, FidelityResult | None]:
    with models.swapped_weights(model, weights):
        kl = calib_kl(model, calib.token_ids, teacher, calib.batch_size)
        if reference is None:
            return TuneRow(label, kl, None, None, bpw), None
        fidelity = measure_against(model, reference, heldout_ids)
    return TuneRow(label, kl, fidelity.kl_interval()[0], fidelity.perplexity.perplexity, bpw), fidelity


def tune_store(
    model: torch.nn.Module,
    source: ArtifactStore,
    out: ArtifactStore,
    calib: CalibData,
    config: TuneConfig = TuneConfig(),
    heldout_ids: torch.Tensor | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    plan: Any = None,
) -> TuneReport:
    """Tune every caldera module of `source` (made from `model`, which holds the original weights), and with
    config.rank16 every other module too (through its 16-bit part alone), and write the result to the new store
    `out`. heldout_ids: (n_tokens,) text scored before and after; plan: which spec to take where the source
    holds several (a `--plan kl` or `--plan budget` store); the new store holds only those."""
    check_new_store(out)
    stored = load_modules(source, model, plan)
    # The trainable modules are built (and a rank16 they cannot take refused) before any model pass.
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)  # R16's start, drawn in store order
    trainable = {}
    for e, d in stored:
        if tunable(d, config.rank16):
            bias = models.target_linear(model, e.layer, e.module).bias
            try:
                trainable[(e.layer, e.module)] = LowRankLinear(d, bias, config.quant_aware, config.rank16, generator).to(device)
            except ValueError as err:
                raise ValueError(f"{e.layer}.{e.module}: {err}") from None
    if not trainable:
        raise ValueError(f"{source.url} holds no low-rank factors (no caldera modules): there is nothing to tune "
                         "without a 16-bit part (--rank16 K adds one to every module)")
    teacher = head_inputs(model, calib.token_ids, calib.batch_size)  # original weights
    reference = None if heldout_ids is None else build_reference(model, heldout_ids, CONTEXT_LEN, STRIDE)
    original = TuneRow("original", 0.0, None if reference is None else 0.0,
                       None if reference is None else reference.baseline.perplexity)
    before_weights = {(e.layer, e.module): d.reconstruct() for e, d in stored}
    before, before_fidelity = _measure("compressed", model, before_weights, calib, teacher, reference, heldout_ids,
                                       stored_bpw(stored))
    losses = tune_modules(model, trainable, calib.token_ids, teacher, config, progress)
    tuned = [(e, trainable[(e.layer, e.module)].stored() if (e.layer, e.module) in trainable else d) for e, d in stored]
    record = {"source_store": source.url, "source_manifest_sha256": source.manifest().content_hash(),
              "calibration": calib.manifest_entry(), "settings": config.to_dict(), "tuned_modules": len(trainable),
              "plan_hash": None if plan is None else plan.hash()}
    write_store(source, out, model, tuned, record)
    after, after_fidelity = _measure("tuned", model, assemble_weights(out, model), calib, teacher, reference, heldout_ids,
                     stored_bpw(tuned))
    log.info("tuned %d modules into %s: calibration KL %.5f -> %.5f", len(trainable), out.url, before.calib_kl, after.calib_kl)
    paired = None if reference is None else paired_kl_line("held-out, tuned against compressed", before_fidelity,
                                                           after_fidelity)
    return TuneReport((original, before, after), tuple(losses), out.url, len(trainable), len(stored) - len(trainable),
                      paired)

"""Small experiment settings for the tests (imported by name: tests/experiments is on sys.path)."""

from __future__ import annotations


def small_config(out: str, calib_file: str, artifacts: str | None = None, **eval_overrides):
    import dataclasses

    from calderalab.calib import CalibConfig
    from calderalab.core import CompressionSpec
    from calderalab.eval.runner import EvalConfig
    from calderalab.experiments import EXPERIMENT_EVAL, CompressSettings, RunSettings, SensitivitySettings, StudyConfig
    from calderalab.sensitivity import SensitivityConfig

    return StudyConfig(
        run=RunSettings(model="tiny-llama", out=out, artifacts=artifacts, device="cpu"),
        compress=CompressSettings(CompressionSpec("caldera", bits=3, rank=4, outer_iters=1, inner_iters=1),
                                  CalibConfig(calib_file, n_samples=4, seq_len=32)),
        sensitivity=SensitivitySettings(n_samples=4, measure=SensitivityConfig(batch_size=4, max_new_tokens=4)),
        eval=dataclasses.replace(EXPERIMENT_EVAL, **{
            "generate_canonical": True, "decoding": EvalConfig(max_new_tokens=8, batch_size=16),
            "families": ("discount_coupon", "time_duration", "transitive_order"), **eval_overrides}),
    )


def planted_results(instances, config, executed: bool):
    """ProbeResults of a planted evaluator: every instance executed iff `executed`; understanding always right."""
    from calderalab.eval.types import ProbeResult

    out = []
    for inst in instances:
        out.append(ProbeResult(inst.uid, "execution", config.scoring, executed, inst.answer if executed else "x", ""))
        if len(inst.plan_options) >= 2:
            out.append(ProbeResult(inst.uid, "understanding", config.scoring, True, inst.correct_letter, ""))
    return out

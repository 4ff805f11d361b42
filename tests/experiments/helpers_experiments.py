"""Small experiment settings for the tests (imported by name: tests/experiments is on sys.path)."""

from __future__ import annotations


def small_config(out: str, calib_file: str, artifacts: str | None = None, **eval_overrides):
    import dataclasses

    from calderalab.eval.runner import EvalConfig
    from calderalab.experiments import EXPERIMENT_EVAL, CompressSettings, RunSettings, SensitivitySettings, StudyConfig

    return StudyConfig(
        run=RunSettings(model="tiny-llama", out=out, artifacts=artifacts, device="cpu"),
        compress=CompressSettings(bits=3, rank=4, calib_source=calib_file, calib_samples=4, calib_seq_len=32,
                                  outer_iters=1, inner_iters=1),
        sensitivity=SensitivitySettings(n_samples=4, max_new_tokens=4, batch_size=4),
        eval=dataclasses.replace(EXPERIMENT_EVAL, **{
            "generate_canonical": True, "decoding": EvalConfig(max_new_tokens=8, batch_size=16),
            "families": ("discount_coupon", "time_duration", "transitive_order"), **eval_overrides}),
    )

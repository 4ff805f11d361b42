"""Recovery-tuning commands: `tune` (train a store's L, R into a new store) and `export-lora`."""

from __future__ import annotations

import typer


def _config(**given):
    from calderalab.tune import TuneConfig

    return TuneConfig(**{k: v for k, v in given.items() if v is not None})


def tune(
    model: str = typer.Argument(..., help="model reference the artifacts were made from"),
    store: str = typer.Argument(..., help="artifact store directory or URL (read only)"),
    out: str = typer.Option(..., "--out", help="new artifact store for the tuned modules (must not exist)"),
    plan: str = typer.Option(None, "--plan", help="plan file choosing among several stored specs (compress --save-plan)"),
    calib: str = typer.Option(None, "--calib", help="calibration source: self, a text file or a GSM8K .jsonl"),
    calib_samples: int = typer.Option(None, "--calib-samples", help="calibration windows (default 32)"),
    seq_len: int = typer.Option(None, "--seq-len", help="tokens per calibration window (default 256)"),
    calib_batch: int = typer.Option(None, "--calib-batch", help="windows per forward when measuring (default 8)"),
    heldout: str = typer.Option(None, "--heldout", help="text file scored before and after, e.g. wikitext-2/test.txt"),
    heldout_tokens: int = typer.Option(None, "--heldout-tokens", help="held-out tokens scored (default 4096)"),
    steps: int = typer.Option(None, "--steps", help="Adam steps (default 32)"),
    lr: float = typer.Option(None, "--lr", help="Adam learning rate (default 1e-3)"),
    batch_size: int = typer.Option(None, "--batch-size", help="calibration windows per step (default 4)"),
    quant_aware: bool = typer.Option(None, "--quant-aware/--no-quant-aware", help="train through the factor quantiser (default on)"),
    rank16: int = typer.Option(None, "--rank16", help="add a 16-bit part of this rank to every tuned module, trained "
                                                      "with L and R (default 0: none; its bits are counted)"),
    seed: int = typer.Option(None, "--seed", help="window order (default 0)"),
    report_dir_name: str = typer.Option("runs/tune", "--report", help="folder for tuning.json (rows, KL per step) and tuning.png"),
) -> None:
    """Keep Q frozen, train L and R (and a 16-bit part with --rank16, on every module) to match MODEL's next-token
    distributions (KL), re-quantise, store in --out."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from calderalab import models
    from calderalab.artifacts import ArtifactStore
    from calderalab.calib import CalibConfig, load_calibration
    from calderalab.eval.perplexity import token_ids
    from calderalab.progress import make_progress
    from calderalab.report.plots import tuning_plot
    from calderalab.tune import tune_store
    from calderalab.tune.store import check_new_store

    config = _config(steps=steps, lr=lr, batch_size=batch_size, quant_aware=quant_aware, rank16=rank16, seed=seed,
                     heldout_tokens=heldout_tokens)
    given = {"source": calib, "n_samples": calib_samples, "seq_len": seq_len, "batch_size": calib_batch}
    calib_config = CalibConfig(**{k: v for k, v in given.items() if v is not None})
    source, target = ArtifactStore(store), ArtifactStore(out)
    source.header()  # a missing source store fails before the model load
    check_new_store(target)
    the_plan = None
    if plan:
        from calderalab import plans

        the_plan = plans.load_plan(plan, models.num_layers(models.load_skeleton(model)))
    model_obj, tokenizer = models.load_model(model)
    calib_data = load_calibration(model_obj, tokenizer, calib_config)
    ids = token_ids(tokenizer, Path(heldout).read_text(encoding="utf-8"), config.heldout_tokens) if heldout else None
    console = Console()
    with make_progress(eta=True) as bar:  # plain lines when stderr is not a terminal
        task = bar.add_task("tuning steps", total=config.steps)
        report = tune_store(model_obj, source, target, calib_data, config, ids, plan=the_plan,
                            progress=lambda done, total, kl: bar.update(task, completed=done, total=total,
                                                                       description=f"tuning steps (KL {kl:.5f})"))
    table = Table(title=f"recovery tuning: {report.n_tuned} modules tuned, {report.n_copied} copied; {calib_data.n_tokens} "
                        f"calibration tokens" + (f", {ids.numel()} held-out tokens of {Path(heldout).name}" if heldout else ""))
    for column in ("model", "bpw (stored modules)", "KL calib (nats/token)", "KL held-out", "ppl held-out"):
        table.add_column(column, justify="right")
    for row in report.rows:
        table.add_row(row.label, f"{row.bpw:.3f}", f"{row.calib_kl:.5f}", "-" if row.heldout_kl is None else f"{row.heldout_kl:.5f}",
                      "-" if row.heldout_ppl is None else f"{row.heldout_ppl:.3f}")
    console.print(table)
    console.print(f"training KL: step 1 {report.losses[0]:.5f}, step {len(report.losses)} {report.losses[-1]:.5f}")
    if report.paired is not None:
        console.print(report.paired, markup=False)
    console.print(f"tuned store written to {report.out_url}")
    report_dir = Path(report_dir_name)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "tuning.json").write_text(json.dumps(
        {"store": source.url, "out": report.out_url, "settings": config.to_dict(), "calibration": calib_data.manifest_entry(),
         "heldout": heldout, "rows": [asdict(row) for row in report.rows], "paired": report.paired,
         "losses": list(report.losses)}, indent=2))
    plot = tuning_plot(report.losses, report.rows, report_dir / "tuning.png",
                       title=f"Recovery tuning, lr {config.lr:g}, {len(report.losses)} steps")
    console.print(f"report: {report_dir / 'tuning.json'}, {plot}")
    if report.verdict() is not None:
        console.print(report.verdict(), markup=False)
        raise typer.Exit(1)  # a store worse than its source must not pass a script silently


def export_lora(
    model: str = typer.Argument(..., help="model reference the artifacts were made from"),
    store: str = typer.Argument(..., help="artifact store directory or URL"),
    out: str = typer.Option(..., "--out", help="output directory: backbone/ (HF checkpoint of Q) and adapter/ (PEFT LoRA)"),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Write the store as a PEFT LoRA adapter (L·R) over a de-quantised Q backbone checkpoint."""
    from calderalab import models
    from calderalab.artifacts import ArtifactStore
    from calderalab.tune import export_peft

    model_obj, tokenizer = models.load_model(model)
    path = export_peft(model_obj, tokenizer, ArtifactStore(store), out, overwrite=overwrite)
    typer.echo(f"backbone: {path / 'backbone'}\nadapter: {path / 'adapter'}  "
               f"(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(backbone), adapter))")


COMMANDS = {"tune": tune, "export-lora": export_lora}

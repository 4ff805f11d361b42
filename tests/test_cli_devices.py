"""`calderalab compress --device/--dtype/--offload-dir`: options checked before the model loads,
and the CLI's lazy compression gives the same artifacts with activations spilled to disk."""

from pathlib import Path

import pytest
import torch
from helpers_cli import calibration_text, compress_args, run_main, tiny_checkpoint

from calderalab import devices


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def refuse_loading(monkeypatch):
    from calderalab import models

    def load(*args, **kwargs):
        raise AssertionError("weights were loaded before the bad option was refused")

    monkeypatch.setattr(models, "open_model", load)
    monkeypatch.setattr(models, "load_model", load)


def test_resolve_device_and_dtype_without_gpu():
    assert devices.resolve_device(None) == devices.resolve_device("auto") == "cpu"
    assert devices.resolve_dtype(None, "cpu") is torch.float32
    assert devices.resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    assert devices.resolve_dtype("auto", "cuda") is torch.bfloat16
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        devices.resolve_device("cuda:1")
    with pytest.raises(ValueError, match="'tpu' is not a device"):
        devices.resolve_device("tpu")
    with pytest.raises(ValueError, match="'float16' is not supported"):
        devices.resolve_dtype("float16", "cpu")


@pytest.mark.parametrize("option, says", [
    (["--device", "cuda"], "--device cuda: no CUDA GPU is visible here"),
    (["--device", "gpu"], "--device 'gpu' is not a device"),
    (["--dtype", "int8"], "--dtype 'int8' is not supported"),
])
def test_bad_device_or_dtype_fails_before_the_model_loads(option, says, tmp_path, refuse_loading, capsys):
    argv = compress_args(tiny_checkpoint(tmp_path), calibration_text(tmp_path), tmp_path / "out") + option
    code, _, stderr = run_main(argv, capsys)
    assert code == 2
    assert says in stderr and "Traceback" not in stderr


def test_cli_dtype_and_offload_dir(tmp_path, capsys):
    model, calib = tiny_checkpoint(tmp_path), calibration_text(tmp_path)

    def artifacts(store: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted((store / "modules").glob("*.safetensors"))}

    assert run_main(compress_args(model, calib, tmp_path / "a"), capsys)[0] == 0
    spill = tmp_path / "spill"
    code, stdout, _ = run_main(compress_args(model, calib, tmp_path / "b") + ["--device", "cpu", "--dtype", "float32",
                                                                            "--offload-dir", str(spill)], capsys)
    assert code == 0 and "(cpu, float32)" in stdout
    assert artifacts(tmp_path / "b") == artifacts(tmp_path / "a") and artifacts(tmp_path / "a")
    assert spill.is_dir() and not list(spill.rglob("*.pt"))  # used and cleaned up
    code, stdout, _ = run_main(compress_args(model, calib, tmp_path / "c") + ["--dtype", "bfloat16"], capsys)
    assert code == 0 and "(cpu, bfloat16)" in stdout


def _commands(model: Path, text: Path, tmp_path: Path) -> dict[str, list[str]]:
    """Every command that loads the model for forward passes, with options that would otherwise run."""
    return {
        "eval": ["eval", str(model), "--canonical", "--db", str(tmp_path / "r.sqlite")],
        "sensitivity": ["sensitivity", str(model), "--samples", "2", "--out", str(tmp_path / "s")],
        "ppl": ["ppl", str(model), "--data", str(text), "--max-tokens", "64", "--context", "32", "--stride", "32"],
        "activations": ["activations", str(model), "--artifacts", str(tmp_path / "store"), "--out", str(tmp_path / "a")],
        "study": ["study", "--model", str(model), "--out", str(tmp_path / "study")],
    }


@pytest.mark.parametrize("command", ["eval", "sensitivity", "ppl", "activations", "study"])
def test_every_forward_command_refuses_a_missing_gpu_before_loading(command, tmp_path, refuse_loading, capsys):
    argv = _commands(tiny_checkpoint(tmp_path), calibration_text(tmp_path), tmp_path)[command] + ["--device", "cuda"]
    code, _, stderr = run_main(argv, capsys)
    assert code == 2 and "--device cuda: no CUDA GPU is visible here" in stderr and "Traceback" not in stderr
    code, _, stderr = run_main(argv[:-2] + ["--dtype", "float16"], capsys)
    assert code == 2 and "--dtype 'float16' is not supported" in stderr and "Traceback" not in stderr


def test_ppl_and_eval_run_in_bfloat16_and_say_so(tmp_path, capsys):
    """bfloat16 forward passes on CPU: the perplexity differs a little from float32 (other numerics),
    the command says where it ran, and an evaluation records it with the run."""
    import sqlite3

    model, text = tiny_checkpoint(tmp_path), calibration_text(tmp_path)
    argv = _commands(model, text, tmp_path)["ppl"]
    code, fp32, _ = run_main(argv, capsys)
    assert code == 0 and "on cpu, float32" in fp32
    code, bf16, _ = run_main(argv + ["--dtype", "bfloat16"], capsys)
    assert code == 0 and "on cpu, bfloat16" in bf16
    ppl = lambda out: float(out.split("perplexity")[1].split()[0].strip(":="))  # noqa: E731
    assert ppl(fp32) != ppl(bf16) and abs(ppl(bf16) / ppl(fp32) - 1) < 0.05

    db = tmp_path / "r.sqlite"
    assert run_main(_commands(model, text, tmp_path)["eval"] + ["--dtype", "bfloat16"], capsys)[0] == 0
    with sqlite3.connect(db) as con:
        configs = [row[0] for row in con.execute("SELECT config_json FROM runs")]
    assert len(configs) == 1 and '"device": "cpu, bfloat16"' in configs[0]

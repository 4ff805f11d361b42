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

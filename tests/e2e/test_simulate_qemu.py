"""End to end in QEMU: training steps of small awkward models and of the examples match the reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zoo as models

pytestmark = pytest.mark.qemu
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def simulate(model: Path, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    report = tmp_path / f"report-{model.stem}-{abs(hash(args))}.json"
    result = subprocess.run([sys.executable, "-m", "tinyodl", "simulate", str(model), "--report", str(report),
                             "--quiet", *args], capture_output=True, text=True, timeout=900)
    data = json.loads(report.read_text()) if report.exists() else {}
    return result, data


@pytest.mark.parametrize("cores", [1, 7, 8])
def test_conv_zoo_every_kernel(tmp_path: Path, toolchain, cores: int) -> None:
    model = models.conv_zoo(tmp_path / "conv_zoo.onnx")
    result, report = simulate(model, tmp_path, "--steps", "2", "--cores", str(cores), "--optimizer", "sgd",
                              "--momentum", "0.9", "--lr", "0.05")
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["check"]["ok"] and report["cores"] == cores
    ops = {op for layer in report["layers"] for op in layer["op"].split("+")}
    assert {"conv2d", "conv2d_grad_input", "conv2d_grad_weight", "batchnorm", "batchnorm_grad_input",
            "batchnorm_grad_params", "maxpool2d", "maxpool2d_grad", "avgpool2d", "avgpool2d_grad",
            "global_avgpool", "broadcast", "add", "leaky_relu_grad", "sigmoid_grad", "tanh_grad", "gemm",
            "reduce_sum", "sgd_update"} <= ops


@pytest.mark.parametrize("cores", [1, 7])
def test_dense_zoo_adam_mse(tmp_path: Path, toolchain, cores: int) -> None:
    model = models.dense_zoo(tmp_path / "dense_zoo.onnx")
    result, report = simulate(model, tmp_path, "--steps", "3", "--cores", str(cores), "--optimizer", "adamw",
                              "--weight-decay", "0.1", "--lr", "0.01", "--loss", "mse")
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["check"]["ok"]


def test_dense_zoo_cross_entropy_adam(tmp_path: Path, toolchain) -> None:
    model = models.dense_zoo(tmp_path / "dense_zoo.onnx")
    result, report = simulate(model, tmp_path, "--steps", "2", "--cores", "3", "--optimizer", "adam")
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["check"]["ok"]


def test_hostile_names_compile_to_safe_c(tmp_path: Path, toolchain) -> None:
    model = models.hostile_names(tmp_path / "hostile.onnx")
    params = tmp_path / "params.npz"
    result, report = simulate(model, tmp_path, "--steps", "2", "--cores", "2", "--save-params", str(params))
    assert result.returncode == 0, result.stdout + result.stderr
    with np.load(params) as saved:
        assert 'w"*/\n#define x 1\\' in saved.files
        assert saved['w"*/\n#define x 1\\'].shape == (4, 5)  # as the reference target saves them
        assert saved["b /* #include */ ??="].shape == (4,)


def test_compile_is_deterministic_and_make_run_works(tmp_path: Path, toolchain) -> None:
    model = models.conv_zoo(tmp_path / "conv_zoo.onnx")
    for out in ("a", "b"):
        subprocess.run([sys.executable, "-m", "tinyodl", "compile", str(model), "-o", str(tmp_path / out),
                        "--cores", "4"], check=True, capture_output=True, timeout=300)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    for relative in files_a:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes(), relative
    network_c = (tmp_path / "a" / "src" / "network.c").read_text()
    assert "/* conv1 (forward): conv2d */" in network_c and "/* conv1 (backward): conv2d_grad_weight" in network_c
    run = subprocess.run(["make", "-s", "run"], cwd=tmp_path / "a", capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "LOSS 0 " in run.stdout and "END" in run.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet8", "dscnn"])
def test_examples_three_steps_on_eight_cores(tmp_path: Path, toolchain, name: str) -> None:
    result, report = simulate(EXAMPLES / f"{name}.onnx", tmp_path, "--steps", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["check"]["ok"] and len(report["steps"]) == 3


@pytest.mark.slow
def test_lenet_adam_on_eight_cores(tmp_path: Path, toolchain) -> None:
    result, report = simulate(EXAMPLES / "lenet.onnx", tmp_path, "--steps", "2", "--optimizer", "adam",
                              "--lr", "0.001", "--batch", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["check"]["ok"]

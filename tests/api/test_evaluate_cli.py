"""`tinyodl eval` through the command line: human lines, a JSON last line, predictions, one-line errors with
nothing written; and one forward pass on the simulated cluster (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyodl.driver.evaluate import forward_graph, load_eval_data, reference_outputs
from tinyodl.driver.options import Options

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MLP = EXAMPLES / "mlp.onnx"


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinyodl", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def digits_like(path: Path, rows: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, input=rng.standard_normal((rows, 64)).astype(np.float32), target=rng.integers(0, 10, rows))
    return path


def test_eval_prints_loss_accuracy_confusion_and_json_last(tmp_path: Path) -> None:
    data = digits_like(tmp_path / "test.npz", 23)
    result = run("eval", MLP, "--data", data, "--batch", "4", "--json", "--predictions", tmp_path / "pred.npy")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("loss ") and "over 23 samples, accuracy" in lines[0]
    assert lines[1].startswith("confusion")
    summary = json.loads(lines[-1])
    assert summary["samples"] == 23
    assert sum(map(sum, summary["confusion"])) == 23
    assert summary["accuracy"] == pytest.approx(np.trace(np.array(summary["confusion"])) / 23)
    predictions = np.load(tmp_path / "pred.npy")
    assert predictions.shape == (23,) and predictions.dtype.kind == "i"
    graph = forward_graph(MLP, Options(batch=4))
    outputs = reference_outputs(graph, load_eval_data(graph, data))
    np.testing.assert_array_equal(predictions, outputs.argmax(axis=1))


def test_eval_takes_parameters_from_npz_and_onnx(tmp_path: Path) -> None:
    data = digits_like(tmp_path / "test.npz", 9)
    own = json.loads(run("eval", MLP, "--data", data, "--json").stdout.splitlines()[-1])
    same = json.loads(run("eval", MLP, "--data", data, "--json", "--params", MLP).stdout.splitlines()[-1])
    assert same == own
    np.savez(tmp_path / "p.npz", **{"fc4.bias": np.full(10, 3.0, np.float32) * np.arange(10, dtype=np.float32)})
    shifted = json.loads(run("eval", MLP, "--data", data, "--json", "--params", tmp_path / "p.npz")
                         .stdout.splitlines()[-1])
    assert shifted["loss"] != own["loss"]
    # A bias of 27 on class 9 outweighs every logit of this small model: all predictions become 9.
    assert all(row[9] == sum(row) for row in shifted["confusion"])


@pytest.mark.parametrize("extra, message", [
    (["--params", "missing.npz"], "no such parameter file"),
    (["--target", "qemu", "--timeout", "0"], "--timeout must be > 0"),
    (["--predictions", "out/"], "is a directory"),
])
def test_eval_errors_are_one_line_and_write_nothing(tmp_path: Path, extra: list[str], message: str) -> None:
    digits_like(tmp_path / "test.npz", 3)
    (tmp_path / "out").mkdir()
    result = run("eval", MLP, "--data", "test.npz", *extra, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "test.npz"]
    assert not any((tmp_path / "out").iterdir())


@pytest.mark.slow
@pytest.mark.qemu
def test_eval_on_the_simulated_cluster_matches_the_reference(tmp_path: Path) -> None:
    """Three batches of 4, the last one padded: the program prints each batch's logits, checked elementwise."""
    data = digits_like(tmp_path / "test.npz", 10)
    qemu = run("eval", MLP, "--data", data, "--batch", "4", "--target", "qemu", "--cores", "3", "--json", "--quiet")
    assert qemu.returncode == 0, qemu.stderr
    assert "check: ok" in qemu.stdout
    simulated = json.loads(qemu.stdout.splitlines()[-1])
    assert simulated["check"]["ok"] and simulated["check"]["worst"]["tolerance_ratio"] <= 1.0
    reference = json.loads(run("eval", MLP, "--data", data, "--batch", "4", "--json").stdout.splitlines()[-1])
    assert simulated["samples"] == 10
    assert simulated["confusion"] == reference["confusion"]
    assert simulated["loss"] == pytest.approx(reference["loss"], rel=1e-4)

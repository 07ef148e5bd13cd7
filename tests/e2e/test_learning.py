"""Training learns: on a synthetic task with a linear teacher, the simulated loss falls step after step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.qemu
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _teacher_data(path: Path, steps: int, batch: int) -> Path:
    rng = np.random.default_rng(42)
    inputs = rng.standard_normal((steps * batch, 64)).astype(np.float32)
    teacher = rng.standard_normal((64, 10))
    labels = np.argmax(inputs @ teacher, axis=1)
    # The same batch every step, so the loss must fall monotonically for a small enough learning rate.
    inputs[:] = np.tile(inputs[:batch], (steps, 1))
    labels[:] = np.tile(labels[:batch], steps)
    np.savez(path, input=inputs, target=labels.astype(np.int64))
    return path


def test_mlp_loss_falls_in_qemu(tmp_path: Path, toolchain) -> None:
    steps, batch = 15, 8
    data = _teacher_data(tmp_path / "teacher.npz", steps, batch)
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "tinyodl", "simulate", str(EXAMPLES / "mlp.onnx"), "--data",
                             str(data), "--steps", str(steps), "--batch", str(batch), "--optimizer", "adam",
                             "--lr", "0.01", "--quiet", "--report", str(report)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    losses = [step["loss"] for step in json.loads(report.read_text())["steps"]]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 0.5 * losses[0], losses

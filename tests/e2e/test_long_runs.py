"""Long training runs pass their step-local checks in QEMU: a small CNN on scikit-learn's digits, shuffled over
epochs, at batch 8 and at batch 1 (where losses reach 1e-5 and float32 cannot resolve p - 1 finely).

The CI runs shorter versions; the issue's full lengths (5,000 steps at batch 8, 2,000 at batch 1; about 5 and
3 minutes of QEMU on 2 cores) run with TINYODL_LONG_RUNS=1 in the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from digits import digits_cnn, digits_data

pytestmark = [pytest.mark.qemu, pytest.mark.slow]
LONG = pytest.mark.skipif(os.environ.get("TINYODL_LONG_RUNS") != "1",
                          reason="the full-length runs take minutes: set TINYODL_LONG_RUNS=1")


def _simulate(tmp_path: Path, batch: int, *order: str, lr: str, momentum: str = "0.9") -> dict:
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "tinyodl", "simulate", str(digits_cnn(tmp_path / "cnn.onnx", batch)), "--data",
         str(digits_data(tmp_path / "digits.npz")), *order, "--lr", lr, "--momentum", momentum, "--quiet",
         "--timeout", "3000", "--report", str(report)],
        capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "RuntimeWarning" not in result.stderr
    return json.loads(report.read_text())


def _assert_checked(report: dict, steps: int) -> None:
    check = report["check"]
    assert check["ok"], check
    assert len(report["steps"]) == steps
    checked = check["checked_steps"]
    assert checked[0] == 0 and checked[-1] == steps - 1 and len(checked) >= min(steps, 8), checked


def test_two_shuffled_epochs_at_batch_8(tmp_path: Path, toolchain) -> None:
    report = _simulate(tmp_path, 8, "--epochs", "2", "--shuffle", "1", lr="0.02")
    _assert_checked(report, 2 * (1797 // 8))  # the last partial batch of each epoch is dropped
    losses = [step["loss"] for step in report["steps"]]
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20]), losses


def test_300_steps_at_batch_1(tmp_path: Path, toolchain) -> None:
    _assert_checked(_simulate(tmp_path, 1, "--steps", "300", "--shuffle", "2", lr="0.01"), 300)


@LONG
def test_5000_steps_at_batch_8(tmp_path: Path, toolchain) -> None:
    _assert_checked(_simulate(tmp_path, 8, "--steps", "5000", "--shuffle", "1", lr="0.02"), 5000)


@LONG
def test_2000_steps_at_batch_1(tmp_path: Path, toolchain) -> None:
    _assert_checked(_simulate(tmp_path, 1, "--steps", "2000", "--shuffle", "1", lr="0.01"), 2000)


@LONG
def test_a_confident_unshuffled_run_at_batch_1(tmp_path: Path, toolchain) -> None:
    # issue 10: plain SGD at lr 0.05 makes the model so confident by step 537 that softmax - onehot cancels to a
    # few eps32, and the bias gradient, which batch 1 makes equal to it, carries the kernel's expf and sum roundings
    _assert_checked(_simulate(tmp_path, 1, "--steps", "1432", lr="0.05", momentum="0"), 1432)


@LONG
def test_a_confident_shuffled_run_of_2000_steps_at_batch_1(tmp_path: Path, toolchain) -> None:
    # the same at seed 0 failed on a conv bias (4x the old bound) once the fc layer was confident
    _assert_checked(_simulate(tmp_path, 1, "--steps", "2000", "--shuffle", "0", lr="0.05", momentum="0"), 2000)

"""Bad option values through the CLI: one line naming the option, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinyodl", *map(str, argv)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--cores", "0"], "--cores must be between 1 and 8, got 0"),
    (["--cores", "9"], "--cores must be between 1 and 8, got 9"),
    (["--lr", "nan"], "--lr"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--timeout", "-1"], "--timeout"),
    (["--platform", "pulp9"], "invalid choice: 'pulp9'"),
    (["--layout", "hwc"], "invalid choice: 'hwc'"),
])
def test_bad_values_are_one_line_exit_2(tmp_path: Path, argv: list[str], fragment: str) -> None:
    report = tmp_path / "r.json"
    done = _run("simulate", EXAMPLES / "mlp.onnx", "--target", "reference", "--report", report, *argv)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and fragment in done.stderr, done.stderr
    assert not report.exists()


def test_dynamic_batch_names_the_fix(tmp_path: Path) -> None:
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [0.1] * 12)])
    model = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    done = _run("simulate", model, "--target", "reference")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "dynamic dimension 'N'" in done.stderr and "--batch B" in done.stderr
    fixed = _run("simulate", model, "--target", "reference", "--batch", "2", "--quiet")
    assert fixed.returncode == 0, fixed.stderr

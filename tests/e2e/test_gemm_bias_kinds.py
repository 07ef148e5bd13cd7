"""Every gemm bias kind (per column, per row, full, scalar) trains in QEMU like the reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytestmark = pytest.mark.qemu


def _bias_model(path: Path, bias_shape: tuple[int, ...]) -> Path:
    rng = np.random.default_rng(5)
    batch, features, classes = 3, 6, 5
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["h"], name="fc", transB=1, beta=0.7),
             helper.make_node("Tanh", ["h"], ["logits"], name="tanh")]
    inits = [numpy_helper.from_array(rng.standard_normal((classes, features)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(bias_shape).astype(np.float32), "c")]
    graph = helper.make_graph(nodes, "bias_kinds",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("bias_shape", [(5,), (1, 5), (3, 1), (3, 5), (1,), ()],
                         ids=["col", "col2d", "row", "full", "scalar1", "scalar0"])
def test_gemm_bias_kind(tmp_path: Path, toolchain, bias_shape: tuple[int, ...]) -> None:
    model = _bias_model(tmp_path / "bias.onnx", bias_shape)
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "tinyodl", "simulate", str(model), "--steps", "2", "--cores",
                             "3", "--quiet", "--lr", "0.1", "--report", str(report)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(report.read_text())["check"]["ok"]

"""More awkward shapes in QEMU: depthwise with a channel multiplier, strided pooling with padding, batch 3."""

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


def _model(path: Path) -> Path:
    rng = np.random.default_rng(13)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "pre.w"], ["pre"], name="pre", pads=[1, 1, 1, 1]),
        n("Conv", ["pre", "dw.w", "dw.b"], ["dw"], name="dw_mult2", group=3, strides=[2, 1], pads=[2, 1, 0, 1]),
        n("Tanh", ["dw"], ["t"], name="tanh"),
        n("AveragePool", ["t"], ["ap"], name="avg_incl", kernel_shape=[3, 2], strides=[1, 2], pads=[1, 0, 1, 1],
          count_include_pad=1),
        n("MaxPool", ["ap"], ["mp"], name="max_s2", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        n("Conv", ["mp", "c.w"], ["c"], name="conv_1x1_nobias"),
        n("Relu", ["c"], ["r"], name="relu"),
        n("Flatten", ["r"], ["f"], name="flatten"),
        n("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), name) for name, s in
             [("pre.w", (3, 3, 3, 3)), ("dw.w", (6, 1, 3, 3)), ("dw.b", (6,)), ("c.w", (4, 6, 1, 1))]]
    graph = helper.make_graph(nodes, "more_shapes", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                    [3, 3, 13, 10])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [3, 7])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = onnx.shape_inference.infer_shapes(model)
    flat = next(v for v in model.graph.value_info if v.name == "f")
    features = flat.type.tensor_type.shape.dim[1].dim_value
    model.graph.initializer.extend([
        numpy_helper.from_array((rng.standard_normal((7, features)) * 0.3).astype(np.float32), "fc.w"),
        numpy_helper.from_array(rng.standard_normal(7).astype(np.float32), "fc.b")])
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("cores", [1, 7])
def test_depthwise_multiplier_and_padded_pooling(tmp_path: Path, toolchain, cores: int) -> None:
    model = _model(tmp_path / "more.onnx")
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "tinyodl", "simulate", str(model), "--steps", "2", "--cores",
                             str(cores), "--optimizer", "adam", "--lr", "0.01", "--quiet", "--report", str(report)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(report.read_text())
    assert data["check"]["ok"]
    backward = {layer["name"]: layer["op"] for layer in data["layers"] if layer["phase"] == "backward"}
    assert "conv2d_grad_input" in backward["dw_mult2"] and "conv2d_grad_weight" in backward["dw_mult2"]
    ops = {op for layer in data["layers"] for op in layer["op"].split("+")}
    assert {"avgpool2d_grad", "maxpool2d_grad", "tanh_grad"} <= ops


def test_broadcast_parameter_gradient_over_middle_axes(tmp_path: Path, toolchain) -> None:
    """An Add of a [C, 1, W] parameter reduces its gradient over batch and height: the generic reduction."""
    rng = np.random.default_rng(17)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             n("Add", ["c", "p"], ["a"], name="add_cw"),
             n("Sigmoid", ["a"], ["s"], name="sigmoid"),
             n("GlobalAveragePool", ["s"], ["g"], name="gap"),
             n("Flatten", ["g"], ["logits"], name="flatten")]
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), name)
             for name, s in [("w", (4, 3, 3, 3)), ("p", (4, 1, 5))]]
    graph = helper.make_graph(nodes, "middle_axes", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                   [2, 3, 6, 5])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 4])], inits)
    model = tmp_path / "middle.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "tinyodl", "simulate", str(model), "--steps", "2", "--cores", "3",
                             "--lr", "0.5", "--quiet", "--report", str(report), "--build-dir", str(tmp_path / "b")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(report.read_text())["check"]["ok"]
    assert "reduce_sum_nd(" in (tmp_path / "b" / "src" / "network.c").read_text()


def test_softmax_over_channels_in_the_middle(tmp_path: Path, toolchain) -> None:
    """A softmax along axis 1 of an NCHW tensor, followed by more layers: the strided softmax kernels."""
    rng = np.random.default_rng(19)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             n("Softmax", ["c"], ["s"], name="channel_softmax", axis=1),
             n("Conv", ["s", "w2"], ["c2"], name="conv2"),
             n("GlobalAveragePool", ["c2"], ["g"], name="gap"),
             n("Flatten", ["g"], ["logits"], name="flatten")]
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.7).astype(np.float32), name)
             for name, s in [("w", (5, 2, 3, 3)), ("w2", (3, 5, 1, 1))]]
    graph = helper.make_graph(nodes, "channel_softmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                       [2, 2, 4, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 3])], inits)
    model = tmp_path / "softmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "tinyodl", "simulate", str(model), "--steps", "2", "--cores", "5",
                             "--lr", "0.5", "--quiet", "--report", str(report), "--build-dir", str(tmp_path / "b")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(report.read_text())["check"]["ok"]
    network_c = (tmp_path / "b" / "src" / "network.c").read_text()
    assert "softmax_axis_fwd(" in network_c and "softmax_axis_grad(" in network_c

"""Hand-built sharing: one initializer read directly by several nodes stays one parameter (its gradient the
sum of its uses') and the report names it; Identity copies of an initializer are parameters of their own;
a tensor read as a batch norm's running statistic anywhere is never trained."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tinyodl
from tinyodl.driver.options import Options
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.ir.types import Role


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], shape: tuple[int, ...],
           out: tuple[int, ...]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _twice_used_weight() -> tuple[onnx.ModelProto, np.ndarray]:
    weight = (np.eye(4) * 0.5 + 0.1).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w"], ["y"], name="mm2")]
    return _model(nodes, [numpy_helper.from_array(weight, "w")], (2, 4), (2, 4)), weight


def test_directly_shared_weight_is_one_parameter_with_summed_gradient() -> None:
    model, weight = _twice_used_weight()
    result = tinyodl.simulate(model, target="reference", lr=0.1)
    assert result.report["shared_params"] == {"w": ["mm1", "mm2"]}
    graph = build_training_graph(model, Options())
    assert [v.name for v in graph.params if v.role is Role.PARAM and v.trainable] == ["w"]
    # the same step by hand: y = relu(x w) w, cross-entropy over the batch mean, on the first random batch
    from tinyodl.driver.data import load_batches
    feed = load_batches(graph, None, 1).steps[0]
    x, labels = feed["x"].astype(np.float64), feed[next(k for k in feed if k.startswith("target"))]
    h = x @ weight
    r = np.maximum(h, 0)
    y = r @ weight
    p = np.exp(y - y.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dy = (p - np.eye(4)[labels]) / len(x)
    grad = r.T @ dy + x.T @ ((dy @ weight.T) * (h > 0))
    np.testing.assert_allclose(result.params["w"], weight - 0.1 * grad, rtol=1e-6, atol=1e-7)


def _bn(name: str, x: str, y: str, scale: str, bias: str, mean: str, var: str) -> onnx.NodeProto:
    return helper.make_node("BatchNormalization", [x, scale, bias, mean, var], [y], name=name)


def test_a_tensor_read_as_a_statistic_is_never_trained() -> None:
    """'s' is bn1's scale and bn2's running variance, read directly (real sharing): training it would move
    bn2's statistic, so it stays frozen; bn2's own scale (an Identity copy of 's') trains."""
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    inits = [numpy_helper.from_array(ones * 1.5, "s"), numpy_helper.from_array(zeros, "b"),
             numpy_helper.from_array(zeros + 0.2, "m")]
    nodes = [helper.make_node("Identity", ["s"], ["s_copy"]), helper.make_node("Identity", ["s_copy"], ["s2"]),
             _bn("bn1", "x", "h", "s", "b", "m", "s2"), helper.make_node("Relu", ["h"], ["r"]),
             _bn("bn2", "r", "z", "s2", "b", "m", "s"), helper.make_node("Flatten", ["z"], ["y"])]
    model = _model(nodes, inits, (2, 3, 1, 1), (2, 3))
    graph = build_training_graph(model, Options())
    params = {v.name: v for v in graph.params if v.role is Role.PARAM}
    assert set(params) == {"s", "b", "m", "s2"}
    assert not params["s"].trainable and not params["m"].trainable and not params["s2"].trainable
    assert params["b"].trainable
    result = tinyodl.simulate(model, target="reference", lr=0.5, steps=2)
    np.testing.assert_array_equal(result.params["s"], ones * 1.5)
    np.testing.assert_array_equal(result.params["m"], zeros + 0.2)
    assert not np.array_equal(result.params["b"], zeros)
    assert result.report["shared_params"] == {"s": ["bn1", "bn2"], "b": ["bn1", "bn2"], "m": ["bn1", "bn2"],
                                              "s2": ["bn1", "bn2"]}


def test_identity_copies_of_a_weight_train_apart() -> None:
    weight = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    nodes = [helper.make_node("Identity", ["w"], ["w_copy"]),
             helper.make_node("MatMul", ["x", "w"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w_copy"], ["y"], name="mm2")]
    model = _model(nodes, [numpy_helper.from_array(weight, "w")], (2, 4), (2, 4))
    result = tinyodl.simulate(model, target="reference", lr=0.1)
    assert result.report["shared_params"] == {}
    assert set(result.params) == {"w", "w_copy"}
    assert not np.allclose(result.params["w"], result.params["w_copy"])


@pytest.mark.parametrize("train", ["w", "w_copy"])
def test_a_copy_can_be_trained_alone(train: str) -> None:
    weight = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    nodes = [helper.make_node("Identity", ["w"], ["w_copy"]),
             helper.make_node("MatMul", ["x", "w"], ["h"], name="mm1"),
             helper.make_node("MatMul", ["h", "w_copy"], ["y"], name="mm2")]
    model = _model(nodes, [numpy_helper.from_array(weight, "w")], (2, 4), (2, 4))
    result = tinyodl.simulate(model, target="reference", lr=0.1, train=train)
    frozen = "w_copy" if train == "w" else "w"
    np.testing.assert_array_equal(result.params[frozen], weight)
    assert not np.allclose(result.params[train], weight)

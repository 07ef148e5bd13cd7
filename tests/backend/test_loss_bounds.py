"""The float32 bounds of the cross-entropy's gradient (driver/bounds.py) on a confident model at batch 1, where
softmax - onehot cancels to a few eps32: the kernel's own float32 arithmetic (backend_c/kernels/loss.c, replayed
here with numpy float32 operations) legitimately differs from float64 by several eps32, which the bounds of the
loss gradient and of the bias gradient, that batch 1 makes equal to it, must cover."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinyodl.driver.bounds import F32_EPS, run_step
from tinyodl.driver.options import Options
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.ir.graph import Graph

CLASSES = 10


def _one_layer(logits: np.ndarray) -> Graph:
    """x [1, 1] -> Gemm -> logits: with x = 1 and a zero bias the logits are the weight column, exactly."""
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "fc.w", "fc.b"], ["logits"], name="fc", transB=1)], "confident",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, logits.size])],
        [numpy_helper.from_array(logits.reshape(-1, 1).astype(np.float32), "fc.w"),
         numpy_helper.from_array(np.zeros(logits.size, np.float32), "fc.b")])
    return build_training_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), Options())


def _kernel_grad(logits: np.ndarray, label: int) -> np.ndarray:
    """softmax_cross_entropy_grad of one row as the kernel computes it, every operation in float32."""
    z = logits.astype(np.float32)
    exps = np.exp(z - np.max(z))
    total = np.float32(0.0)
    for item in exps:  # the kernel's running sum, in order
        total = np.float32(total + item)
    inv, inv_n = np.float32(1.0) / total, np.float32(1.0)
    grad = exps * inv * inv_n
    grad[label] -= inv_n
    return grad


def _kernel_loss(logits: np.ndarray, label: int) -> np.float32:
    """softmax_cross_entropy of one row as the kernel computes it, in float32."""
    z = logits.astype(np.float32)
    total = np.float32(0.0)
    for item in np.exp(z - np.max(z)):
        total = np.float32(total + item)
    return np.float32(np.log(total) - (z[label] - np.max(z)))


@pytest.mark.parametrize("label", [0, 4])
@pytest.mark.parametrize("share", [0.6, 0.9, 0.99])
def test_a_confident_batch_of_one_is_within_its_bounds(label: int, share: float) -> None:
    # every other class has exp(z_j - z_label) under eps32: each one the running sum adds after the label's
    # 1 is rounded away, so float32 loses that part of 1 - p_label while float64 keeps it
    logits = np.full(CLASSES, np.log(share * F32_EPS))
    logits[label] = 0.0
    logits = logits.astype(np.float32).astype(np.float64)
    graph = _one_layer(logits)
    run = run_step(graph, {v.name: np.asarray(graph.initial[v.name]) for v in graph.params + graph.state},
                   {"x": np.ones((1, 1)), "target": np.array([label])})
    simulated = _kernel_grad(logits, label)
    for grad in ("logits.grad", "fc.b.grad"):
        error = np.abs(simulated - run.values[grad].reshape(-1))
        assert error[label] > 0.5 * (CLASSES - 1 - label) * share * F32_EPS  # as confident as intended
        bound = run.bounds[grad].reshape(-1)
        assert np.all(error <= bound), (grad, error / F32_EPS, bound / F32_EPS)
        assert np.all(bound < 64 * F32_EPS), bound / F32_EPS  # still a bound of a few roundings
    loss_error = abs(float(_kernel_loss(logits, label)) - float(run.values["loss"]))
    assert loss_error <= float(run.bounds["loss"])

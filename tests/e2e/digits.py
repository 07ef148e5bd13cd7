"""A small CNN for scikit-learn's 8x8 digits (1 x 8 x 8 -> 10 classes) and the digits as a tinyodl data file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def digits_cnn(path: Path, batch: int) -> Path:
    """conv 3x3 (8) - relu - maxpool 2 - conv 3x3 (16) - relu - flatten - gemm (10), He-initialised."""
    rng = np.random.default_rng(3)

    def init(name: str, shape: tuple[int, ...], fan_in: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(np.float32), name)

    n = helper.make_node
    nodes = [n("Conv", ["x", "c1.w", "c1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             n("Relu", ["c1"], ["r1"], name="relu1"),
             n("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
             n("Conv", ["p1", "c2.w", "c2.b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             n("Relu", ["c2"], ["r2"], name="relu2"),
             n("Flatten", ["r2"], ["f"], name="flatten"),
             n("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1)]
    inits = [init("c1.w", (8, 1, 3, 3), 9), numpy_helper.from_array(np.zeros(8, np.float32), "c1.b"),
             init("c2.w", (16, 8, 3, 3), 72), numpy_helper.from_array(np.zeros(16, np.float32), "c2.b"),
             init("fc.w", (10, 256), 256), numpy_helper.from_array(np.zeros(10, np.float32), "fc.b")]
    graph = helper.make_graph(nodes, "digits_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  [batch, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def digits_data(path: Path) -> Path:
    """All 1,797 digits, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(path, x=(digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8),
             target=digits.target.astype(np.int64))
    return path

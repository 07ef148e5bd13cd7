"""Small ONNX models with awkward shapes that exercise every kernel, forward and backward."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, shape: tuple[int, ...], rng: np.random.Generator, scale: float = 0.5) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def save(path: Path, nodes: list, inputs: list, outputs: list, inits: list, name: str = "odd") -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def conv_zoo(path: Path, batch: int = 2) -> Path:
    """Dense conv (stride 2, asymmetric pads, 3 -> 5 channels), BN, depthwise conv, pooling, residual add,
    activations, global pooling and two Gemms."""
    rng = np.random.default_rng(7)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "c1.w", "c1.b"], ["c1"], name="conv1", strides=[2, 2], pads=[1, 0, 2, 1]),
        n("BatchNormalization", ["c1", "bn.g", "bn.b", "bn.m", "bn.v"], ["bn"], name="bn1", epsilon=1e-3),
        n("Relu", ["bn"], ["r1"], name="relu1"),
        n("Conv", ["r1", "dw.w"], ["dw"], name="dwconv", group=5, pads=[1, 1, 1, 1]),
        n("LeakyRelu", ["dw"], ["lr"], name="leaky", alpha=0.2),
        n("Add", ["lr", "r1"], ["res"], name="residual"),
        n("MaxPool", ["res"], ["mp"], name="maxpool", kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1]),
        n("AveragePool", ["mp"], ["ap"], name="avgpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
          count_include_pad=0),
        n("Conv", ["ap", "pw.w", "pw.b"], ["pw"], name="pointwise"),
        n("Sigmoid", ["pw"], ["sg"], name="sigmoid"),
        n("GlobalAveragePool", ["sg"], ["gap"], name="gap"),
        n("Flatten", ["gap"], ["flat"], name="flatten"),
        n("Gemm", ["flat", "fc1.w", "fc1.b"], ["fc1"], name="fc1", transB=1),
        n("Tanh", ["fc1"], ["th"], name="tanh"),
        n("Gemm", ["th", "fc2.w", "fc2.b"], ["logits"], name="fc2", transB=1, alpha=0.9, beta=1.1),
    ]
    inits = [
        _init("c1.w", (5, 3, 3, 3), rng), _init("c1.b", (5,), rng),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 5).astype(np.float32), "bn.g"), _init("bn.b", (5,), rng),
        _init("bn.m", (5,), rng, 0.1), numpy_helper.from_array(rng.uniform(0.5, 2, 5).astype(np.float32), "bn.v"),
        _init("dw.w", (5, 1, 3, 3), rng), _init("pw.w", (7, 5, 1, 1), rng), _init("pw.b", (7,), rng),
        _init("fc1.w", (9, 7), rng), _init("fc1.b", (9,), rng), _init("fc2.w", (6, 9), rng),
        _init("fc2.b", (6,), rng),
    ]
    return save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 11, 9])],
                [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 6])], inits)


def dense_zoo(path: Path, batch: int = 3) -> Path:
    """MatMul, broadcast Add, Clip (ReLU6), Gemm with transA and a full C, Softmax in the middle."""
    rng = np.random.default_rng(11)
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "w1"], ["mm"], name="matmul"),
        n("Add", ["mm", "b1"], ["add"], name="bias_add"),
        n("Clip", ["add", "lo", "hi"], ["clip"], name="relu6"),
        n("Softmax", ["clip"], ["sm"], name="softmax", axis=1),
        n("Gemm", ["wt", "sm", "c"], ["g"], name="gemm_ta", transA=1, transB=1),
        n("Relu", ["g"], ["logits"], name="relu"),
    ]
    inits = [_init("w1", (13, 11), rng), _init("b1", (11,), rng),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
             _init("wt", (11, 5), rng), _init("c", (5, batch), rng)]
    return save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 13])],
                [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [5, batch])], inits)


def hostile_names(path: Path) -> Path:
    """Names full of characters that break naive C generation."""
    rng = np.random.default_rng(3)
    weird_w = 'w"*/\n#define x 1\\'
    weird_b = "b /* #include */ ??="
    node = helper.make_node("Gemm", ["in\"put*/", weird_w, weird_b], ["out\n#"], name="node */ \" \n #pragma",
                            transB=1)
    relu = helper.make_node("Relu", ["out\n#"], ["logits"], name="r\\")
    return save(path, [node, relu], [helper.make_tensor_value_info("in\"put*/", TensorProto.FLOAT, [2, 5])],
                [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 4])],
                [_init(weird_w, (4, 5), rng), _init(weird_b, (4,), rng)], name='graph "*/')

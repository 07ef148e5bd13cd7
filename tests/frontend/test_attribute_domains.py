"""Attributes outside their domain are refused when the model is read, naming node, attribute and value
(non-finite floats ran and ended 'training diverged'; an out-of-range Flatten axis ended in a traceback)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinyodl.frontend import FrontendError, import_onnx
from tinyodl.frontend.onnx_attrs import RULES

INF, NAN = float("inf"), float("nan")


def _model(nodes: list[onnx.NodeProto], x: tuple[int, ...], y: tuple[int, ...],
           inits: list[onnx.TensorProto] = (), opset: int = 17) -> onnx.ModelProto:  # type: ignore[assignment]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _w(*shape: int, name: str = "w") -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def _leaky(alpha: float) -> onnx.ModelProto:
    return _model([helper.make_node("LeakyRelu", ["x"], ["h"], name="act", alpha=alpha),
                   helper.make_node("MatMul", ["h", "w"], ["y"])], (2, 4), (2, 3), [_w(4, 3)])


def _gemm(**attrs: object) -> onnx.ModelProto:
    return _model([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", **attrs)], (2, 4), (2, 3), [_w(4, 3)])


def _flatten(axis: int) -> onnx.ModelProto:
    """[1, 3, 14, 14] flattened at `axis` (any of 0, 1 or -4 gives [1, 588]; 4 gives [588, 1])."""
    rows = 588 if axis == 4 else 1
    return _model([helper.make_node("Flatten", ["x"], ["f"], name="flat", axis=axis),
                   helper.make_node("MatMul", ["f", "w"], ["y"])], (1, 3, 14, 14), (rows, 3), [_w(588 // rows, 3)])


def _softmax(axis: int) -> onnx.ModelProto:
    return _model([helper.make_node("MatMul", ["x", "w"], ["h"]),
                   helper.make_node("Softmax", ["h"], ["y"], name="sm", axis=axis)], (2, 4), (2, 3), [_w(4, 3)])


def _conv(**attrs: object) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", **attrs),
             helper.make_node("Flatten", ["c"], ["y"])]
    return _model(nodes, (1, 1, 6, 6), (1, 36), [_w(1, 1, 3, 3)])


def _pool(op: str, **attrs: object) -> onnx.ModelProto:
    nodes = [helper.make_node(op, ["x"], ["p"], name="pool", **{"kernel_shape": [2, 2], **attrs}),
             helper.make_node("Flatten", ["p"], ["y"])]
    return _model(nodes, (1, 1, 4, 4), (1, 9))


def _batchnorm(**attrs: object) -> onnx.ModelProto:
    inits = [_w(2, name=name) for name in ("s", "b", "m", "v")]
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["n"], name="bn", **attrs),
             helper.make_node("Flatten", ["n"], ["y"])]
    return _model(nodes, (2, 2, 1, 1), (2, 2), inits)


def _reduce_mean(**attrs: object) -> onnx.ModelProto:
    nodes = [helper.make_node("ReduceMean", ["x"], ["g"], name="mean", **attrs),
             helper.make_node("Flatten", ["g"], ["y"])]
    return _model(nodes, (2, 3, 4, 4), (2, 3))


CASES = [
    (_leaky(INF), "node 'act' (LeakyRelu): attribute alpha = inf is not finite"),
    (_leaky(-INF), "attribute alpha = -inf is not finite"),
    (_gemm(alpha=NAN), "node 'fc' (Gemm): attribute alpha = nan is not finite"),
    (_gemm(beta=INF), "attribute beta = inf"),
    (_gemm(transB=2), "attribute transB = 2 must be 0 or 1"),
    (_flatten(4611686018427387904), "node 'flat' (Flatten): attribute axis = 4611686018427387904 is out of "
                                    "range [-4, 4] for a rank-4 input"),
    (_flatten(-5), "attribute axis = -5 is out of range [-4, 4]"),
    (_softmax(2), "node 'sm' (Softmax): attribute axis = 2 is out of range [-2, 1]"),
    (_conv(strides=[0, 1]), "node 'conv' (Conv): attribute strides = [0, 1] must hold values in [1, "),
    (_conv(pads=[-1, 0, 0, 0]), "attribute pads = [-1, 0, 0, 0] must hold values in [0, "),
    (_conv(pads=[2**40, 0, 0, 0]), "attribute pads = [1099511627776, 0, 0, 0]"),
    (_conv(dilations=[0, 0]), "attribute dilations = [0, 0]"),
    (_conv(group=0), "attribute group = 0"),
    (_conv(auto_pad="SAME"), "attribute auto_pad = 'SAME' must be one of NOTSET"),
    (_pool("MaxPool", kernel_shape=[0, 2]), "node 'pool' (MaxPool): attribute kernel_shape = [0, 2]"),
    (_pool("AveragePool", count_include_pad=3), "attribute count_include_pad = 3 must be 0 or 1"),
    (_pool("MaxPool", ceil_mode=-1), "attribute ceil_mode = -1"),
    (_batchnorm(epsilon=0.0), "node 'bn' (BatchNormalization): attribute epsilon = 0.0 must be finite and > 0"),
    (_batchnorm(epsilon=NAN), "attribute epsilon = nan"),
    (_batchnorm(epsilon=-1e-5), "attribute epsilon = -1e-05"),
    (_reduce_mean(axes=[2, 7]), "node 'mean' (ReduceMean): attribute axes = [2, 7] is out of range [-4, 3]"),
    (_reduce_mean(axes=[2, 3], keepdims=5), "attribute keepdims = 5 must be 0 or 1"),
]


@pytest.mark.parametrize("model, fragment", CASES, ids=[fragment[:40] for _, fragment in CASES])
def test_attribute_out_of_domain(model: onnx.ModelProto, fragment: str) -> None:
    with pytest.raises(FrontendError) as info:
        import_onnx(model)
    assert fragment in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_every_converted_operator_has_rules() -> None:
    """The table covers every operator with attributes the converters read."""
    assert {"Conv", "Gemm", "LeakyRelu", "MaxPool", "AveragePool", "BatchNormalization", "Flatten", "Softmax",
            "Reshape", "ReduceMean"} <= set(RULES)


@pytest.mark.parametrize("model", [_leaky(0.2), _gemm(alpha=0.5, beta=2.0, transB=0), _flatten(-4), _flatten(4),
                                   _softmax(-1), _conv(pads=[1, 1, 1, 1], strides=[1, 1]), _batchnorm(epsilon=1e-3),
                                   _pool("AveragePool", strides=[1, 1], count_include_pad=1),
                                   _reduce_mean(axes=[-1, -2], keepdims=0)])
def test_values_inside_the_domain_import(model: onnx.ModelProto) -> None:
    import_onnx(model)


@pytest.mark.parametrize("low, high, fragment", [(np.nan, 1.0, "min is NaN"), (0.0, np.nan, "max is NaN"),
                                                 (2.0, 1.0, "min 2.0 is above max 1.0")])
def test_clip_bounds(low: float, high: float, fragment: str) -> None:
    inits = [numpy_helper.from_array(np.float32(low), "lo"), numpy_helper.from_array(np.float32(high), "hi"), _w(4, 3)]
    model = _model([helper.make_node("Clip", ["x", "lo", "hi"], ["c"], name="clip"),
                    helper.make_node("MatMul", ["c", "w"], ["y"])], (2, 4), (2, 3), inits)
    with pytest.raises(FrontendError, match=fragment):
        import_onnx(model)

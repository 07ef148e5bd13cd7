"""ONNX import: the example models and one small model per op variant, each checked against onnx's
ReferenceEvaluator through the IR's reference Executor; every rejected input ends in one FrontendError
line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tinyodl.frontend import FrontendError, import_onnx
from tinyodl.ir.executor import Executor
from tinyodl.ir.graph import Graph
from tinyodl.ir.text import parse_graph, print_graph
from tinyodl.ir.types import Role
from tinyodl.ir.verify import verify_graph

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_NAMES = sorted(path.stem for path in EXAMPLES.glob("*.onnx"))
RTOL, ATOL = 1e-5, 1e-6


# -- helpers ----------------------------------------------------------------------------------
def make_model(nodes: Sequence[onnx.NodeProto], inputs: dict[str, Sequence[int | str]],
               outputs: Sequence[str] = ("y",), initializers: dict[str, np.ndarray] | None = None,
               opset: int = 17, name: str = "g") -> onnx.ModelProto:
    """A model whose graph outputs carry the shapes ONNX infers (the checker wants them declared)."""
    graph = helper.make_graph(
        list(nodes), name,
        [helper.make_tensor_value_info(key, TensorProto.FLOAT, list(shape)) for key, shape in inputs.items()],
        [helper.make_tensor_value_info(key, TensorProto.FLOAT, None) for key in outputs],
        [numpy_helper.from_array(np.asarray(value), key) for key, value in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = onnx.shape_inference.infer_shapes(model)
    del model.graph.value_info[:]
    return model


def weights(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def random_feeds(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {value.name: rng.standard_normal(value.shape).astype(np.float32) for value in graph.inputs}


def assert_round_trip(graph: Graph) -> None:
    text = print_graph(graph)
    assert print_graph(parse_graph(text)) == text


def check_model(model: onnx.ModelProto, **kwargs: int) -> Graph:
    """Import, verify, round-trip the text, and compare the forward outputs with the ONNX reference."""
    graph = import_onnx(model, **kwargs)
    verify_graph(graph)
    assert_round_trip(graph)
    feeds = random_feeds(graph)
    ours = Executor(graph).run(feeds)
    expected = ReferenceEvaluator(model).run(None, feeds)
    for value, want in zip(graph.outputs, expected, strict=True):
        np.testing.assert_allclose(ours[value.name], want, rtol=RTOL, atol=ATOL, err_msg=value.name)
    return graph


def import_error(source: onnx.ModelProto | Path | str, **kwargs: int) -> str:
    with pytest.raises(FrontendError) as info:
        import_onnx(source, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def single_op(op_type: str, x_shape: Sequence[int | str], inputs: Sequence[str] = ("x",),
              initializers: dict[str, np.ndarray] | None = None, opset: int = 17,
              outputs: Sequence[str] = ("y",), **attrs: object) -> onnx.ModelProto:
    node = helper.make_node(op_type, list(inputs), list(outputs), name=f"{op_type.lower()}1", **attrs)
    return make_model([node], {"x": x_shape}, outputs=outputs[:1], initializers=initializers, opset=opset)


# -- the example models -----------------------------------------------------------------------
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_matches_reference_evaluator(name: str) -> None:
    path = EXAMPLES / f"{name}.onnx"
    graph = import_onnx(path)
    verify_graph(graph)
    assert_round_trip(graph)
    feeds = random_feeds(graph)
    (expected,) = ReferenceEvaluator(str(path)).run(None, feeds)
    ours = Executor(graph).run(feeds)[graph.outputs[0].name]
    np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_structure(name: str) -> None:
    model = onnx.load(str(EXAMPLES / f"{name}.onnx"))
    graph = import_onnx(EXAMPLES / f"{name}.onnx")
    assert graph.name == model.graph.name
    assert [v.name for v in graph.inputs] == ["input"]
    assert [v.name for v in graph.outputs] == ["logits"]
    # Every initializer is a frozen parameter under its ONNX name, in file order.
    assert [v.name for v in graph.params] == [init.name for init in model.graph.initializer]
    assert all(v.role is Role.PARAM and not v.trainable for v in graph.params)
    for init in model.graph.initializer:
        np.testing.assert_array_equal(graph.initial[init.name], numpy_helper.to_array(init))
    converted = [node.name for node in model.graph.node if node.op_type != "Constant"]
    assert [op.node for op in graph.ops] == converted


def test_lenet_batch_override_matches_per_sample() -> None:
    path = EXAMPLES / "lenet.onnx"
    graph = import_onnx(path, batch=3)
    verify_graph(graph)
    assert graph.inputs[0].shape == (3, 1, 28, 28)
    assert graph.outputs[0].shape == (3, 10)
    assert all(op.outputs[0].shape[0] == 3 for op in graph.ops)
    feeds = random_feeds(graph)
    ours = Executor(graph).run(feeds)["logits"]
    reference = ReferenceEvaluator(str(path))
    for sample in range(3):
        (expected,) = reference.run(None, {"input": feeds["input"][sample: sample + 1]})
        np.testing.assert_allclose(ours[sample: sample + 1], expected, rtol=RTOL, atol=ATOL)


# -- Conv -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("attrs", "x_shape", "w_shape", "expected_pads"), [
    ({}, (1, 3, 7, 6), (4, 3, 3, 3), (0, 0, 0, 0)),
    ({"pads": [1, 0, 2, 1], "strides": [2, 1]}, (2, 3, 8, 7), (5, 3, 3, 2), (1, 0, 2, 1)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (1, 2, 9, 8), (3, 2, 4, 3), (1, 0, 2, 1)),
    ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, (1, 2, 9, 8), (3, 2, 4, 3), (2, 1, 1, 0)),
    ({"auto_pad": "VALID", "strides": [1, 2]}, (1, 2, 6, 6), (3, 2, 3, 3), (0, 0, 0, 0)),
    ({"group": 4, "pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}, (1, 4, 5, 5), (4, 1, 3, 3), (1, 1, 1, 1)),
    ({"group": 3, "pads": [0, 1, 1, 0]}, (1, 3, 5, 5), (6, 1, 2, 2), (0, 1, 1, 0)),  # channel multiplier 2
    ({"dilations": [1, 1], "auto_pad": "NOTSET", "pads": [2, 2, 2, 2]}, (1, 1, 4, 4), (2, 1, 5, 5),
     (2, 2, 2, 2)),
])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv(attrs: dict[str, object], x_shape: tuple[int, ...], w_shape: tuple[int, ...],
              expected_pads: tuple[int, ...], with_bias: bool) -> None:
    inits = {"w": weights(*w_shape)}
    if with_bias:
        inits["b"] = weights(w_shape[0], seed=2)
    model = single_op("Conv", x_shape, ["x", *inits], inits, **attrs)
    graph = check_model(model)
    (op,) = graph.ops
    assert op.type == "conv2d" and op.node == "conv1"
    assert op.attrs["pads"] == expected_pads
    assert [v.name for v in op.inputs] == ["x", *inits]


def test_conv_rejects_dilations() -> None:
    model = single_op("Conv", (1, 1, 8, 8), ["x", "w"], {"w": weights(2, 1, 3, 3)}, dilations=[2, 2])
    assert import_error(model) == "node 'conv1' (Conv, opset 17): dilations [2, 2] unsupported (only 1)"


def test_conv_rejects_grouped() -> None:
    model = single_op("Conv", (1, 4, 6, 6), ["x", "w"], {"w": weights(4, 2, 3, 3)}, group=2)
    assert "group 2 unsupported" in import_error(model)


def test_conv_rejects_1d() -> None:
    model = single_op("Conv", (1, 2, 9), ["x", "w"], {"w": weights(3, 2, 3)})
    assert "only 2-D convolution" in import_error(model)


# -- Gemm / MatMul ----------------------------------------------------------------------------
@pytest.mark.parametrize("c_shape", [None, (4,), (1, 4), (3, 4), (), (3, 1)])
@pytest.mark.parametrize(("trans_a", "trans_b"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm(c_shape: tuple[int, ...] | None, trans_a: int, trans_b: int) -> None:
    m, k, n = 3, 5, 4
    x_shape = (k, m) if trans_a else (m, k)
    inits = {"b": weights(*((n, k) if trans_b else (k, n)))}
    if c_shape is not None:
        inits["c"] = weights(*c_shape, seed=3)
    model = single_op("Gemm", x_shape, ["x", *inits], inits, transA=trans_a, transB=trans_b,
                      alpha=0.5, beta=-1.5)
    graph = check_model(model)
    (op,) = graph.ops
    assert op.attrs == {"trans_a": trans_a, "trans_b": trans_b, "alpha": 0.5, "beta": -1.5}


def test_matmul() -> None:
    model = single_op("MatMul", (3, 5), ["x", "w"], {"w": weights(5, 2)})
    (op,) = check_model(model).ops
    assert op.type == "gemm" and len(op.inputs) == 2


def test_matmul_rejects_batched() -> None:
    model = single_op("MatMul", (2, 3, 5), ["x", "w"], {"w": weights(5, 2)})
    assert "only 2-D operands" in import_error(model)


# -- element-wise -----------------------------------------------------------------------------
@pytest.mark.parametrize("other_shape", [(2, 3, 4, 5), (3, 1, 1), (5,), ()])
def test_add_broadcasts(other_shape: tuple[int, ...]) -> None:
    model = single_op("Add", (2, 3, 4, 5), ["x", "b"], {"b": weights(*other_shape)})
    check_model(model)


def test_add_of_two_activations() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "x"], ["y"])]
    graph = check_model(make_model(nodes, {"x": (2, 3)}))
    assert [op.node for op in graph.ops] == ["Relu_0", "Add_1"]


@pytest.mark.parametrize(("op_type", "ir_type", "attrs"), [
    ("Relu", "relu", {}), ("Sigmoid", "sigmoid", {}), ("Tanh", "tanh", {}),
    ("LeakyRelu", "leaky_relu", {}), ("LeakyRelu", "leaky_relu", {"alpha": 0.25}),
])
def test_activations(op_type: str, ir_type: str, attrs: dict[str, object]) -> None:
    (op,) = check_model(single_op(op_type, (2, 3, 4), **attrs)).ops
    assert op.type == ir_type


@pytest.mark.parametrize(("bounds", "expected"), [
    ({"lo": -0.5, "hi": 0.75}, (-0.5, 0.75)),
    ({"hi": 0.5}, (-np.inf, 0.5)),
    ({"lo": 0.0}, (0.0, np.inf)),
    ({}, (-np.inf, np.inf)),
])
def test_clip_bounds_from_initializers(bounds: dict[str, float], expected: tuple[float, float]) -> None:
    inits = {key: np.array(value, np.float32) for key, value in bounds.items()}
    operands = ["x", "lo" if "lo" in bounds else "", "hi" if "hi" in bounds else ""]
    while operands[-1] == "":
        operands.pop()
    graph = check_model(single_op("Clip", (3, 4), operands, inits))
    (op,) = graph.ops
    assert (op.attrs["min"], op.attrs["max"]) == expected
    assert graph.params == []  # the bounds are folded into attributes


def test_relu6_from_constants() -> None:
    zero = numpy_helper.from_array(np.array(0, np.float32))
    nodes = [helper.make_node("Constant", [], ["zero"], value=zero),
             helper.make_node("Constant", [], ["six"], value_float=6.0),
             helper.make_node("Clip", ["x", "zero", "six"], ["y"])]
    graph = check_model(make_model(nodes, {"x": (4, 5)}))
    (op,) = graph.ops
    assert (op.type, op.attrs) == ("clip", {"min": 0.0, "max": 6.0})
    assert graph.params == []


def test_clip_rejects_computed_bound() -> None:
    nodes = [helper.make_node("Relu", ["m"], ["lo"]), helper.make_node("Clip", ["x", "lo"], ["y"], name="c")]
    model = make_model(nodes, {"x": (2,), "m": ()})
    assert "min 'lo' must be an initializer or a Constant" in import_error(model)


@pytest.mark.parametrize("axis", [1, -1, 0])
def test_softmax(axis: int) -> None:
    (op,) = check_model(single_op("Softmax", (2, 3, 4), axis=axis)).ops
    assert op.attrs["axis"] == axis % 3


# -- pooling ----------------------------------------------------------------------------------
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 2, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [2, 3], "auto_pad": "SAME_LOWER"},
    {"kernel_shape": [3, 3], "auto_pad": "VALID", "storage_order": 0, "ceil_mode": 0, "dilations": [1, 1]},
])
def test_maxpool(attrs: dict[str, object]) -> None:
    (op,) = check_model(single_op("MaxPool", (2, 3, 7, 8), **attrs)).ops
    assert op.type == "maxpool2d"


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [1, 0, 1, 2]},
    {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
])
def test_avgpool(attrs: dict[str, object], count_include_pad: int) -> None:
    model = single_op("AveragePool", (1, 2, 7, 6), count_include_pad=count_include_pad, **attrs)
    (op,) = check_model(model).ops
    assert (op.type, op.attrs["count_include_pad"]) == ("avgpool2d", count_include_pad)


def test_global_avgpool() -> None:
    (op,) = check_model(single_op("GlobalAveragePool", (2, 3, 5, 4))).ops
    assert op.outputs[0].shape == (2, 3, 1, 1)


@pytest.mark.parametrize(("op_type", "attrs", "problem"), [
    ("MaxPool", {"ceil_mode": 1}, "ceil_mode 1 unsupported (only 0)"),
    ("MaxPool", {"dilations": [2, 1]}, "dilations [2, 1] unsupported (only 1)"),
    ("MaxPool", {"storage_order": 1}, "storage_order 1 unsupported (only 0)"),
    ("AveragePool", {"ceil_mode": 1}, "ceil_mode 1 unsupported (only 0)"),
    ("MaxPool", {"pads": [2, 0, 0, 0]}, "must be smaller than the kernel"),
])
def test_pool_rejects(op_type: str, attrs: dict[str, object], problem: str) -> None:
    model = single_op(op_type, (1, 1, 6, 6), kernel_shape=[2, 2], **attrs)
    message = import_error(model)
    assert message.startswith(f"node '{op_type.lower()}1' ({op_type}, opset 17): ")
    assert problem in message


def test_maxpool_rejects_indices_output() -> None:
    model = single_op("MaxPool", (1, 1, 4, 4), outputs=("y", "idx"), kernel_shape=[2, 2])
    assert "Indices output is unsupported" in import_error(model)


# -- shapes -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("axis", "expected"), [
    (0, (1, 120)), (1, (2, 60)), (2, (6, 20)), (-1, (24, 5)), (4, (120, 1)),
])
def test_flatten(axis: int, expected: tuple[int, int]) -> None:
    (op,) = check_model(single_op("Flatten", (2, 3, 4, 5), axis=axis)).ops
    assert (op.type, op.attrs["shape"]) == ("reshape", expected)


@pytest.mark.parametrize(("target", "expected"), [
    ([0, -1], (2, 60)), ([-1, 6], (20, 6)), ([0, 0, -1], (2, 3, 20)), ([4, 30], (4, 30)),
    ([2, 3, 4, 5, 1], None),
])
def test_reshape_from_initializer(target: list[int], expected: tuple[int, ...] | None) -> None:
    model = single_op("Reshape", (2, 3, 4, 5), ["x", "shape"], {"shape": np.array(target, np.int64)})
    graph = check_model(model)
    (op,) = graph.ops
    assert op.attrs["shape"] == (expected or tuple(target))
    assert graph.params == []  # the shape operand is consumed


def test_reshape_from_constant_node() -> None:
    nodes = [helper.make_node("Constant", [], ["s"], value_ints=[-1, 4]),
             helper.make_node("Reshape", ["x", "s"], ["y"])]
    graph = check_model(make_model(nodes, {"x": (2, 6)}))
    assert graph.ops[0].attrs["shape"] == (3, 4) and graph.params == []


def test_reshape_rejects_computed_shape() -> None:
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["y"])]
    message = import_error(make_model(nodes, {"x": (2, 6)}))
    assert message == "node 'Shape_0' (Shape, opset 17): unsupported operator"


# -- normalisation, aliases, constants --------------------------------------------------------
def test_batchnorm() -> None:
    channels = 3
    inits = {"gamma": weights(channels, seed=1), "beta": weights(channels, seed=2),
             "mean": weights(channels, seed=3), "var": np.abs(weights(channels, seed=4)) + 0.5}
    model = single_op("BatchNormalization", (2, channels, 4, 4), ["x", *inits], inits, epsilon=1e-3)
    (op,) = check_model(model).ops
    assert op.type == "batchnorm" and op.attrs["epsilon"] == pytest.approx(1e-3)


def test_batchnorm_rejects_training_mode() -> None:
    inits = {name: np.ones(2, np.float32) for name in ("g", "b", "m", "v")}
    model = single_op("BatchNormalization", (1, 2, 3, 3), ["x", *inits], inits, outputs=("y", "rm", "rv"),
                      training_mode=1)
    assert "training_mode 1 unsupported" in import_error(model)


def test_identity_and_dropout_are_aliases() -> None:
    nodes = [helper.make_node("Identity", ["x"], ["i"]),
             helper.make_node("Dropout", ["i", "ratio"], ["d", "mask"]),
             helper.make_node("Relu", ["d"], ["r"]),
             helper.make_node("Dropout", ["r"], ["y"])]
    model = make_model(nodes, {"x": (2, 3)}, initializers={"ratio": np.array(0.5, np.float32)})
    graph = check_model(model)
    (op,) = graph.ops
    assert op.type == "relu" and op.inputs == graph.inputs and graph.outputs == op.outputs
    assert graph.params == []


def test_dropout_rejects_used_mask() -> None:
    nodes = [helper.make_node("Dropout", ["x"], ["d", "mask"], name="drop"),
             helper.make_node("Identity", ["mask"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.BOOL, [2])
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    assert "mask output 'mask' is used" in import_error(model)


def test_constant_operand_becomes_const_param() -> None:
    bias = weights(3, seed=5)
    nodes = [helper.make_node("Constant", [], ["bias"], value=numpy_helper.from_array(bias)),
             helper.make_node("Add", ["x", "bias"], ["y"])]
    graph = check_model(make_model(nodes, {"x": (2, 3)}))
    (param,) = graph.params
    assert (param.name, param.role, param.trainable) == ("bias", Role.CONST, False)
    np.testing.assert_array_equal(graph.initial["bias"], bias)


def test_initializer_listed_as_graph_input_is_a_param() -> None:
    w = weights(4, 2)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])], [numpy_helper.from_array(w, "w")])
    imported = check_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [v.name for v in imported.inputs] == ["x"]
    assert [(v.name, v.role) for v in imported.params] == [("w", Role.PARAM)]


def test_unused_initializer_is_dropped() -> None:
    model = single_op("Relu", (2,), initializers={"spare": weights(3)})
    assert check_model(model).params == []


@pytest.mark.parametrize("opset", [13, 21])
def test_opset_range_accepted(opset: int) -> None:
    check_model(single_op("Softmax", (2, 5), opset=opset))


# -- batch override ---------------------------------------------------------------------------
def _flatten_mlp(reshape_target: list[int], batch_dim: int | str = 1) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Reshape", ["c", "shape"], ["r"]),
             helper.make_node("Gemm", ["r", "fc"], ["y"], transB=1)]
    inits = {"w": weights(2, 1, 3, 3), "shape": np.array(reshape_target, np.int64), "fc": weights(4, 18)}
    return make_model(nodes, {"x": (batch_dim, 1, 5, 5)}, initializers=inits)


@pytest.mark.parametrize("target", [[1, 18], [-1, 18], [0, -1]])
def test_batch_override_rewrites_reshape(target: list[int]) -> None:
    model = _flatten_mlp(target)
    graph = import_onnx(model, batch=4)
    assert graph.inputs[0].shape == (4, 1, 5, 5)
    assert graph.ops[1].attrs["shape"] == (4, 18)
    assert graph.outputs[0].shape == (4, 4)
    feeds = random_feeds(graph)
    ours = Executor(graph).run(feeds)[graph.outputs[0].name]
    reference = ReferenceEvaluator(model)
    for sample in range(4):
        (expected,) = reference.run(None, {"x": feeds["x"][sample: sample + 1]})
        np.testing.assert_allclose(ours[sample: sample + 1], expected, rtol=RTOL, atol=ATOL)
    # The caller's model is untouched.
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


@pytest.mark.parametrize("as_tensor", [True, False])
def test_batch_override_rewrites_constant_node_target(as_tensor: bool) -> None:
    target = np.array([1, 6], np.int64)
    constant = (helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(target)) if as_tensor
                else helper.make_node("Constant", [], ["s"], value_ints=list(target)))
    nodes = [constant, helper.make_node("Reshape", ["x", "s"], ["y"])]
    graph = import_onnx(make_model(nodes, {"x": (1, 2, 3)}), batch=5)
    assert graph.ops[0].attrs["shape"] == (5, 6) and graph.outputs[0].shape == (5, 6)


def test_batch_override_resolves_dynamic_batch() -> None:
    graph = import_onnx(_flatten_mlp([-1, 18], batch_dim="N"), batch=2)
    assert graph.inputs[0].shape == (2, 1, 5, 5) and graph.outputs[0].shape == (2, 4)


def test_batch_override_must_be_positive() -> None:
    assert "batch must be at least 1" in import_error(_flatten_mlp([1, 18]), batch=0)


# -- rejected files and models ----------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.onnx"
    assert import_error(path) == f"{path}: no such file"


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.onnx"
    path.write_bytes((EXAMPLES / "lenet.onnx").read_bytes()[:3000])
    message = import_error(path)
    assert message.startswith(f"{path}: truncated or not an ONNX file")


@pytest.mark.parametrize("content", [b"", b"\x08\x07", b"def main():\n    return 0\n"])
def test_not_an_onnx_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.onnx"
    path.write_bytes(content)
    message = import_error(path)
    assert message.startswith(f"{path}: ") and "ONNX" in message


def test_checker_failure_names_file(tmp_path: Path) -> None:
    model = single_op("Relu", (2,))
    model.graph.node[0].input[0] = "undefined"
    path = tmp_path / "broken.onnx"
    onnx.save(model, str(path))
    assert import_error(path).startswith(f"{path}: invalid ONNX model: ")


def test_shape_inference_failure_names_file() -> None:
    model = single_op("Add", (2, 3), ["x", "b"], {"b": weights(3)})
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weights(4), "b"))
    assert import_error(model).startswith("model 'g': ONNX shape inference failed: ")


def test_conv_weight_mismatch_names_node() -> None:
    model = single_op("Conv", (1, 3, 5, 5), ["x", "w"], {"w": weights(2, 3, 3, 3)})
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weights(2, 4, 3, 3), "w"))
    assert import_error(model).startswith("node 'conv1' (Conv, opset 17): ")


@pytest.mark.parametrize("op_type", ["Pad", "LSTM"])
def test_unsupported_operator(op_type: str) -> None:
    if op_type == "Pad":
        node = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad1")
        inits = {"pads": np.array([0, 1, 0, 1], np.int64)}
        model = make_model([node], {"x": (2, 3)}, initializers=inits)
        assert import_error(model) == "node 'pad1' (Pad, opset 17): unsupported operator"
    else:
        node = helper.make_node("LSTM", ["x", "w", "r"], ["", "y"], hidden_size=2)
        inits = {"w": weights(1, 8, 3), "r": weights(1, 8, 2)}
        model = make_model([node], {"x": (4, 1, 3)}, initializers=inits)
        assert import_error(model) == "node 'LSTM_0' (LSTM, opset 17): unsupported operator"


def test_dynamic_batch_dimension() -> None:
    model = single_op("Relu", ("N", 3))
    assert import_error(model) == ("input 'x' has a dynamic dimension 'N' (axis 0); tinyodl needs static "
                                   "shapes: give the batch size with --batch B (batch=B in the Python API)")


def test_dynamic_inner_dimension_not_fixed_by_batch() -> None:
    model = single_op("Relu", (1, 3, "H"))
    assert import_error(model, batch=2) == ("input 'x' has a dynamic dimension 'H' (axis 2); tinyodl needs "
                                            "static shapes: export the model with fixed sizes")


def test_custom_domain_operator() -> None:
    node = helper.make_node("FusedThing", ["x"], ["y"], domain="com.example", name="f")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    assert import_error(model) == "node 'f' (com.example.FusedThing, opset 17): unsupported operator"


def test_opset_12_rejected() -> None:
    message = import_error(single_op("Relu", (2, 3), opset=12))
    assert "opset 12" in message and message.startswith("model 'g': ")


def test_float64_rejected() -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert import_error(model) == "input 'x' has element type DOUBLE; tinyodl supports float32 and float16"


# -- property: window shapes agree with ONNX shape inference ----------------------------------
@st.composite
def window_cases(draw: st.DrawFn) -> tuple[str, dict[str, object], tuple[int, ...], tuple[int, ...] | None]:
    op_type = draw(st.sampled_from(["Conv", "MaxPool", "AveragePool"]))
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    limit = [k - 1 for k in kernel] if op_type != "Conv" else [3, 3]
    pads = [draw(st.integers(0, limit[axis % 2])) for axis in range(4)]
    strides = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    channels = draw(st.integers(1, 4))
    height = draw(st.integers(max(1, kernel[0] - pads[0] - pads[2]), 12))
    width = draw(st.integers(max(1, kernel[1] - pads[1] - pads[3]), 12))
    x_shape = (draw(st.integers(1, 2)), channels, height, width)
    attrs: dict[str, object] = {"strides": strides, "pads": pads}
    w_shape = None
    if op_type == "Conv":
        depthwise = draw(st.booleans())
        attrs["group"] = channels if depthwise else 1
        out_channels = channels * draw(st.integers(1, 2)) if depthwise else draw(st.integers(1, 4))
        w_shape = (out_channels, 1 if depthwise else channels, *kernel)
    else:
        attrs["kernel_shape"] = list(kernel)
        if op_type == "AveragePool":
            attrs["count_include_pad"] = draw(st.integers(0, 1))
    return op_type, attrs, x_shape, w_shape


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window_cases())
def test_window_shapes_match_onnx_inference(case: tuple[str, dict[str, object], tuple[int, ...],
                                                        tuple[int, ...] | None]) -> None:
    op_type, attrs, x_shape, w_shape = case
    inits = {} if w_shape is None else {"w": weights(*w_shape)}
    node = helper.make_node(op_type, ["x", *inits], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(value, key) for key, value in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.output[0]
    onnx_shape = tuple(dim.dim_value for dim in inferred.type.tensor_type.shape.dim)
    assume(all(d > 0 for d in onnx_shape))
    model.graph.output[0].CopyFrom(inferred)
    imported = import_onnx(model)
    assert imported.outputs[0].shape == onnx_shape

"""The training graph as an ONNX model, for Netron and other ONNX viewers (`tinyodl ir --format onnx`).

Ops with a standard ONNX equivalent become that operator; everything else (gradients, losses without one,
optimizer updates) becomes a node of the `tinyodl` domain carrying the IR attributes, so every IR op is
exactly one node. A tile loop is exported as the kernel it tiles; its tiling (tile, tiles, L1 bytes) is an
attribute of a `tinyodl` node and the doc string of a standard one. ONNX values are single-assignment while
optimizer updates overwrite their operands in place, so each overwritten operand appears as a fresh output
`<name>.next`.
Parameters, constants and optimizer state are initializers when their contents are known, graph inputs
otherwise (a graph parsed from text carries no tensor contents).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tinyodl.ir.graph import AttrValue, Graph, Op, Value
from tinyodl.ir.registry import TILING_ATTRS, kernel_of, lookup, mutated_operands
from tinyodl.ir.rounding import bf16_bits
from tinyodl.ir.types import DType

DOMAIN = "tinyodl"
DOMAIN_VERSION = 1
ONNX_OPSET = 17
# What onnx 1.12, the release that introduced opset 17, writes: every reader since opens the file.
IR_VERSION = 8

_ELEM_TYPE = {DType.F32: TensorProto.FLOAT, DType.F16: TensorProto.FLOAT16, DType.BF16: TensorProto.BFLOAT16,
              DType.I32: TensorProto.INT32,
              DType.I64: TensorProto.INT64}


@dataclass
class _Export:
    """Names already taken in the ONNX graph and the extra initializers that standard ops need."""

    taken: set[str]
    initializers: list[TensorProto] = field(default_factory=list)

    def fresh(self, base: str) -> str:
        name, suffix = base, 1
        while name in self.taken:
            name, suffix = f"{base}.{suffix}", suffix + 1
        self.taken.add(name)
        return name

    def constant(self, base: str, array: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name


# A standard ONNX node from an IR op: (op, its kernel's attributes with defaults, its input names, its output
# names, export state) -> node.
_Standard = Callable[[Op, dict[str, AttrValue], list[str], list[str], _Export], onnx.NodeProto]


def _conv(op: Op, attrs: dict[str, AttrValue], ins: list[str], outs: list[str], state: _Export) -> onnx.NodeProto:
    weight = op.inputs[1].shape
    # The IR's pads are [top, left, bottom, right], which is ONNX's [x1_begin, x2_begin, x1_end, x2_end].
    return helper.make_node("Conv", ins, outs, name=op.node, kernel_shape=list(weight[2:]),
                            strides=list(attrs["strides"]), pads=list(attrs["pads"]), group=attrs["group"])


def _gemm(op: Op, attrs: dict[str, AttrValue], ins: list[str], outs: list[str], state: _Export) -> onnx.NodeProto:
    return helper.make_node("Gemm", ins, outs, name=op.node, transA=attrs["trans_a"], transB=attrs["trans_b"],
                            alpha=float(attrs["alpha"]), beta=float(attrs["beta"]))


def _pool(onnx_type: str) -> _Standard:
    def make(op: Op, attrs: dict[str, AttrValue], ins: list[str], outs: list[str], state: _Export) -> onnx.NodeProto:
        extra = {"count_include_pad": attrs["count_include_pad"]} if onnx_type == "AveragePool" else {}
        return helper.make_node(onnx_type, ins, outs, name=op.node, kernel_shape=list(attrs["kernel"]),
                                strides=list(attrs["strides"]), pads=list(attrs["pads"]), **extra)
    return make


def _clip(op: Op, attrs: dict[str, AttrValue], ins: list[str], outs: list[str], state: _Export) -> onnx.NodeProto:
    low = state.constant(f"{outs[0]}.min", np.array(attrs["min"], np.float32))
    high = state.constant(f"{outs[0]}.max", np.array(attrs["max"], np.float32))
    return helper.make_node("Clip", [ins[0], low, high], outs, name=op.node)


def _reshape(op: Op, attrs: dict[str, AttrValue], ins: list[str], outs: list[str],
             state: _Export) -> onnx.NodeProto:
    shape = state.constant(f"{outs[0]}.shape", np.array(attrs["shape"], np.int64))
    return helper.make_node("Reshape", [ins[0], shape], outs, name=op.node)


def _plain(onnx_type: str, **fixed: AttrValue) -> _Standard:
    """An ONNX op whose attributes are the IR's under the same names (plus fixed ones)."""
    def make(op: Op, attrs: dict[str, AttrValue], ins: list[str], outs: list[str], state: _Export) -> onnx.NodeProto:
        return helper.make_node(onnx_type, ins, outs, name=op.node, **attrs, **fixed)
    return make


STANDARD: dict[str, _Standard] = {
    "conv2d": _conv,
    "gemm": _gemm,
    "add": _plain("Add"),
    "relu": _plain("Relu"),
    "sigmoid": _plain("Sigmoid"),
    "tanh": _plain("Tanh"),
    "leaky_relu": _plain("LeakyRelu"),
    "clip": _clip,
    "softmax": _plain("Softmax"),
    "batchnorm": _plain("BatchNormalization"),
    "maxpool2d": _pool("MaxPool"),
    "avgpool2d": _pool("AveragePool"),
    "global_avgpool": _plain("GlobalAveragePool"),
    "reshape": _reshape,
    # Both take the mean over the batch of -log softmax(logits)[label].
    "softmax_cross_entropy": _plain("SoftmaxCrossEntropyLoss", reduction="mean"),
}


def export_onnx(graph: Graph) -> onnx.ModelProto:
    """The training graph as an ONNX model: one node per IR op, in the graph's order."""
    state = _Export({value.name for value in graph.all_values()})
    current: dict[Value, str] = {value: value.name for value in graph.all_values()}
    nodes = []
    for op in graph.ops:
        ins = [current[value] for value in op.inputs]
        outs = [value.name for value in op.outputs]
        for position in mutated_operands(op):
            if position < len(op.inputs):
                written = op.inputs[position]
                current[written] = state.fresh(f"{written.name}.next")
                outs.append(current[written])
        kernel, kernel_attrs = kernel_of(op.type, op.attrs)
        standard = STANDARD.get(kernel)
        if standard is not None:
            node = standard(op, lookup(kernel).with_defaults(kernel_attrs), ins, outs, state)
        else:
            node = _custom(kernel, {**lookup(kernel).with_defaults(kernel_attrs), **op.attrs}, op.node, ins, outs)
        node.doc_string = _doc(op)
        nodes.append(node)
    inputs = [_value_info(value.name, value) for value in graph.inputs]
    initializers = []
    for value in [*graph.params, *graph.state]:
        if value.name in graph.initial:
            array = np.asarray(graph.initial[value.name]).astype(value.dtype.numpy).reshape(value.shape)
            if value.dtype is DType.BF16:  # numpy has no bfloat16: the raw bits
                initializers.append(helper.make_tensor(value.name, TensorProto.BFLOAT16, list(value.shape),
                                                       bf16_bits(array).tobytes(), raw=True))
            else:
                initializers.append(numpy_helper.from_array(array, value.name))
        else:
            inputs.append(_value_info(value.name, value))
    outputs = [_value_info(current[value], value) for value in graph.outputs]
    produced = [out for op in graph.ops for out in op.outputs if out not in graph.outputs]
    onnx_graph = helper.make_graph(nodes, graph.name, inputs, outputs, initializer=initializers + state.initializers,
                                   value_info=[_value_info(value.name, value) for value in produced])
    model = helper.make_model(onnx_graph, producer_name="tinyodl", ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", ONNX_OPSET),
                                             helper.make_opsetid(DOMAIN, DOMAIN_VERSION)])
    model.doc_string = ("tinyodl training graph: forward, loss, backward and optimizer update; ops without a "
                        f"standard ONNX equivalent are in the '{DOMAIN}' domain")
    return model


def _custom(kernel: str, attrs: dict[str, AttrValue], name: str, ins: list[str], outs: list[str]) -> onnx.NodeProto:
    node = helper.make_node(kernel, ins, outs, name=name, domain=DOMAIN)
    node.attribute.extend(_attribute(key, value) for key, value in sorted(attrs.items()) if key != "tiled_op")
    return node


def _doc(op: Op) -> str:
    """The phase, and for a tile loop its tiling (a standard ONNX node cannot carry extra attributes)."""
    text = f"phase: {op.phase.value}"
    if op.type == "tile_loop":
        tiling = ", ".join(f"{key} {_text(op.attrs[key])}" for key in TILING_ATTRS[1:] if key in op.attrs)
        text += f"; computed in L1 tiles by a tile loop: {tiling}"
    return text


def _text(value: AttrValue) -> str:
    return "x".join(str(item) for item in value) if isinstance(value, tuple) else str(value)


def _attribute(key: str, value: AttrValue) -> onnx.AttributeProto:
    """Lists as ONNX ints or floats (an empty list has no type to infer; a mixed one is floats)."""
    if isinstance(value, tuple):
        if value and all(isinstance(item, int) for item in value):
            return helper.make_attribute(key, [int(item) for item in value], attr_type=onnx.AttributeProto.INTS)
        return helper.make_attribute(key, [float(item) for item in value], attr_type=onnx.AttributeProto.FLOATS)
    return helper.make_attribute(key, value)


def _value_info(name: str, value: Value) -> onnx.ValueInfoProto:
    """Type and shape, and in the doc string the value's role and, after the memory pass, its L2 offset."""
    info = helper.make_tensor_value_info(name, _ELEM_TYPE[value.dtype], list(value.shape))
    info.doc_string = f"role: {value.role.value}"
    if value.l2_offset is not None:
        info.doc_string += f"; L2 arena offset {value.l2_offset}"
    return info

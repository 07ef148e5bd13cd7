"""One converter per supported ONNX operator: check its attributes, then emit the IR op (or an alias)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from tinyodl.frontend.errors import FrontendError
from tinyodl.frontend.onnx_load import DEFAULT_DOMAINS, tensor_array
from tinyodl.ir.graph import AttrValue, Graph, Op, Value
from tinyodl.ir.registry import IRError, infer_types
from tinyodl.ir.types import DType, Phase, Role, TensorType


@dataclass
class ImportState:
    """What the graph walk knows so far, keyed by ONNX tensor name."""

    graph: Graph
    opset: int
    onnx_shapes: dict[str, tuple[int, ...]]
    # Initializers and Constant outputs; they become parameters only once an op reads them as a tensor.
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    initializers: set[str] = field(default_factory=set)
    values: dict[str, Value] = field(default_factory=dict)
    # Outputs of Identity / Dropout: the name of the tensor they forward.
    aliases: dict[str, str] = field(default_factory=dict)
    consumed: set[str] = field(default_factory=set)
    # Identity copies of initializers, each a parameter of its own: output name -> the initializer copied.
    untied: dict[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> str:
        while name in self.aliases:
            name = self.aliases[name]
        return name

    def tensor(self, name: str) -> Value:
        """The IR value of an ONNX tensor; an initializer or Constant becomes a parameter on first use."""
        name = self.resolve(name)
        if name in self.values:
            return self.values[name]
        if name not in self.constants:
            raise KeyError(name)
        data = self.constants[name]
        kind = "initializer" if name in self.initializers else "constant"
        if data.dtype == np.float16:
            data = data.astype(np.float32)  # exact: --dtype chooses the precision it trains in
        if data.dtype != np.float32:
            raise FrontendError(f"{kind} '{name}' has element type {data.dtype} and is used as a tensor; "
                                "tinyodl supports float32 and float16")
        if not np.all(np.isfinite(data)):
            bad = int(np.count_nonzero(~np.isfinite(data)))
            raise FrontendError(f"{kind} '{name}' holds NaN or infinity ({bad} of {data.size} elements); "
                                "tinyodl refuses non-finite parameters and constants")
        role = Role.PARAM if kind == "initializer" else Role.CONST
        value = self.graph.add_param(name, data, TensorType(data.shape, DType.F32), role=role,
                                     trainable=False)
        self.values[name] = value
        return value


def attribute_values(node: onnx.NodeProto) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        attrs[attr.name] = value.decode() if isinstance(value, bytes) else value
    return attrs


class NodeContext:
    """One ONNX node being converted: attribute access, operand lookup, op emission, error messages."""

    def __init__(self, state: ImportState, node: onnx.NodeProto, index: int) -> None:
        self.state = state
        self.node = node
        self.label = node.name or f"{node.op_type}_{index}"
        self.attrs = attribute_values(node)

    def error(self, problem: str) -> FrontendError:
        op_type = self.node.op_type
        if self.node.domain not in DEFAULT_DOMAINS:
            op_type = f"{self.node.domain}.{op_type}"
        where = f"node '{self.label}' ({op_type}, opset {self.state.opset})"
        return FrontendError(f"{where}: {problem}")

    def attr(self, name: str, default: Any) -> Any:
        return self.attrs.get(name, default)

    def has_input(self, index: int) -> bool:
        return index < len(self.node.input) and self.node.input[index] != ""

    def input(self, index: int) -> Value:
        name = self.node.input[index]
        try:
            return self.state.tensor(name)
        except KeyError:
            raise self.error(f"operand '{name}' is not available") from None

    def optional_input(self, index: int) -> Value | None:
        return self.input(index) if self.has_input(index) else None

    def constant(self, index: int, what: str) -> np.ndarray:
        """An operand that must be known at import time (a Reshape shape, a Clip bound)."""
        name = self.state.resolve(self.node.input[index])
        if name not in self.state.constants:
            raise self.error(f"{what} '{self.node.input[index]}' must be an initializer or a Constant")
        return self.state.constants[name]

    def extra_outputs(self) -> list[str]:
        return [name for name in self.node.output[1:] if name]

    def emit(self, op_type: str, inputs: Sequence[Value], attrs: dict[str, AttrValue], *,
             last: bool = True) -> Value:
        """The op computing output 0; with `last` False, an op whose result the node's next op reads."""
        try:
            (result_type,) = infer_types(op_type, [v.type for v in inputs], attrs)
        except IRError as exc:
            raise self.error(f"unsupported: {exc}") from None
        name = self.node.output[0]
        if not last:
            step = self.state.graph.new_value(f"{name}.{op_type}", result_type, Role.ACT, origin=name)
            self.state.graph.append(Op(op_type, list(inputs), [step], attrs, Phase.FORWARD, self.label))
            return step
        onnx_shape = self.state.onnx_shapes.get(name)
        if onnx_shape is None:
            raise self.error(f"ONNX shape inference gives no static shape for '{name}'")
        if onnx_shape != result_type.shape:
            raise IRError(f"node '{self.label}' ({self.node.op_type}): tinyodl infers "
                          f"{list(result_type.shape)} for '{name}' but ONNX infers {list(onnx_shape)} "
                          "(a frontend or IR bug)")
        value = self.state.graph.new_value(name, result_type, Role.ACT, origin=name)
        self.state.graph.append(Op(op_type, list(inputs), [value], attrs, Phase.FORWARD, self.label))
        self.state.values[name] = value
        return value

    def alias(self, index: int = 0) -> None:
        """Output 0 is input `index` itself: no op, later readers see the forwarded tensor."""
        self.state.aliases[self.node.output[0]] = self.state.resolve(self.node.input[index])


Converter = Callable[[NodeContext], None]
CONVERTERS: dict[str, Converter] = {}


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            CONVERTERS[op_type] = fn
        return fn
    return register


# -- shared attribute checks ------------------------------------------------------------------
def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _require_zero(cx: NodeContext, name: str) -> None:
    value = int(cx.attr(name, 0))
    if value != 0:
        raise cx.error(f"{name} {value} unsupported (only 0)")


def _require_unit_dilations(cx: NodeContext) -> None:
    dilations = _ints(cx.attr("dilations", ()))
    if any(d != 1 for d in dilations):
        raise cx.error(f"dilations {list(dilations)} unsupported (only 1)")


def _require_4d(cx: NodeContext, x: Value, what: str) -> None:
    if len(x.shape) != 4:
        raise cx.error(f"only 2-D {what} on NCHW tensors is supported, input is {list(x.shape)}")


def _strides(cx: NodeContext) -> tuple[int, int]:
    strides = _ints(cx.attr("strides", (1, 1)))
    if len(strides) != 2:
        raise cx.error(f"strides {list(strides)} must have 2 values")
    return strides[0], strides[1]


def _window_pads(cx: NodeContext, spatial: Sequence[int], kernel: Sequence[int],
                 strides: Sequence[int]) -> tuple[int, ...]:
    """Explicit [top, left, bottom, right] pads from `pads` or `auto_pad`."""
    auto_pad = cx.attr("auto_pad", "NOTSET")
    explicit = _ints(cx.attr("pads", ()))
    if auto_pad == "NOTSET":
        pads = explicit or (0, 0, 0, 0)
        if len(pads) != 4:
            raise cx.error(f"pads {list(pads)} must have 4 values")
        return pads
    if explicit:
        raise cx.error(f"pads {list(explicit)} cannot be combined with auto_pad {auto_pad}")
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise cx.error(f"auto_pad {auto_pad} unsupported")
    begins, ends = [], []
    for size, k, stride in zip(spatial, kernel, strides, strict=True):
        total = max(0, (math.ceil(size / stride) - 1) * stride + k - size)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return (begins[0], begins[1], ends[0], ends[1])


# -- converters -------------------------------------------------------------------------------
@converter("Conv")
def _conv(cx: NodeContext) -> None:
    x, weight, bias = cx.input(0), cx.input(1), cx.optional_input(2)
    _require_4d(cx, x, "convolution")
    _require_unit_dilations(cx)
    kernel = weight.shape[2:]
    if "kernel_shape" in cx.attrs and _ints(cx.attrs["kernel_shape"]) != kernel:
        raise cx.error(f"kernel_shape {list(cx.attrs['kernel_shape'])} does not match the weight "
                       f"{list(weight.shape)}")
    group = int(cx.attr("group", 1))
    channels = x.shape[1]
    if group not in (1, channels):
        raise cx.error(f"group {group} unsupported (only 1 or depthwise, group == {channels} input channels)")
    strides = _strides(cx)
    pads = _window_pads(cx, x.shape[2:], kernel, strides)
    operands = [x, weight] if bias is None else [x, weight, bias]
    cx.emit("conv2d", operands, {"strides": strides, "pads": pads, "group": group})


@converter("Gemm")
def _gemm(cx: NodeContext) -> None:
    a, b, c = cx.input(0), cx.input(1), cx.optional_input(2)
    attrs: dict[str, AttrValue] = {
        "trans_a": int(cx.attr("transA", 0)), "trans_b": int(cx.attr("transB", 0)),
        "alpha": float(cx.attr("alpha", 1.0)), "beta": float(cx.attr("beta", 1.0)),
    }
    cx.emit("gemm", [a, b] if c is None else [a, b, c], attrs)


@converter("MatMul")
def _matmul(cx: NodeContext) -> None:
    a, b = cx.input(0), cx.input(1)
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise cx.error(f"only 2-D operands are supported, got {list(a.shape)} and {list(b.shape)}")
    cx.emit("gemm", [a, b], {"trans_a": 0, "trans_b": 0, "alpha": 1.0, "beta": 1.0})


@converter("Add")
def _add(cx: NodeContext) -> None:
    cx.emit("add", [cx.input(0), cx.input(1)], {})


@converter("Relu", "Sigmoid", "Tanh")
def _activation(cx: NodeContext) -> None:
    cx.emit(cx.node.op_type.lower(), [cx.input(0)], {})


@converter("LeakyRelu")
def _leaky_relu(cx: NodeContext) -> None:
    cx.emit("leaky_relu", [cx.input(0)], {"alpha": float(cx.attr("alpha", 0.01))})


@converter("Clip")
def _clip(cx: NodeContext) -> None:
    bounds = []
    for index, what, default in ((1, "min", -math.inf), (2, "max", math.inf)):
        if not cx.has_input(index):
            bounds.append(default)
            continue
        bound = cx.constant(index, what)
        if bound.size != 1:
            raise cx.error(f"{what} must be a scalar, got shape {list(bound.shape)}")
        value = float(bound.reshape(()))
        if math.isnan(value):
            raise cx.error(f"{what} is NaN")
        bounds.append(value)
    if bounds[0] > bounds[1]:
        raise cx.error(f"min {bounds[0]} is above max {bounds[1]}")
    cx.emit("clip", [cx.input(0)], {"min": bounds[0], "max": bounds[1]})


def _pool_window(cx: NodeContext, x: Value) -> dict[str, AttrValue]:
    _require_4d(cx, x, "pooling")
    _require_zero(cx, "ceil_mode")
    _require_unit_dilations(cx)
    kernel = _ints(cx.attrs["kernel_shape"])
    if len(kernel) != 2:
        raise cx.error(f"kernel_shape {list(kernel)} must have 2 values")
    strides = _strides(cx)
    return {"kernel": kernel, "strides": strides, "pads": _window_pads(cx, x.shape[2:], kernel, strides)}


@converter("MaxPool")
def _maxpool(cx: NodeContext) -> None:
    x = cx.input(0)
    if cx.extra_outputs():
        raise cx.error("the Indices output is unsupported (only one output)")
    _require_zero(cx, "storage_order")
    cx.emit("maxpool2d", [x], _pool_window(cx, x))


@converter("AveragePool")
def _avgpool(cx: NodeContext) -> None:
    x = cx.input(0)
    attrs = _pool_window(cx, x)
    attrs["count_include_pad"] = int(cx.attr("count_include_pad", 0))
    cx.emit("avgpool2d", [x], attrs)


@converter("GlobalAveragePool")
def _global_avgpool(cx: NodeContext) -> None:
    cx.emit("global_avgpool", [cx.input(0)], {})


@converter("ReduceMean")
def _reduce_mean(cx: NodeContext) -> None:
    """Only the mean over every spatial axis, which is global average pooling (how torch exports
    AdaptiveAvgPool2d(1) and x.mean((2, 3)))."""
    x = cx.input(0)
    rank = len(x.shape)
    if cx.state.opset >= 18:
        axes = _ints(cx.constant(1, "axes").reshape(-1)) if cx.has_input(1) else ()
    else:
        axes = _ints(cx.attr("axes", ()))
    if not axes and cx.attr("noop_with_empty_axes", 0):
        cx.alias()
        return
    spatial = tuple(range(2, rank))
    if rank < 3 or sorted(axis + rank if axis < 0 else axis for axis in axes) != list(spatial):
        shown_axes = list(axes) if axes else "all axes"
        raise cx.error(f"a mean over {shown_axes} of a {list(x.shape)} input unsupported (only over the spatial "
                       f"axes {list(spatial)}, i.e. global average pooling)")
    if cx.attr("keepdims", 1):
        cx.emit("global_avgpool", [x], {})
        return
    pooled = cx.emit("global_avgpool", [x], {}, last=False)
    cx.emit("reshape", [pooled], {"shape": x.shape[:2]})


@converter("Flatten")
def _flatten(cx: NodeContext) -> None:
    x = cx.input(0)
    rank = len(x.shape)
    axis = int(cx.attr("axis", 1))
    axis = axis + rank if axis < 0 else axis
    shape = (math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
    cx.emit("reshape", [x], {"shape": shape})


@converter("Reshape")
def _reshape(cx: NodeContext) -> None:
    x = cx.input(0)
    target = [int(d) for d in cx.constant(1, "shape").reshape(-1)]
    if cx.attr("allowzero", 0) and 0 in target:
        raise cx.error(f"shape {target} with allowzero 1 unsupported (empty tensors)")
    dims = [x.shape[axis] if d == 0 else d for axis, d in enumerate(target)]
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        dims[dims.index(-1)] = x.type.numel // known if known else 0
    cx.emit("reshape", [x], {"shape": tuple(dims)})


@converter("BatchNormalization")
def _batchnorm(cx: NodeContext) -> None:
    if cx.attr("training_mode", 0):
        raise cx.error("training_mode 1 unsupported (only inference statistics)")
    if cx.extra_outputs():
        raise cx.error(f"outputs {cx.extra_outputs()} unsupported (only Y)")
    operands = [cx.input(index) for index in range(5)]
    cx.emit("batchnorm", operands, {"epsilon": float(cx.attr("epsilon", 1e-5))})


@converter("Softmax")
def _softmax(cx: NodeContext) -> None:
    x = cx.input(0)
    axis = int(cx.attr("axis", -1))
    cx.emit("softmax", [x], {"axis": axis + len(x.shape) if axis < 0 else axis})


@converter("Identity")
def _identity(cx: NodeContext) -> None:
    source = cx.state.resolve(cx.node.input[0])
    if source not in cx.state.initializers:
        cx.alias()
        return
    # A copy of an initializer is a tensor of its own in the source model (see untied_initializers): it gets
    # its own parameter, so that what trains one never moves the other.
    output = cx.node.output[0]
    cx.state.constants[output] = cx.state.constants[source].copy()
    cx.state.initializers.add(output)
    cx.state.untied[output] = cx.state.untied.get(source, source)


@converter("Dropout")
def _dropout(cx: NodeContext) -> None:
    if cx.has_input(2):
        training = cx.constant(2, "training_mode")
        if training.size != 1 or bool(training.reshape(())):
            raise cx.error("training_mode true unsupported (only inference)")
    mask = cx.extra_outputs()
    if mask and mask[0] in cx.state.consumed:
        raise cx.error(f"the mask output '{mask[0]}' is used; only inference-mode Dropout is supported")
    cx.alias()


@converter("Constant")
def _constant(cx: NodeContext) -> None:
    attrs = cx.attrs
    if "value" in attrs:
        data = tensor_array(attrs["value"])
    elif "value_float" in attrs or "value_floats" in attrs:
        data = np.asarray(attrs.get("value_float", attrs.get("value_floats")), np.float32)
    elif "value_int" in attrs or "value_ints" in attrs:
        data = np.asarray(attrs.get("value_int", attrs.get("value_ints")), np.int64)
    else:
        raise cx.error(f"{', '.join(attrs) or 'empty'} constants unsupported")
    cx.state.constants[cx.node.output[0]] = data

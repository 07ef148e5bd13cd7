"""Reading an ONNX model and making it importable: decode, opset, checker, batch override, static shapes.

Everything here works on the protobuf; the result is a shape-inferred copy of the model in which every
data input and every node output has a static shape.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError, Message
from onnx import external_data_helper, numpy_helper

from tinyodl.frontend.errors import FrontendError
from tinyodl.frontend.onnx_attrs import check_attributes

MIN_OPSET, MAX_OPSET = 13, 21
DEFAULT_DOMAINS = ("", "ai.onnx")
# No tensor of a 32-bit target can be larger (kernels index with a signed int). Checking the product of the
# declared dims against it refuses absurd shapes before anything is allocated or read.
MAX_TENSOR_BYTES = 2**31 - 1
# Which typed field holds a tensor's elements when it has no raw_data, and how many entries one element takes.
_TYPED_FIELDS: dict[int, tuple[str, int]] = {
    onnx.TensorProto.FLOAT: ("float_data", 1), onnx.TensorProto.COMPLEX64: ("float_data", 2),
    onnx.TensorProto.DOUBLE: ("double_data", 1), onnx.TensorProto.COMPLEX128: ("double_data", 2),
    onnx.TensorProto.INT64: ("int64_data", 1), onnx.TensorProto.UINT32: ("uint64_data", 1),
    onnx.TensorProto.UINT64: ("uint64_data", 1), onnx.TensorProto.STRING: ("string_data", 1),
    **{dtype: ("int32_data", 1) for dtype in (
        onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT16,
        onnx.TensorProto.UINT8, onnx.TensorProto.BOOL, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)},
}

Source = str | os.PathLike[str] | onnx.ModelProto


@dataclass(frozen=True)
class LoadedModel:
    model: onnx.ModelProto                # a private, shape-inferred copy
    where: str                            # the file name (or a stand-in) for error messages
    name: str                             # the graph name, or the file stem when the graph has none
    opset: int                            # version of the default domain
    shapes: dict[str, tuple[int, ...]]    # static shape of every typed tensor after inference

    @property
    def initializers(self) -> dict[str, onnx.TensorProto]:
        return {init.name: init for init in self.model.graph.initializer}


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return shown(lines[0]) if lines else type(exc).__name__


def shown(text: str) -> str:
    """`text` with control and other unprintable characters escaped as repr() does, so that a hostile file
    or tensor name cannot break an error message over several lines or drive the terminal."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def load_model(source: Source, batch: int | None = None) -> LoadedModel:
    model, where, stem = _read(source)
    opset = _default_opset(model, where)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise FrontendError(f"{where}: invalid ONNX model: {first_line(exc)}") from None
    check_attributes(model.graph, where, None)
    if batch is not None:
        if batch < 1:
            raise FrontendError(f"{where}: batch must be at least 1, got {batch}")
        _override_batch(model, batch)
    _require_static_inputs(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError) as exc:
        # ValueError: an element type the checker let through, e.g. an initializer's data_type of 67
        _check_ranked_attributes(model, where)  # an axis beyond the rank is the likelier cause: say so
        raise FrontendError(f"{where}: ONNX shape inference failed: {first_line(exc)}") from None
    shapes = _static_shapes(inferred)
    check_attributes(inferred.graph, where, shapes)
    return LoadedModel(inferred, where, model.graph.name or stem, opset, shapes)


def _check_ranked_attributes(model: onnx.ModelProto, where: str) -> None:
    """The rank-dependent attribute checks on whatever shapes a lenient inference finds."""
    try:
        partial = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError):
        return
    check_attributes(partial.graph, where, _static_shapes(partial))


def _read(source: Source) -> tuple[onnx.ModelProto, str, str]:
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        name = source.graph.name or "model"
        return model, f"model '{name}'", name
    path = Path(source)
    where = shown(str(path))
    if not path.exists():
        raise FrontendError(f"{where}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FrontendError(f"{where}: cannot read ({exc.strerror or exc})") from None
    try:
        model = onnx.ModelProto.FromString(data)
    except DecodeError as exc:
        raise FrontendError(f"{where}: truncated or not an ONNX file "
                            f"(protobuf decode failed: {first_line(exc)})") from None
    if not model.HasField("graph") or not model.opset_import:
        raise FrontendError(f"{where}: not an ONNX model (no graph or no opset import)")
    bad_text = _undecodable_text(model)
    if bad_text is not None:
        raise FrontendError(f"{where}: invalid ONNX model: a '{bad_text}' string is not UTF-8")
    for tensor in _tensors(model.graph):
        _check_declared_size(tensor, where)
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        # onnx refuses a missing file or one outside the model's folder with ValidationError, a bad offset or
        # length with ValueError
        raise FrontendError(f"{where}: cannot read external tensor data ({first_line(exc)})") from None
    for tensor in _tensors(model.graph):
        _check_stored_size(tensor, where)
    return model, where, path.stem


def _tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """The initializers and the Constant nodes' tensors of a graph (not of subgraphs: those are refused as
    unsupported operators later)."""
    found = list(graph.initializer)
    for node in graph.node:
        found += [attr.t for attr in node.attribute if attr.type == onnx.AttributeProto.TENSOR]
    return found


def _check_declared_size(tensor: onnx.TensorProto, where: str) -> None:
    what = f"{where}: tensor '{shown(tensor.name)}'"
    if tensor.data_type not in _ELEMENT_BYTES:
        raise FrontendError(f"{what} has an undefined element type (enum value {tensor.data_type})")
    if any(dim < 0 for dim in tensor.dims):
        raise FrontendError(f"{what} has a negative dimension {list(tensor.dims)}")
    numel = math.prod(int(dim) for dim in tensor.dims)
    if numel * max(_ELEMENT_BYTES[tensor.data_type], 1) > MAX_TENSOR_BYTES:
        raise FrontendError(f"{what} declares shape {list(tensor.dims)} ({numel} elements), larger than any "
                            f"tensor a 32-bit target can hold")
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        for entry in tensor.external_data:
            if entry.key in ("offset", "length") and not (entry.value.isascii() and entry.value.isdigit()):
                raise FrontendError(f"{what}: external data {entry.key} '{shown(entry.value)}' is not a "
                                    "non-negative integer")


def _check_stored_size(tensor: onnx.TensorProto, where: str) -> None:
    """The number of stored elements must match the dims: numpy_helper would fail with a reshape error."""
    numel = math.prod(int(dim) for dim in tensor.dims)
    if tensor.HasField("raw_data"):
        element_bytes = _ELEMENT_BYTES[tensor.data_type]
        if tensor.data_type not in _PACKED and element_bytes and len(tensor.raw_data) != numel * element_bytes:
            raise FrontendError(f"{where}: tensor '{shown(tensor.name)}' stores {len(tensor.raw_data)} bytes, its "
                                f"shape {list(tensor.dims)} needs {numel * element_bytes}")
        return
    field_name, per_element = _TYPED_FIELDS.get(tensor.data_type, ("", 0))
    if field_name and len(getattr(tensor, field_name)) != numel * per_element:
        stored = len(getattr(tensor, field_name)) // per_element
        raise FrontendError(f"{where}: tensor '{shown(tensor.name)}' stores {stored} elements, its shape "
                            f"{list(tensor.dims)} has {numel}")


def _element_bytes() -> dict[int, int]:
    """Bytes per element of every defined element type as numpy holds it (one byte for sub-byte types)."""
    return {value: 0 if name == "STRING" else np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value)).itemsize
            for name, value in onnx.TensorProto.DataType.items() if name != "UNDEFINED"}


# Sub-byte types pack several elements per stored byte; their raw size is not numel * itemsize.
_PACKED = {value for name, value in onnx.TensorProto.DataType.items()
           if name.startswith(("INT4", "UINT4", "INT2", "UINT2", "FLOAT4", "FLOAT6"))}
_ELEMENT_BYTES = _element_bytes()


def _undecodable_text(message: Message) -> str | None:
    """The name of the first string field that is not UTF-8: protobuf hands those over as bytes, which
    would travel on into names and break the checker, the IR printer and the C emitter."""
    for field, value in message.ListFields():
        if field.type not in (field.TYPE_STRING, field.TYPE_MESSAGE):
            continue
        items = value if isinstance(value, Iterable) and not isinstance(value, str | bytes | Message) else [value]
        for item in items:
            found = field.name if isinstance(item, bytes) else None
            if isinstance(item, Message):
                found = _undecodable_text(item)
            if found is not None:
                return found
    return None


def _default_opset(model: onnx.ModelProto, where: str) -> int:
    versions = [entry.version for entry in model.opset_import if entry.domain in DEFAULT_DOMAINS]
    if not versions:
        raise FrontendError(f"{where}: the model imports no opset of the default ONNX domain")
    opset = int(versions[0])
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise FrontendError(f"{where}: opset {opset} is unsupported (tinyodl accepts opsets "
                            f"{MIN_OPSET}..{MAX_OPSET} of the default domain)")
    return opset


def data_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (those are parameters)."""
    initialized = {init.name for init in graph.initializer}
    return [vi for vi in graph.input if vi.name not in initialized]


def untied_initializers(graph: onnx.GraphProto) -> dict[str, str]:
    """Identity outputs that forward an initializer (directly or through more Identities), each with the
    initializer it copies. Exporters deduplicate equal initializers this way (torch's TorchScript exporter
    without constant folding ties every fresh batch norm's weight and running_var to one tensor): each such
    output is a tensor of its own in the source model, so tinyodl makes it a parameter of its own."""
    sources = {init.name: init.name for init in graph.initializer}
    untied: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "Identity" and node.domain in DEFAULT_DOMAINS and len(node.input) == 1 \
                and len(node.output) == 1 and node.input[0] in sources:
            untied[node.output[0]] = sources[node.output[0]] = sources[node.input[0]]
    return untied


def _override_batch(model: onnx.ModelProto, batch: int) -> None:
    """Set axis 0 of every data input to `batch`; rewrite constant Reshape targets spelling the old batch."""
    graph = model.graph
    old_batches: set[int] = set()
    for vi in data_inputs(graph):
        dims = vi.type.tensor_type.shape.dim
        if not vi.type.tensor_type.HasField("shape") or not dims:
            continue
        if dims[0].HasField("dim_value"):
            old_batches.add(dims[0].dim_value)
        dims[0].Clear()
        dims[0].dim_value = batch
    old_batches.discard(batch)
    reshape_targets = {node.input[1] for node in graph.node
                       if node.op_type == "Reshape" and len(node.input) > 1}
    for init in graph.initializer:
        if init.name in reshape_targets:
            init.CopyFrom(_rebatched(init, old_batches, batch))
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] in reshape_targets:
            for attr in node.attribute:
                if attr.name == "value":
                    attr.t.CopyFrom(_rebatched(attr.t, old_batches, batch))
                elif attr.name == "value_ints" and attr.ints and attr.ints[0] in old_batches:
                    attr.ints[0] = batch
    # Stale annotations would contradict the new batch under strict shape inference.
    del graph.value_info[:]
    for vi in graph.output:
        vi.type.tensor_type.ClearField("shape")


def _rebatched(tensor: onnx.TensorProto, old_batches: set[int], batch: int) -> onnx.TensorProto:
    target = numpy_helper.to_array(tensor)
    if target.ndim != 1 or not target.size or int(target[0]) not in old_batches:
        return tensor
    target = target.copy()
    target[0] = batch
    return numpy_helper.from_array(target, tensor.name)


def _require_static_inputs(model: onnx.ModelProto) -> None:
    for vi in data_inputs(model.graph):
        tensor_type = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise FrontendError(f"input '{vi.name}' is not a tensor; tinyodl needs float32 tensors")
        if tensor_type.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            known = tensor_type.elem_type in onnx.TensorProto.DataType.values()
            dtype = onnx.TensorProto.DataType.Name(tensor_type.elem_type) if known else \
                f"{tensor_type.elem_type} (undefined)"
            raise FrontendError(f"input '{vi.name}' has element type {dtype}; tinyodl supports float32 and float16")
        if not tensor_type.HasField("shape"):
            raise FrontendError(f"input '{vi.name}' has an unknown rank; tinyodl needs static shapes")
        for axis, dim in enumerate(tensor_type.shape.dim):
            if not dim.HasField("dim_value"):
                label = dim.dim_param or "?"
                fix = ("give the batch size with --batch B (batch=B in the Python API)" if axis == 0
                       else "export the model with fixed sizes")
                raise FrontendError(f"input '{vi.name}' has a dynamic dimension '{label}' (axis {axis}); "
                                    f"tinyodl needs static shapes: {fix}")
            if dim.dim_value < 1:
                raise FrontendError(f"input '{vi.name}' has an empty dimension (axis {axis} is "
                                    f"{dim.dim_value}); tinyodl needs sizes >= 1")
        _check_shape_size(f"input '{shown(vi.name)}'", [dim.dim_value for dim in tensor_type.shape.dim])


def _check_shape_size(what: str, shape: list[int]) -> None:
    numel = math.prod(shape)
    if numel * 4 > MAX_TENSOR_BYTES:
        raise FrontendError(f"{what} has shape {shape} ({numel} elements), larger than any tensor a 32-bit "
                            "target can hold")


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    graph = model.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = vi.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = tensor_type.shape.dim
        if all(dim.HasField("dim_value") for dim in dims):
            shapes[vi.name] = tuple(int(dim.dim_value) for dim in dims)
            _check_shape_size(f"tensor '{shown(vi.name)}'", list(shapes[vi.name]))
    for init in graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


def tensor_array(tensor: onnx.TensorProto) -> np.ndarray:
    return np.asarray(numpy_helper.to_array(tensor))

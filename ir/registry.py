"""One registry entry per op: shape/type inference, verification, numpy reference, gradient rule, MACs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tinyodl.ir.graph import AttrValue, Op, Value
from tinyodl.ir.types import FLOAT_DTYPES, DType, Role, TensorType

Attrs = Mapping[str, Any]


class IRError(Exception):
    """An op or graph that breaks the IR's rules; the message names the op."""


class GradBuilder(Protocol):
    """What a gradient rule may do: emit backward ops into the graph being differentiated."""

    def emit(self, op_type: str, inputs: Sequence[Value], attrs: Mapping[str, AttrValue] | None = None,
             name: str = "", role: Role = Role.GRAD) -> list[Value]: ...


InferFn = Callable[[Sequence[TensorType], Attrs], list[TensorType]]
ReferenceFn = Callable[[Sequence[np.ndarray], Attrs], list[np.ndarray]]
# (builder, forward op, gradient of each output or None, which inputs need a gradient) -> input gradients
GradientFn = Callable[[GradBuilder, Op, Sequence["Value | None"], Sequence[bool]], Sequence["Value | None"]]
MacsFn = Callable[[Sequence[TensorType], Sequence[TensorType], Attrs], int]

REQUIRED = object()
ATTR_KINDS = ("int", "float", "str", "ints", "floats")


@dataclass(frozen=True)
class AttrSpec:
    kind: str
    default: Any = REQUIRED


@dataclass(frozen=True)
class OpDef:
    name: str
    infer: InferFn
    reference: ReferenceFn
    min_inputs: int
    max_inputs: int
    attrs: Mapping[str, AttrSpec] = field(default_factory=dict)
    gradient: GradientFn | None = None
    macs: MacsFn | None = None
    # Operand indices the op overwrites in place (optimizer updates); such ops have no results.
    mutates: tuple[int, ...] = ()
    # Operand positions that hold fixed statistics, never learnable even when they are parameters.
    frozen_operands: tuple[int, ...] = ()
    # Precision: the float dtypes the op computes in (its float operands and results take only these), the
    # operand positions whose float dtype may differ from the one the op computes in (mixed forms, such as
    # batch norm's fp32 statistics beside fp16 activations), and whether the op may write its float results
    # in another dtype (the `out_dtype` attribute: a cast fused into the kernel).
    dtypes: frozenset[DType] = FLOAT_DTYPES
    mixed_operands: tuple[int, ...] = ()
    casts_results: bool = False
    doc: str = ""

    def with_defaults(self, attrs: Mapping[str, AttrValue] | None) -> dict[str, AttrValue]:
        full: dict[str, AttrValue] = {}
        for key, spec in self.attrs.items():
            if attrs is not None and key in attrs:
                full[key] = attrs[key]
            elif spec.default is not REQUIRED:
                full[key] = spec.default
        if attrs:
            for key in attrs:
                full.setdefault(key, attrs[key])
        return full


_REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in _REGISTRY:
        raise ValueError(f"op {opdef.name} registered twice")
    for spec in opdef.attrs.values():
        assert spec.kind in ATTR_KINDS, spec
    _REGISTRY[opdef.name] = opdef
    return opdef


def lookup(name: str) -> OpDef:
    _load_ops()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise IRError(f"unknown op '{name}'") from None


def registered() -> dict[str, OpDef]:
    _load_ops()
    return dict(_REGISTRY)


def _load_ops() -> None:
    # Importing the op families registers them; done lazily to keep import order free of cycles.
    from tinyodl.ir import ops  # noqa: F401


def check_attr(opdef: OpDef, key: str, value: Any) -> None:
    spec = opdef.attrs.get(key)
    if spec is None and key in PRECISION_ATTRS:
        spec = AttrSpec(PRECISION_ATTRS[key])
    if spec is None:
        raise IRError(f"{opdef.name}: unknown attribute '{key}'")
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "ints": isinstance(value, tuple) and all(isinstance(v, int) for v in value),
        "floats": isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value),
    }[spec.kind]
    if not ok:
        raise IRError(f"{opdef.name}: attribute '{key}' must be {spec.kind}, got {value!r}")


# A tile loop carries its kernel's attributes plus these, which say how it is tiled.
TILING_ATTRS = ("tiled_op", "tile", "tiles", "l1_bytes")
# Attributes the precision pass may put on any op of the right kind (they are absent from fp32 graphs):
#   out_dtype = "f32" (an op with casts_results): its float results are written in that dtype;
#   guard = 1 (an op that writes in place): its last operand is an integer flag, and while the flag is
#   non-zero the op does nothing (the optimizer step skipped when the gradients overflowed).
PRECISION_ATTRS = {"out_dtype": "str", "guard": "int"}


def kernel_of(op_type: str, attrs: Attrs) -> tuple[str, dict[str, Any]]:
    """The op that computes: a tile loop's kernel and its attributes, any other op itself."""
    if op_type != "tile_loop":
        return op_type, dict(attrs)
    if not isinstance(attrs.get("tiled_op"), str):
        raise IRError("tile_loop: missing attribute 'tiled_op' (a string naming the op it tiles)")
    return str(attrs["tiled_op"]), {k: v for k, v in attrs.items() if k not in TILING_ATTRS}


def written_positions(opdef: OpDef, attrs: Attrs, operand_count: int) -> tuple[int, ...]:
    """The operand positions an op overwrites (a guarded op's flag, its last operand, is only read)."""
    limit = operand_count - 1 if attrs.get("guard") else operand_count
    return tuple(p for p in opdef.mutates if p < limit)


def mutated_operands(op: Op) -> tuple[int, ...]:
    kernel, attrs = kernel_of(op.type, op.attrs)
    return written_positions(lookup(kernel), attrs, len(op.inputs))


def own_attrs(attrs: Attrs) -> dict[str, Any]:
    """The attributes the op's own rules read: without the precision pass's generic ones."""
    return {k: v for k, v in attrs.items() if k not in PRECISION_ATTRS}


def infer_types(op_type: str, input_types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    if op_type == "tile_loop":
        kernel, kernel_attrs = kernel_of(op_type, attrs)
        if kernel == "tile_loop":
            raise IRError("tile_loop: a tile loop cannot tile another")
        return infer_types(kernel, input_types, kernel_attrs)
    opdef = lookup(op_type)
    operands = _guarded_operands(opdef, input_types, attrs)
    if not opdef.min_inputs <= len(operands) <= opdef.max_inputs:
        raise IRError(f"{op_type}: expects {opdef.min_inputs}..{opdef.max_inputs} operands, "
                      f"got {len(operands)}")
    own = own_attrs(attrs)
    for key, spec in opdef.attrs.items():
        if key not in own and spec.default is REQUIRED:
            raise IRError(f"{op_type}: missing attribute '{key}'")
    for key, value in attrs.items():
        check_attr(opdef, key, value)
    results = opdef.infer(operands, opdef.with_defaults(own))
    if "out_dtype" in attrs:
        dtype = _out_dtype(opdef, attrs["out_dtype"])
        results = [TensorType(t.shape, dtype, t.layout) if t.dtype.is_float else t for t in results]
    _check_dtypes(opdef, operands, results)
    return results


def _guarded_operands(opdef: OpDef, types: Sequence[TensorType], attrs: Attrs) -> Sequence[TensorType]:
    if "guard" not in attrs:
        return types
    if attrs["guard"] != 1:
        raise IRError(f"{opdef.name}: attribute 'guard' must be 1, got {attrs['guard']!r}")
    if not opdef.mutates:
        raise IRError(f"{opdef.name}: only an op that writes in place can be guarded")
    if not types or types[-1].shape != () or types[-1].dtype.is_float:
        raise IRError(f"{opdef.name}: the guard (last operand) must be an integer scalar, got "
                      f"{types[-1] if types else 'nothing'}")
    return types[:-1]


def _out_dtype(opdef: OpDef, value: Any) -> DType:
    if not opdef.casts_results:
        raise IRError(f"{opdef.name}: cannot write its results in another dtype (no attribute 'out_dtype')")
    try:
        return DType.parse(str(value))
    except ValueError:
        raise IRError(f"{opdef.name}: out_dtype must be a float dtype (f32, f16, bf16), got {value!r}") from None


def _check_dtypes(opdef: OpDef, operands: Sequence[TensorType], results: Sequence[TensorType]) -> None:
    """Every float operand and result in a dtype the op takes, and the operands outside its mixed positions
    in one dtype (the one it computes in)."""
    taken = ", ".join(sorted(d.value for d in opdef.dtypes))
    for what, types in (("operand", operands), ("result", results)):
        for index, t in enumerate(types):
            if t.dtype.is_float and t.dtype not in opdef.dtypes:
                raise IRError(f"{opdef.name}: {what} {index} is {t.dtype.value}, the op takes {taken}")
    fixed = [(index, t.dtype) for index, t in enumerate(operands)
             if t.dtype.is_float and index not in opdef.mixed_operands]
    for index, dtype in fixed[1:]:
        if dtype is not fixed[0][1]:
            raise IRError(f"{opdef.name}: operand {index} is {dtype.value} while operand {fixed[0][0]} is "
                          f"{fixed[0][1].value}; the op computes in one dtype (cast the operand)")


def evaluate(op_type: str, inputs: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    """The op's numpy reference with the generic attributes applied: a guarded op whose flag is set returns
    the operands it would write unchanged (out_dtype only changes how the caller rounds the results)."""
    opdef = lookup(op_type)
    if attrs.get("guard"):
        flag, inputs = inputs[-1], inputs[:-1]
        if int(np.asarray(flag)) != 0:
            return [np.asarray(inputs[p]) for p in opdef.mutates if p < len(inputs)]
    return opdef.reference(inputs, opdef.with_defaults(own_attrs(attrs)))


def op_macs(op: Op) -> int:
    kernel, attrs = kernel_of(op.type, op.attrs)
    opdef = lookup(kernel)
    if opdef.macs is None:
        return 0
    return int(opdef.macs([v.type for v in op.inputs], [v.type for v in op.outputs], opdef.with_defaults(attrs)))

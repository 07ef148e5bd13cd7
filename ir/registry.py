"""One registry entry per op: shape/type inference, verification, numpy reference, gradient rule, MACs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tinyodl.ir.graph import AttrValue, Op, Value
from tinyodl.ir.types import Role, TensorType

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


def kernel_of(op_type: str, attrs: Attrs) -> tuple[str, dict[str, Any]]:
    """The op that computes: a tile loop's kernel and its attributes, any other op itself."""
    if op_type != "tile_loop":
        return op_type, dict(attrs)
    if not isinstance(attrs.get("tiled_op"), str):
        raise IRError("tile_loop: missing attribute 'tiled_op' (a string naming the op it tiles)")
    return str(attrs["tiled_op"]), {k: v for k, v in attrs.items() if k not in TILING_ATTRS}


def mutated_operands(op: Op) -> tuple[int, ...]:
    return lookup(kernel_of(op.type, op.attrs)[0]).mutates


def infer_types(op_type: str, input_types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    if op_type == "tile_loop":
        kernel, kernel_attrs = kernel_of(op_type, attrs)
        if kernel == "tile_loop":
            raise IRError("tile_loop: a tile loop cannot tile another")
        return infer_types(kernel, input_types, kernel_attrs)
    opdef = lookup(op_type)
    if not opdef.min_inputs <= len(input_types) <= opdef.max_inputs:
        raise IRError(f"{op_type}: expects {opdef.min_inputs}..{opdef.max_inputs} operands, "
                      f"got {len(input_types)}")
    for key, spec in opdef.attrs.items():
        if key not in attrs and spec.default is REQUIRED:
            raise IRError(f"{op_type}: missing attribute '{key}'")
    for key, value in attrs.items():
        check_attr(opdef, key, value)
    return opdef.infer(input_types, opdef.with_defaults(attrs))


def op_macs(op: Op) -> int:
    kernel, attrs = kernel_of(op.type, op.attrs)
    opdef = lookup(kernel)
    if opdef.macs is None:
        return 0
    return int(opdef.macs([v.type for v in op.inputs], [v.type for v in op.outputs], opdef.with_defaults(attrs)))

"""Reshape and reductions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyodl.ir.graph import Op, Value
from tinyodl.ir.ops.common import f
from tinyodl.ir.registry import Attrs, AttrSpec, GradBuilder, IRError, OpDef, register
from tinyodl.ir.types import TensorType


def _infer_reshape(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    shape = tuple(attrs["shape"])
    if any(d < 1 for d in shape) or int(np.prod(shape)) != types[0].numel:
        raise IRError(f"reshape: cannot reshape {types[0]} to {list(shape)}")
    return [TensorType(shape, types[0].dtype)]


def _grad_reshape(b: GradBuilder, op: Op, dys: Sequence[Value | None], wants: Sequence[bool]) -> list[Value | None]:
    dy = dys[0]
    assert dy is not None
    return [b.emit("reshape", [dy], {"shape": op.inputs[0].shape})[0]]


register(OpDef("reshape", _infer_reshape, lambda ins, a: [ins[0].reshape(a["shape"])], 1, 1,
               {"shape": AttrSpec("ints")}, _grad_reshape, doc="a view with a new static shape"))


def _infer_reduce(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    x = types[0]
    axes = tuple(attrs["axes"])
    if len(set(axes)) != len(axes) or any(not 0 <= a < len(x.shape) for a in axes):
        raise IRError(f"reduce_sum: axes {list(axes)} invalid for {x}")
    if attrs["keepdims"]:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return [f(x, shape)]


def _ref_reduce(inputs: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    total = np.sum(inputs[0], axis=tuple(attrs["axes"]), keepdims=bool(attrs["keepdims"]))
    return [attrs["scale"] * np.asarray(total)]


def _grad_reduce(b: GradBuilder, op: Op, dys: Sequence[Value | None], wants: Sequence[bool]) -> list[Value | None]:
    dy = dys[0]
    assert dy is not None
    x = op.inputs[0]
    kept = tuple(1 if i in op.attrs["axes"] else d for i, d in enumerate(x.shape))
    if dy.shape != kept:
        dy = b.emit("reshape", [dy], {"shape": kept})[0]
    return [b.emit("broadcast", [dy], {"shape": x.shape, "scale": op.attrs["scale"]})[0]]


register(OpDef("reduce_sum", _infer_reduce, _ref_reduce, 1, 1,
               {"axes": AttrSpec("ints"), "keepdims": AttrSpec("int", 0), "scale": AttrSpec("float", 1.0)},
               _grad_reduce, casts_results=True, doc="scale * sum over axes"))


def _infer_broadcast(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    shape = tuple(attrs["shape"])
    x = types[0]
    if len(x.shape) != len(shape) or any(d not in (1, s) for d, s in zip(x.shape, shape, strict=False)):
        raise IRError(f"broadcast: cannot broadcast {x} to {list(shape)}")
    return [f(x, shape)]


register(OpDef("broadcast", _infer_broadcast,
               lambda ins, a: [a["scale"] * np.broadcast_to(ins[0], a["shape"]).copy()], 1, 1,
               {"shape": AttrSpec("ints"), "scale": AttrSpec("float", 1.0)}, None,
               doc="scale * x repeated along its size-1 axes"))

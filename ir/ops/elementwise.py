"""Element-wise ops: add (with broadcasting), activations, softmax, and their gradients."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tinyodl.ir.graph import Op, Value
from tinyodl.ir.ops.common import broadcast_shape, expect_float, expect_same, f
from tinyodl.ir.ops.gemm import sum_to
from tinyodl.ir.registry import Attrs, AttrSpec, GradBuilder, IRError, OpDef, register
from tinyodl.ir.types import TensorType


def _infer_add(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    a, b = types
    if a.dtype != b.dtype:
        raise IRError(f"add: operand types differ: {a} and {b}")
    return [f(a if len(a.shape) >= len(b.shape) else b, broadcast_shape("add", a.shape, b.shape))]


def _grad_add(b: GradBuilder, op: Op, dys: Sequence[Value | None], wants: Sequence[bool]) -> list[Value | None]:
    dy = dys[0]
    assert dy is not None
    return [sum_to(b, dy, x.shape) if want else None for x, want in zip(op.inputs, wants, strict=False)]


register(OpDef("add", _infer_add, lambda ins, a: [ins[0] + ins[1]], 2, 2, {}, _grad_add,
               doc="a + b with numpy broadcasting"))


def _same_as_first(op: str) -> Callable[[Sequence[TensorType], Attrs], list[TensorType]]:
    def infer(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
        expect_float(op, "operand", types[0])
        for other in types[1:]:
            expect_same(op, types[0], other)
        return [types[0]]
    return infer


def _activation(name: str, forward: Callable[[np.ndarray, Attrs], np.ndarray],
                backward: Callable[[np.ndarray, np.ndarray, Attrs], np.ndarray],
                grad_uses_output: bool, attrs: dict[str, AttrSpec], doc: str) -> None:
    """Register `name(x)` and `name_grad(dy, x or y)`: the backward op reads the input or the output."""
    grad_name = f"{name}_grad"

    def grad(b: GradBuilder, op: Op, dys: Sequence[Value | None], wants: Sequence[bool]) -> list[Value | None]:
        dy = dys[0]
        assert dy is not None
        saved = op.outputs[0] if grad_uses_output else op.inputs[0]
        return [b.emit(grad_name, [dy, saved], dict(op.attrs))[0]]

    register(OpDef(name, _same_as_first(name), lambda ins, a: [forward(ins[0], a)], 1, 1, attrs, grad, doc=doc))
    register(OpDef(grad_name, _same_as_first(grad_name), lambda ins, a: [backward(ins[0], ins[1], a)], 2, 2,
                   attrs, doc=f"gradient of {name}; reads the forward {'output' if grad_uses_output else 'input'}"))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


_activation("relu", lambda x, a: np.maximum(x, 0), lambda dy, x, a: np.where(x > 0, dy, 0.0 * dy), False, {},
            "max(x, 0)")
_activation("leaky_relu", lambda x, a: np.where(x > 0, x, a["alpha"] * x),
            lambda dy, x, a: np.where(x > 0, dy, a["alpha"] * dy), False,
            {"alpha": AttrSpec("float", 0.01)}, "x if x > 0 else alpha x")
_activation("sigmoid", lambda x, a: _sigmoid(x), lambda dy, y, a: dy * y * (1 - y), True, {}, "1 / (1 + exp(-x))")
_activation("tanh", lambda x, a: np.tanh(x), lambda dy, y, a: dy * (1 - y * y), True, {}, "tanh(x)")
_activation("clip", lambda x, a: np.clip(x, a["min"], a["max"]),
            lambda dy, x, a: np.where((x >= a["min"]) & (x <= a["max"]), dy, 0.0 * dy), False,
            {"min": AttrSpec("float"), "max": AttrSpec("float")},
            "min(max(x, min), max); the gradient passes where min <= x <= max")


def _check_axis(op: str) -> Callable[[Sequence[TensorType], Attrs], list[TensorType]]:
    def infer(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
        rank = len(types[0].shape)
        if not -rank <= attrs["axis"] < rank:
            raise IRError(f"{op}: axis {attrs['axis']} out of range for {types[0]}")
        return _same_as_first(op)(types, attrs)
    return infer


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return shifted / np.sum(shifted, axis=axis, keepdims=True)


def _grad_softmax(b: GradBuilder, op: Op, dys: Sequence[Value | None], wants: Sequence[bool]) -> list[Value | None]:
    dy = dys[0]
    assert dy is not None
    return [b.emit("softmax_grad", [dy, op.outputs[0]], dict(op.attrs))[0]]


def _ref_softmax_grad(ins: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    dy, y = ins
    return [y * (dy - np.sum(dy * y, axis=attrs["axis"], keepdims=True))]


register(OpDef("softmax", _check_axis("softmax"), lambda ins, a: [_softmax(ins[0], a["axis"])], 1, 1,
               {"axis": AttrSpec("int", -1)}, _grad_softmax, doc="exp(x) / sum(exp(x)) along axis"))
register(OpDef("softmax_grad", _check_axis("softmax_grad"), _ref_softmax_grad, 2, 2, {"axis": AttrSpec("int", -1)},
               doc="y * (dy - sum(dy * y)) along axis"))

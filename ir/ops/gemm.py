"""General matrix multiply Y = alpha * op(A) @ op(B) + beta * C (ONNX Gemm; MatMul is gemm without C)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyodl.ir.graph import Op, Value
from tinyodl.ir.ops.common import expect_float, expect_rank, f
from tinyodl.ir.registry import Attrs, AttrSpec, GradBuilder, IRError, OpDef, register
from tinyodl.ir.types import TensorType

GEMM_ATTRS = {
    "trans_a": AttrSpec("int", 0),
    "trans_b": AttrSpec("int", 0),
    "alpha": AttrSpec("float", 1.0),
    "beta": AttrSpec("float", 1.0),
}


def gemm_dims(a: Sequence[int], b: Sequence[int], attrs: Attrs) -> tuple[int, int, int]:
    m, k = (a[1], a[0]) if attrs["trans_a"] else (a[0], a[1])
    k2, n = (b[1], b[0]) if attrs["trans_b"] else (b[0], b[1])
    if k != k2:
        raise IRError(f"gemm: inner dimensions differ ({k} vs {k2}) for A {list(a)} and B {list(b)}")
    return m, n, k


def _infer(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    a, b = types[0], types[1]
    expect_rank("gemm", "A", a, 2)
    expect_rank("gemm", "B", b, 2)
    expect_float("gemm", "A", a)
    m, n, _ = gemm_dims(a.shape, b.shape, attrs)
    if len(types) == 3:
        c = types[2].shape
        if len(c) > 2 or any(d not in (1, full) for d, full in zip(reversed(c), (n, m), strict=False)):
            raise IRError(f"gemm: C {list(c)} does not broadcast to [{m}, {n}]")
    return [f(a, (m, n))]


def _ref(inputs: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    a = inputs[0].T if attrs["trans_a"] else inputs[0]
    b = inputs[1].T if attrs["trans_b"] else inputs[1]
    y = attrs["alpha"] * (a @ b)
    if len(inputs) == 3:
        y = y + attrs["beta"] * inputs[2]
    return [y]


def _grad(b: GradBuilder, op: Op, dys: Sequence[Value | None], wants: Sequence[bool]) -> list[Value | None]:
    dy = dys[0]
    assert dy is not None
    a_val, b_val = op.inputs[0], op.inputs[1]
    ta, tb, alpha = op.attrs["trans_a"], op.attrs["trans_b"], op.attrs["alpha"]
    grads: list[Value | None] = [None] * len(op.inputs)

    def gemm(lhs: Value, rhs: Value, trans_a: int, trans_b: int) -> Value:
        attrs = {"trans_a": trans_a, "trans_b": trans_b, "alpha": alpha, "beta": 0.0}
        return b.emit("gemm", [lhs, rhs], attrs)[0]

    # With A' = op(A), B' = op(B): dA' = alpha dY B'^T and dB' = alpha A'^T dY, transposed back as needed.
    if wants[0]:
        grads[0] = gemm(dy, b_val, 0, 1 - tb) if not ta else gemm(b_val, dy, tb, 1)
    if wants[1]:
        grads[1] = gemm(a_val, dy, 1 - ta, 0) if not tb else gemm(dy, a_val, 1, ta)
    if len(op.inputs) == 3 and wants[2]:
        grads[2] = sum_to(b, dy, op.inputs[2].shape, op.attrs["beta"])
    return grads


def sum_to(b: GradBuilder, grad: Value, shape: tuple[int, ...], scale: float = 1.0) -> Value:
    """Reduce a broadcast gradient back to `shape` (numpy broadcasting rules)."""
    lead = len(grad.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and grad.shape[lead + i] != 1)
    if not axes and scale == 1.0:
        return grad
    reduced = b.emit("reduce_sum", [grad], {"axes": axes, "keepdims": 1, "scale": float(scale)})[0]
    if reduced.shape != shape:
        reduced = b.emit("reshape", [reduced], {"shape": shape})[0]
    return reduced


def _macs(ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs) -> int:
    m, n, k = gemm_dims(ins[0].shape, ins[1].shape, attrs)
    return m * n * k


register(OpDef("gemm", _infer, _ref, 2, 3, GEMM_ATTRS, _grad, _macs, casts_results=True,
               doc="Y = alpha op(A) op(B) + beta C; C broadcasts to [M, N]"))

"""Batch normalisation with fixed (inference) statistics: a per-channel affine map whose gamma/beta learn."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyodl.ir.graph import Op, Value
from tinyodl.ir.ops.common import expect_float, f
from tinyodl.ir.registry import Attrs, AttrSpec, GradBuilder, IRError, OpDef, register
from tinyodl.ir.types import TensorType

EPS = {"epsilon": AttrSpec("float", 1e-5)}


def _per_channel(shape: Sequence[int]) -> tuple[int, ...]:
    return (1, -1) + (1,) * (len(shape) - 2)


def _check_channels(op: str, x: TensorType, others: Sequence[TensorType]) -> None:
    if len(x.shape) < 2:
        raise IRError(f"{op}: input must have a channel axis, got {x}")
    for t in others:
        if t.shape != (x.shape[1],):
            raise IRError(f"{op}: per-channel operand must be [{x.shape[1]}], got {t}")


def _infer_bn(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    expect_float("batchnorm", "input", types[0])
    _check_channels("batchnorm", types[0], types[1:])
    return [types[0]]


def _inv_std(var: np.ndarray, x: np.ndarray, eps: float) -> np.ndarray:
    return (1.0 / np.sqrt(var + eps)).reshape(_per_channel(x.shape))


def _ref_bn(ins: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    x, gamma, beta, mean, var = ins
    shape = _per_channel(x.shape)
    xhat = (x - mean.reshape(shape)) * _inv_std(var, x, attrs["epsilon"])
    return [xhat * gamma.reshape(shape) + beta.reshape(shape)]


def _grad_bn(b: GradBuilder, op: Op, dys: Sequence[Value | None], wants: Sequence[bool]) -> list[Value | None]:
    dy = dys[0]
    assert dy is not None
    x, gamma, _, mean, var = op.inputs
    grads: list[Value | None] = [None] * 5
    if wants[0]:
        grads[0] = b.emit("batchnorm_grad_input", [dy, gamma, var], dict(op.attrs))[0]
    if wants[1] or wants[2]:
        dgamma, dbeta = b.emit("batchnorm_grad_params", [dy, x, mean, var], dict(op.attrs))
        grads[1] = dgamma if wants[1] else None
        grads[2] = dbeta if wants[2] else None
    return grads


register(OpDef("batchnorm", _infer_bn, _ref_bn, 5, 5, EPS, _grad_bn,
               lambda ins, outs, a: ins[0].numel, frozen_operands=(3, 4), mixed_operands=(3, 4),
               doc="(x - mean) / sqrt(var + eps) * gamma + beta with fixed mean/var; operands x,gamma,beta,mean,var"))


def _infer_grad_input(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    _check_channels("batchnorm_grad_input", types[0], types[1:])
    return [types[0]]


register(OpDef("batchnorm_grad_input", _infer_grad_input,
               lambda ins, a: [ins[0] * ins[1].reshape(_per_channel(ins[0].shape)) * _inv_std(ins[2], ins[0],
                                                                                              a["epsilon"])],
               3, 3, EPS, None, lambda ins, outs, a: ins[0].numel, mixed_operands=(2,),
               doc="dx = dy * gamma / sqrt(var + eps); operands dy,gamma,var"))


def _infer_grad_params(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    dy, x = types[0], types[1]
    if dy.shape != x.shape:
        raise IRError(f"batchnorm_grad_params: dy {dy} and x {x} differ")
    _check_channels("batchnorm_grad_params", x, types[2:])
    return [f(dy, (x.shape[1],)), f(dy, (x.shape[1],))]


def _ref_grad_params(ins: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    dy, x, mean, var = ins
    xhat = (x - mean.reshape(_per_channel(x.shape))) * _inv_std(var, x, attrs["epsilon"])
    axes = (0,) + tuple(range(2, x.ndim))
    return [np.sum(dy * xhat, axis=axes), np.sum(dy, axis=axes)]


register(OpDef("batchnorm_grad_params", _infer_grad_params, _ref_grad_params, 4, 4, EPS, None,
               lambda ins, outs, a: ins[0].numel, mixed_operands=(2, 3), casts_results=True,
               doc="dgamma = sum(dy * xhat), dbeta = sum(dy) per channel; operands dy,x,mean,var"))

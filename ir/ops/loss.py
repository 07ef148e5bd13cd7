"""Training losses (mean reduction, PyTorch semantics) and their gradients."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyodl.ir.graph import Op, Value
from tinyodl.ir.ops.common import expect_float, expect_rank, int_dtype, scalar_like
from tinyodl.ir.registry import Attrs, GradBuilder, IRError, OpDef, register
from tinyodl.ir.types import TensorType


def _check_ce(op: str, types: Sequence[TensorType]) -> None:
    logits, labels = types
    expect_rank(op, "logits", logits, 2)
    expect_float(op, "logits", logits)
    if labels.shape != (logits.shape[0],) or not int_dtype(labels):
        raise IRError(f"{op}: labels must be [{logits.shape[0]}] integers, got {labels}")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _labels(labels: np.ndarray, classes: int) -> np.ndarray:
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"label out of range [0, {classes}): {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def _ref_ce(ins: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    logits, labels = ins
    rows = np.arange(logits.shape[0])
    return [np.asarray(-_log_softmax(logits)[rows, _labels(labels, logits.shape[1])].mean())]


def _ref_ce_grad(ins: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    logits, labels = ins
    probs = np.exp(_log_softmax(logits))
    probs[np.arange(logits.shape[0]), _labels(labels, logits.shape[1])] -= 1.0
    return [probs / logits.shape[0]]


def _grad_loss(grad_op: str):  # type: ignore[no-untyped-def]
    def grad(b: GradBuilder, op: Op, dys: Sequence[Value | None], wants: Sequence[bool]) -> list[Value | None]:
        # The loss is the root of the backward walk: its own gradient is the implicit seed 1.
        return [b.emit(grad_op, list(op.inputs))[0] if wants[0] else None, None]
    return grad


def _infer_ce(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    _check_ce("softmax_cross_entropy", types)
    return [scalar_like(types[0])]


def _infer_ce_grad(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    _check_ce("softmax_cross_entropy_grad", types)
    return [types[0]]


register(OpDef("softmax_cross_entropy", _infer_ce, _ref_ce, 2, 2, {}, _grad_loss("softmax_cross_entropy_grad"),
               lambda ins, outs, a: ins[0].numel,
               doc="mean over rows of -log softmax(logits)[label]; operands logits [N, C], labels [N]"))
register(OpDef("softmax_cross_entropy_grad", _infer_ce_grad, _ref_ce_grad, 2, 2,
               doc="(softmax(logits) - onehot(labels)) / N"))


def _check_mse(op: str, types: Sequence[TensorType]) -> None:
    pred, target = types
    expect_float(op, "prediction", pred)
    if pred.shape != target.shape or not target.dtype.is_float:
        raise IRError(f"{op}: target must be a float tensor shaped like the prediction {pred}, got {target}")


def _infer_mse(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    _check_mse("mse_loss", types)
    return [scalar_like(types[0])]


def _infer_mse_grad(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    _check_mse("mse_loss_grad", types)
    return [types[0]]


register(OpDef("mse_loss", _infer_mse, lambda ins, a: [np.asarray(np.mean((ins[0] - ins[1]) ** 2))], 2, 2, {},
               _grad_loss("mse_loss_grad"), lambda ins, outs, a: ins[0].numel,
               doc="mean over all elements of (prediction - target)^2"))
register(OpDef("mse_loss_grad", _infer_mse_grad, lambda ins, a: [2.0 * (ins[0] - ins[1]) / ins[0].size], 2, 2,
               doc="2 (prediction - target) / numel"))

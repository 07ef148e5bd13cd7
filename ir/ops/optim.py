"""Optimizer updates with PyTorch's semantics. They write their parameter and state operands in place."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyodl.ir.ops.common import expect_same
from tinyodl.ir.registry import Attrs, AttrSpec, IRError, OpDef, register
from tinyodl.ir.types import TensorType

SGD_ATTRS = {
    "lr": AttrSpec("float"),
    "momentum": AttrSpec("float", 0.0),
    "weight_decay": AttrSpec("float", 0.0),
    "nesterov": AttrSpec("int", 0),
}
ADAM_ATTRS = {
    "lr": AttrSpec("float"),
    "beta1": AttrSpec("float", 0.9),
    "beta2": AttrSpec("float", 0.999),
    "eps": AttrSpec("float", 1e-8),
    "weight_decay": AttrSpec("float", 0.0),
    "decoupled": AttrSpec("int", 0),  # 1 = AdamW
}


def _infer_sgd(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    for other in types[1:]:
        expect_same("sgd_update", types[0], other)
    if (attrs["momentum"] != 0.0) != (len(types) == 3):
        raise IRError("sgd_update: a momentum buffer operand is needed exactly when momentum != 0")
    if attrs["nesterov"] and attrs["momentum"] == 0.0:
        raise IRError("sgd_update: nesterov needs momentum > 0")
    return []


def _ref_sgd(ins: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    w, g = ins[0], ins[1]
    g = g + attrs["weight_decay"] * w
    if len(ins) == 2:
        return [w - attrs["lr"] * g]
    buf = attrs["momentum"] * ins[2] + g
    step = g + attrs["momentum"] * buf if attrs["nesterov"] else buf
    return [w - attrs["lr"] * step, buf]


register(OpDef("sgd_update", _infer_sgd, _ref_sgd, 2, 3, SGD_ATTRS, mutates=(0, 2),
               doc="w -= lr * step with weight decay, momentum buffer, nesterov; operands w, g[, buf]"))


def _infer_adam(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    for other in types[1:4]:
        expect_same("adam_update", types[0], other)
    if types[4].shape != () or types[4].dtype.is_float:
        raise IRError(f"adam_update: step must be an integer scalar, got {types[4]}")
    return []


def _ref_adam(ins: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    w, g, m, v, step = ins
    t = int(step)
    lr, b1, b2, wd = attrs["lr"], attrs["beta1"], attrs["beta2"], attrs["weight_decay"]
    if attrs["decoupled"]:
        w = w * (1.0 - lr * wd)
    else:
        g = g + wd * w
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * g * g
    denom = np.sqrt(v) / np.sqrt(1.0 - b2 ** t) + attrs["eps"]
    # Same evaluation order as torch's addcdiv, so float64 results agree to the last bits.
    return [w - (lr / (1.0 - b1 ** t)) * (m / denom), m, v]


register(OpDef("adam_update", _infer_adam, _ref_adam, 5, 5, ADAM_ATTRS, mutates=(0, 2, 3),
               doc="Adam / AdamW (decoupled=1) with bias correction; operands w, g, m, v, step"))


def _infer_step(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    if types[0].shape != () or types[0].dtype.is_float:
        raise IRError(f"step_increment: operand must be an integer scalar, got {types[0]}")
    return []


register(OpDef("step_increment", _infer_step, lambda ins, a: [ins[0] + 1], 1, 1, mutates=(0,),
               doc="the optimizer's step counter += 1"))

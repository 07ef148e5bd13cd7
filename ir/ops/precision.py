"""Precision ops: dtype casts and dynamic loss scaling (PyTorch GradScaler's semantics).

A training step with loss scaling multiplies the loss gradient by the scale (`amp_scale`), unscales every
parameter gradient while checking it is finite (`amp_unscale`, a chain of found-inf flags), skips the
optimizer step when a gradient overflowed (updates guarded by the last flag) and adapts the scale
(`amp_update_scale`): backed off on overflow, grown after `growth_interval` clean steps in a row. The
scale and the count of clean steps are optimizer state, so they persist across steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tinyodl.ir.graph import Op, Value
from tinyodl.ir.ops.common import expect_float
from tinyodl.ir.registry import Attrs, AttrSpec, GradBuilder, IRError, OpDef, register
from tinyodl.ir.types import DType, TensorType


def target_dtype(op: str, attrs: Attrs, key: str = "to") -> DType:
    try:
        return DType.parse(str(attrs[key]))
    except ValueError:
        raise IRError(f"{op}: {key} must be a float dtype (f32, f16, bf16), got {attrs[key]!r}") from None


def _infer_cast(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    expect_float("cast", "operand", types[0])
    return [TensorType(types[0].shape, target_dtype("cast", attrs), types[0].layout)]


def _grad_cast(b: GradBuilder, op: Op, dys: Sequence[Value | None], wants: Sequence[bool]) -> list[Value | None]:
    dy = dys[0]
    assert dy is not None
    return [b.emit("cast", [dy], {"to": op.inputs[0].dtype.value})[0]]


# The value itself: the executor rounds every result to its dtype, which is all a cast does.
register(OpDef("cast", _infer_cast, lambda ins, a: [np.asarray(ins[0])], 1, 1, {"to": AttrSpec("str")}, _grad_cast,
               mixed_operands=(0,), doc="x converted to dtype `to` (round to nearest even)"))


def _expect_scale(op: str, t: TensorType) -> None:
    if t.shape != () or t.dtype is not DType.F32:
        raise IRError(f"{op}: the loss scale must be an f32 scalar, got {t}")


def _expect_flag(op: str, what: str, t: TensorType) -> None:
    if t.shape != () or t.dtype is not DType.I32:
        raise IRError(f"{op}: {what} must be an i32 scalar, got {t}")


def _infer_scale(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    expect_float("amp_scale", "gradient", types[0])
    _expect_scale("amp_scale", types[1])
    return [types[0]]


register(OpDef("amp_scale", _infer_scale, lambda ins, a: [ins[0] * ins[1]], 2, 2, mixed_operands=(1,),
               doc="the loss gradient times the loss scale; operands g, scale"))


def _infer_unscale(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    expect_float("amp_unscale", "gradient", types[0])
    _expect_scale("amp_unscale", types[1])
    if len(types) == 3:
        _expect_flag("amp_unscale", "the incoming found-inf flag", types[2])
    return [TensorType(types[0].shape, target_dtype("amp_unscale", attrs), types[0].layout), TensorType((), DType.I32)]


def _ref_unscale(ins: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    grad, scale = np.asarray(ins[0]), float(ins[1])
    # GradScaler multiplies by the float32 reciprocal and checks the scaled gradient itself.
    inverse = float(np.float32(1.0 / np.float64(scale)))
    found = int(len(ins) == 3 and int(ins[2]) != 0) or int(not np.all(np.isfinite(grad)))
    return [grad * inverse, np.asarray(found, np.int32)]


register(OpDef("amp_unscale", _infer_unscale, _ref_unscale, 2, 3, {"to": AttrSpec("str")}, mixed_operands=(0,),
               doc="g / scale in dtype `to`, and the found-inf flag: the incoming one or'ed with 'g has an inf or a "
                   "NaN'; operands g, scale[, found_inf]"))

SCALER_ATTRS = {
    "growth_factor": AttrSpec("float", 2.0),
    "backoff_factor": AttrSpec("float", 0.5),
    "growth_interval": AttrSpec("int", 2000),
}


def _infer_update_scale(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    _expect_scale("amp_update_scale", types[0])
    _expect_flag("amp_update_scale", "the growth tracker", types[1])
    _expect_flag("amp_update_scale", "the found-inf flag", types[2])
    if not attrs["growth_factor"] > 1.0 or not 0.0 < attrs["backoff_factor"] < 1.0 or attrs["growth_interval"] < 1:
        raise IRError("amp_update_scale: needs growth_factor > 1, 0 < backoff_factor < 1, growth_interval >= 1")
    return []


def _ref_update_scale(ins: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    scale, tracker, found = float(ins[0]), int(ins[1]), int(ins[2])
    if found:
        scale, tracker = scale * attrs["backoff_factor"], 0
    elif tracker + 1 == attrs["growth_interval"]:
        with np.errstate(over="ignore"):  # a scale past float32's range is not taken
            grown = float(np.float32(scale * attrs["growth_factor"]))
        scale, tracker = (grown if math.isfinite(grown) else scale), 0
    else:
        tracker += 1
    return [np.asarray(np.float32(scale), np.float64), np.asarray(tracker, np.int32)]


register(OpDef("amp_update_scale", _infer_update_scale, _ref_update_scale, 3, 3, SCALER_ATTRS, mutates=(0, 1),
               doc="GradScaler.update: scale *= backoff_factor on overflow (tracker = 0), else tracker += 1 and at "
                   "growth_interval scale *= growth_factor if that stays finite (tracker = 0); operands scale, "
                   "growth tracker, found_inf"))

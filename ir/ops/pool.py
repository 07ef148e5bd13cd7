"""Max, average and global average pooling over NCHW tensors, and their gradients."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyodl.ir.graph import Op, Value
from tinyodl.ir.ops.common import (
    WINDOW_ATTRS,
    check_window_attrs,
    expect_float,
    expect_rank,
    f,
    window_out,
    windows,
)
from tinyodl.ir.registry import Attrs, AttrSpec, GradBuilder, IRError, OpDef, register
from tinyodl.ir.types import TensorType

AVG_ATTRS = {**WINDOW_ATTRS, "count_include_pad": AttrSpec("int", 0)}


def pool_out_shape(op: str, x: Sequence[int], attrs: Attrs) -> tuple[int, int, int, int]:
    (sh, sw), _, pads = check_window_attrs(op, attrs)
    kernel = tuple(attrs["kernel"])
    if len(kernel) != 2:
        raise IRError(f"{op}: kernel needs 2 values, got {list(kernel)}")
    if pads[0] >= kernel[0] or pads[2] >= kernel[0] or pads[1] >= kernel[1] or pads[3] >= kernel[1]:
        raise IRError(f"{op}: pads {list(pads)} must be smaller than the kernel {list(kernel)}")
    return (x[0], x[1], window_out(op, x[2], kernel[0], sh, pads[0], pads[2]),
            window_out(op, x[3], kernel[1], sw, pads[1], pads[3]))


def _infer_pool(name: str):  # type: ignore[no-untyped-def]
    def infer(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
        expect_rank(name, "input", types[0], 4)
        expect_float(name, "input", types[0])
        return [f(types[0], pool_out_shape(name, types[0].shape, attrs))]
    return infer


def _infer_pool_grad(name: str, forward_input: int | None):  # type: ignore[no-untyped-def]
    def infer(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
        dy = types[0]
        x_shape = tuple(attrs["input_shape"]) if forward_input is None else types[forward_input].shape
        if len(x_shape) != 4 or pool_out_shape(name, x_shape, attrs) != dy.shape:
            raise IRError(f"{name}: output gradient {dy} does not match input {list(x_shape)}")
        return [f(dy, x_shape)]
    return infer


def _scatter_windows(contribs: np.ndarray, x_shape: Sequence[int], attrs: Attrs) -> np.ndarray:
    """Adjoint of `windows`: add [N, C, OH, OW, KH, KW] contributions back into an [N, C, H, W] array."""
    n, c, h, w = x_shape
    top, left, bottom, right = attrs["pads"]
    sh, sw = attrs["strides"]
    oh, ow, kh, kw = contribs.shape[2:]
    padded = np.zeros((n, c, h + top + bottom, w + left + right), dtype=contribs.dtype)
    for i in range(kh):
        for j in range(kw):
            padded[:, :, i: i + sh * (oh - 1) + 1: sh, j: j + sw * (ow - 1) + 1: sw] += contribs[..., i, j]
    return padded[:, :, top: top + h, left: left + w]


def _max_mask(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    """One-hot [N, C, OH, OW, KH, KW] of each window's first maximum (row-major order)."""
    win = windows(x, attrs["kernel"], attrs["strides"], attrs["pads"], fill=-np.inf)
    flat = win.reshape(*win.shape[:4], -1)
    onehot = np.zeros_like(flat)
    np.put_along_axis(onehot, np.argmax(flat, axis=-1)[..., None], 1.0, axis=-1)
    return onehot.reshape(win.shape)


def _grad_max(b: GradBuilder, op: Op, dys: Sequence[Value | None], wants: Sequence[bool]) -> list[Value | None]:
    dy = dys[0]
    assert dy is not None
    return [b.emit("maxpool2d_grad", [dy, op.inputs[0]], dict(op.attrs))[0]]


register(OpDef(
    "maxpool2d", _infer_pool("maxpool2d"),
    lambda ins, a: [windows(ins[0], a["kernel"], a["strides"], a["pads"], fill=-np.inf).max(axis=(4, 5))],
    1, 1, WINDOW_ATTRS, _grad_max, doc="max over each window; padding never wins"))
register(OpDef(
    "maxpool2d_grad", _infer_pool_grad("maxpool2d_grad", 1),
    lambda ins, a: [_scatter_windows(_max_mask(ins[1], a) * ins[0][..., None, None], ins[1].shape, a)],
    2, 2, WINDOW_ATTRS, doc="routes dy to each window's first maximum of x; operands dy,x"))


def _divisor(x_shape: Sequence[int], attrs: Attrs) -> np.ndarray:
    ones = np.ones((1, 1, *x_shape[2:]))
    fill = 1.0 if attrs["count_include_pad"] else 0.0
    return windows(ones, attrs["kernel"], attrs["strides"], attrs["pads"], fill=fill).sum(axis=(4, 5))


def _ref_avg(ins: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    total = windows(x, attrs["kernel"], attrs["strides"], attrs["pads"]).sum(axis=(4, 5))
    return [total / _divisor(x.shape, attrs)]


def _ref_avg_grad(ins: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    dy = ins[0]
    shape = tuple(attrs["input_shape"])
    kh, kw = attrs["kernel"]
    share = dy / _divisor(shape, attrs)
    return [_scatter_windows(np.broadcast_to(share[..., None, None], (*dy.shape, kh, kw)), shape, attrs)]


def _grad_avg(b: GradBuilder, op: Op, dys: Sequence[Value | None], wants: Sequence[bool]) -> list[Value | None]:
    dy = dys[0]
    assert dy is not None
    return [b.emit("avgpool2d_grad", [dy], {**op.attrs, "input_shape": op.inputs[0].shape})[0]]


register(OpDef("avgpool2d", _infer_pool("avgpool2d"), _ref_avg, 1, 1, AVG_ATTRS, _grad_avg,
               doc="mean over each window; count_include_pad=0 divides by the in-image positions only"))
register(OpDef("avgpool2d_grad", _infer_pool_grad("avgpool2d_grad", None), _ref_avg_grad, 1, 1,
               {**AVG_ATTRS, "input_shape": AttrSpec("ints")}, doc="spreads dy evenly over each window"))


def _infer_gap(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    x = types[0]
    if len(x.shape) < 3:
        raise IRError(f"global_avgpool: input must be at least 3-D, got {x}")
    expect_float("global_avgpool", "input", x)
    return [f(x, x.shape[:2] + (1,) * (len(x.shape) - 2))]


def _grad_gap(b: GradBuilder, op: Op, dys: Sequence[Value | None], wants: Sequence[bool]) -> list[Value | None]:
    dy = dys[0]
    assert dy is not None
    x = op.inputs[0]
    plane = int(np.prod(x.shape[2:]))
    return [b.emit("broadcast", [dy], {"shape": x.shape, "scale": 1.0 / plane})[0]]


register(OpDef("global_avgpool", _infer_gap,
               lambda ins, a: [ins[0].mean(axis=tuple(range(2, ins[0].ndim)), keepdims=True)], 1, 1, {},
               _grad_gap, doc="mean over all spatial positions"))

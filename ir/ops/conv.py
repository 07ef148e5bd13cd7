"""2-D convolution (dense and depthwise) and its gradients. Tensors are NCHW; weights [K, C/group, KH, KW]."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyodl.ir.graph import Op, Value
from tinyodl.ir.ops.common import check_window_attrs, expect_float, expect_rank, f, window_out, windows
from tinyodl.ir.registry import Attrs, AttrSpec, GradBuilder, IRError, OpDef, register
from tinyodl.ir.types import TensorType

CONV_ATTRS = {
    "strides": AttrSpec("ints", (1, 1)),
    "pads": AttrSpec("ints", (0, 0, 0, 0)),  # top, left, bottom, right
    "group": AttrSpec("int", 1),
}


def conv_out_shape(op: str, x: Sequence[int], w: Sequence[int], attrs: Attrs) -> tuple[int, int, int, int]:
    (sh, sw), _, pads = check_window_attrs(op, attrs)
    n, c, h, width = x
    k, cg, kh, kw = w
    group = attrs["group"]
    if group < 1 or c % group or k % group:
        raise IRError(f"{op}: group {group} must divide input channels {c} and output channels {k}")
    if group not in (1, c):
        raise IRError(f"{op}: only group=1 or depthwise (group == input channels) is supported, got {group}")
    if cg != c // group:
        raise IRError(f"{op}: weight has {cg} input channels per group, expected {c // group}")
    oh = window_out(op, h, kh, sh, pads[0], pads[2])
    ow = window_out(op, width, kw, sw, pads[1], pads[3])
    return n, k, oh, ow


def _infer_conv(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    x, w = types[0], types[1]
    expect_rank("conv2d", "input", x, 4)
    expect_rank("conv2d", "weight", w, 4)
    expect_float("conv2d", "input", x)
    if len(types) == 3 and types[2].shape != (w.shape[0],):
        raise IRError(f"conv2d: bias must be [{w.shape[0]}], got {types[2]}")
    return [f(x, conv_out_shape("conv2d", x.shape, w.shape, attrs))]


def _grouped_windows(x: np.ndarray, kernel: tuple[int, int], attrs: Attrs) -> np.ndarray:
    n, c = x.shape[:2]
    group = attrs["group"]
    win = windows(x, kernel, attrs["strides"], attrs["pads"])
    return win.reshape(n, group, c // group, *win.shape[2:])


def _ref_conv(inputs: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    x, w = inputs[0], inputs[1]
    group = attrs["group"]
    k, cg, kh, kw = w.shape
    win = _grouped_windows(x, (kh, kw), attrs)
    wg = w.reshape(group, k // group, cg, kh, kw)
    y = np.einsum("ngchwij,gkcij->ngkhw", win, wg, optimize=True)
    y = y.reshape(x.shape[0], k, *y.shape[3:])
    if len(inputs) == 3:
        y = y + inputs[2][None, :, None, None]
    return [y]


def _grad_conv(b: GradBuilder, op: Op, dys: Sequence[Value | None], wants: Sequence[bool]) -> list[Value | None]:
    dy = dys[0]
    assert dy is not None
    x, w = op.inputs[0], op.inputs[1]
    common = {"strides": op.attrs["strides"], "pads": op.attrs["pads"], "group": op.attrs["group"]}
    grads: list[Value | None] = [None] * len(op.inputs)
    if wants[0]:
        grads[0] = b.emit("conv2d_grad_input", [dy, w], {**common, "input_shape": x.shape})[0]
    if wants[1]:
        grads[1] = b.emit("conv2d_grad_weight", [x, dy], {**common, "kernel": w.shape[2:]})[0]
    if len(op.inputs) == 3 and wants[2]:
        grads[2] = b.emit("reduce_sum", [dy], {"axes": (0, 2, 3), "keepdims": 0, "scale": 1.0})[0]
    return grads


def _conv_macs(x: Sequence[int], w: Sequence[int], y: Sequence[int]) -> int:
    return int(np.prod(y)) * w[1] * w[2] * w[3]


register(OpDef(
    "conv2d", _infer_conv, _ref_conv, 2, 3, CONV_ATTRS, _grad_conv,
    lambda ins, outs, a: _conv_macs(ins[0].shape, ins[1].shape, outs[0].shape), casts_results=True,
    doc="y = conv(x, w) + b; pads top,left,bottom,right; group 1 or depthwise",
))


def _infer_grad_input(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    dy, w = types
    shape = tuple(attrs["input_shape"])
    if len(shape) != 4:
        raise IRError("conv2d_grad_input: input_shape needs 4 values")
    if conv_out_shape("conv2d_grad_input", shape, w.shape, attrs) != dy.shape:
        raise IRError(f"conv2d_grad_input: output gradient {dy} does not match input_shape {list(shape)}")
    return [f(dy, shape)]


def _ref_grad_input(inputs: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    dy, w = inputs
    n, c, h, width = attrs["input_shape"]
    group = attrs["group"]
    k, cg, kh, kw = w.shape
    (sh, sw), _, (top, left, bottom, right) = check_window_attrs("conv2d_grad_input", attrs)
    oh, ow = dy.shape[2:]
    dyg = dy.reshape(n, group, k // group, oh, ow)
    wg = w.reshape(group, k // group, cg, kh, kw)
    padded = np.zeros((n, group, cg, h + top + bottom, width + left + right), dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            contrib = np.einsum("ngkhw,gkc->ngchw", dyg, wg[:, :, :, i, j], optimize=True)
            padded[:, :, :, i: i + sh * (oh - 1) + 1: sh, j: j + sw * (ow - 1) + 1: sw] += contrib
    return [padded[:, :, :, top: top + h, left: left + width].reshape(n, c, h, width)]


register(OpDef(
    "conv2d_grad_input", _infer_grad_input, _ref_grad_input, 2, 2,
    {**CONV_ATTRS, "input_shape": AttrSpec("ints")}, None,
    lambda ins, outs, a: _conv_macs(outs[0].shape, ins[1].shape, ins[0].shape), casts_results=True,
    doc="dx = conv_transpose(dy, w): gradient of conv2d with respect to its input",
))


def _infer_grad_weight(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    x, dy = types
    expect_rank("conv2d_grad_weight", "input", x, 4)
    kernel = tuple(attrs["kernel"])
    if len(kernel) != 2:
        raise IRError("conv2d_grad_weight: kernel needs 2 values")
    group = attrs["group"]
    if group < 1 or x.shape[1] % group:
        raise IRError(f"conv2d_grad_weight: group {group} does not divide {x.shape[1]} channels")
    w_shape = (dy.shape[1], x.shape[1] // group, *kernel)
    if conv_out_shape("conv2d_grad_weight", x.shape, w_shape, attrs) != dy.shape:
        raise IRError(f"conv2d_grad_weight: output gradient {dy} does not match input {x}")
    return [f(dy, w_shape)]


def _ref_grad_weight(inputs: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    x, dy = inputs
    group = attrs["group"]
    kh, kw = attrs["kernel"]
    n, k, oh, ow = dy.shape
    win = _grouped_windows(x, (kh, kw), attrs)
    dyg = dy.reshape(n, group, k // group, oh, ow)
    dw = np.einsum("ngkhw,ngchwij->gkcij", dyg, win, optimize=True)
    return [dw.reshape(k, x.shape[1] // group, kh, kw)]


register(OpDef(
    "conv2d_grad_weight", _infer_grad_weight, _ref_grad_weight, 2, 2,
    {**CONV_ATTRS, "kernel": AttrSpec("ints")}, None,
    lambda ins, outs, a: _conv_macs(ins[0].shape, outs[0].shape, ins[1].shape), casts_results=True,
    doc="dw = sum over batch and pixels of dy x window(x): gradient of conv2d with respect to its weight",
))

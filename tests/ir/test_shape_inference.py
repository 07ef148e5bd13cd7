"""Property tests: conv2d / maxpool2d / avgpool2d shape inference agrees with the shapes torch produces
(asymmetric pads applied with F.pad on meta tensors), the gradient ops infer the forward operand shapes
back, and invalid combinations raise IRError naming the op."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyodl.ir.registry import IRError, infer_types
from tinyodl.ir.types import DType, TensorType

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Window:
    n: int
    c: int
    h: int
    w: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]   # top, left, bottom, right

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    def fits(self) -> bool:
        return (self.h + self.pads[0] + self.pads[2] >= self.kernel[0]
                and self.w + self.pads[1] + self.pads[3] >= self.kernel[1])

    def padded_meta(self) -> torch.Tensor:
        top, left, bottom, right = self.pads
        return F.pad(torch.empty(self.x_shape, device="meta"), (left, right, top, bottom))


@st.composite
def windows(draw: Any, max_pad: int = 3) -> Window:
    return Window(
        n=draw(st.integers(1, 3)), c=draw(st.integers(1, 6)),
        h=draw(st.integers(1, 12)), w=draw(st.integers(1, 12)),
        kernel=(draw(st.integers(1, 6)), draw(st.integers(1, 6))),
        strides=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        pads=tuple(draw(st.integers(0, max_pad)) for _ in range(4)),  # type: ignore[arg-type]
    )


def f32(shape: tuple[int, ...]) -> TensorType:
    return TensorType(tuple(shape))


def window_attrs(win: Window) -> dict[str, Any]:
    return {"kernel": win.kernel, "strides": win.strides, "pads": win.pads}


# -- conv2d ----------------------------------------------------------------------------------------
@SETTINGS
@given(win=windows(), depthwise=st.booleans(), out_per_group=st.integers(1, 3), bias=st.booleans())
def test_conv2d_shape_matches_torch(win: Window, depthwise: bool, out_per_group: int, bias: bool) -> None:
    group = win.c if depthwise else 1
    k = win.c * out_per_group if depthwise else out_per_group + 1
    w_shape = (k, win.c // group, *win.kernel)
    types = [f32(win.x_shape), f32(w_shape)] + ([f32((k,))] if bias else [])
    attrs = {"strides": win.strides, "pads": win.pads, "group": group}
    if not win.fits():
        with pytest.raises(IRError, match="^conv2d: "):
            infer_types("conv2d", types, attrs)
        return
    expected = F.conv2d(win.padded_meta(), torch.empty(w_shape, device="meta"), stride=win.strides,
                        groups=group).shape
    (y,) = infer_types("conv2d", types, attrs)
    assert y.shape == tuple(expected)
    assert y.dtype is DType.F32
    grad_attrs = {"strides": win.strides, "pads": win.pads, "group": group}
    (dx,) = infer_types("conv2d_grad_input", [y, f32(w_shape)], {**grad_attrs, "input_shape": win.x_shape})
    assert dx.shape == win.x_shape
    (dw,) = infer_types("conv2d_grad_weight", [f32(win.x_shape), y], {**grad_attrs, "kernel": win.kernel})
    assert dw.shape == w_shape


# -- pooling ---------------------------------------------------------------------------------------
@SETTINGS
@given(win=windows())
def test_maxpool2d_shape_matches_torch(win: Window) -> None:
    types = [f32(win.x_shape)]
    attrs = window_attrs(win)
    pads_ok = all(p < win.kernel[i % 2] for i, p in enumerate(win.pads))
    if not pads_ok:
        with pytest.raises(IRError, match=r"^maxpool2d: pads .* must be smaller than the kernel"):
            infer_types("maxpool2d", types, attrs)
        return
    if not win.fits():
        with pytest.raises(IRError, match="^maxpool2d: window"):
            infer_types("maxpool2d", types, attrs)
        return
    expected = F.max_pool2d(win.padded_meta(), win.kernel, win.strides).shape
    (y,) = infer_types("maxpool2d", types, attrs)
    assert y.shape == tuple(expected)
    (dx,) = infer_types("maxpool2d_grad", [y, f32(win.x_shape)], attrs)
    assert dx.shape == win.x_shape


@SETTINGS
@given(win=windows(), count_include_pad=st.sampled_from([0, 1]))
def test_avgpool2d_shape_matches_torch(win: Window, count_include_pad: int) -> None:
    types = [f32(win.x_shape)]
    attrs = {**window_attrs(win), "count_include_pad": count_include_pad}
    pads_ok = all(p < win.kernel[i % 2] for i, p in enumerate(win.pads))
    if not pads_ok or not win.fits():
        with pytest.raises(IRError, match="^avgpool2d: "):
            infer_types("avgpool2d", types, attrs)
        return
    expected = F.avg_pool2d(win.padded_meta(), win.kernel, win.strides).shape
    (y,) = infer_types("avgpool2d", types, attrs)
    assert y.shape == tuple(expected)
    (dx,) = infer_types("avgpool2d_grad", [y], {**attrs, "input_shape": win.x_shape})
    assert dx.shape == win.x_shape


@SETTINGS
@given(n=st.integers(1, 3), c=st.integers(1, 5), kernel=st.integers(1, 4), pad=st.integers(0, 2),
       stride=st.integers(1, 3), size=st.integers(1, 10))
def test_symmetric_pooling_matches_torch_padding(n: int, c: int, kernel: int, pad: int, stride: int,
                                                 size: int) -> None:
    # PyTorch's own padding argument (pad <= kernel / 2) without the manual F.pad.
    if 2 * pad > kernel or size + 2 * pad < kernel:
        return
    x = torch.empty((n, c, size, size + 1), device="meta")
    attrs = {"kernel": (kernel, kernel), "strides": (stride, stride), "pads": (pad, pad, pad, pad)}
    for op, fn in [("maxpool2d", F.max_pool2d), ("avgpool2d", F.avg_pool2d)]:
        expected = fn(x, kernel, stride, padding=pad).shape
        (y,) = infer_types(op, [f32(tuple(x.shape))], attrs)
        assert y.shape == tuple(expected)


# -- invalid combinations --------------------------------------------------------------------------
@SETTINGS
@given(c=st.integers(2, 6), group=st.integers(2, 6), k=st.integers(1, 8))
def test_conv2d_rejects_unsupported_groups(c: int, group: int, k: int) -> None:
    if group == c and k % group == 0:
        return
    cg = max(c // group, 1)
    with pytest.raises(IRError, match="^conv2d: .*group"):
        infer_types("conv2d", [f32((1, c, 5, 5)), f32((k, cg, 3, 3))], {"group": group})


@SETTINGS
@given(win=windows(), bad=st.sampled_from(["stride0", "negative_pad", "kernel_too_big"]))
def test_window_ops_reject_bad_windows(win: Window, bad: str) -> None:
    strides, pads, kernel = win.strides, win.pads, win.kernel
    if bad == "stride0":
        strides = (0, strides[1])
    elif bad == "negative_pad":
        pads = (pads[0], -1, pads[2], pads[3])
    else:
        kernel = (win.h + pads[0] + pads[2] + 1, kernel[1])
        pads = tuple(min(p, 0) for p in pads)  # type: ignore[assignment]
    conv_attrs = {"strides": strides, "pads": pads}
    with pytest.raises(IRError, match="^conv2d: "):
        infer_types("conv2d", [f32(win.x_shape), f32((2, win.c, *kernel))], conv_attrs)
    for op in ("maxpool2d", "avgpool2d"):
        with pytest.raises(IRError, match=f"^{op}: "):
            infer_types(op, [f32(win.x_shape)], {"kernel": kernel, "strides": strides, "pads": pads})


INVALID = [
    ("conv2d", [(1, 3, 5, 5), (4, 2, 3, 3)], {}, "conv2d: weight has 2 input channels per group, expected 3"),
    ("conv2d", [(1, 3, 5, 5), (4, 3, 3, 3), (3,)], {}, "conv2d: bias must be [4], got 3xf32"),
    ("conv2d", [(3, 5, 5), (4, 3, 3, 3)], {}, "conv2d: input must be 4-D, got 3x5x5xf32"),
    ("conv2d", [(1, 3, 5, 5), (4, 3, 3)], {}, "conv2d: weight must be 4-D, got 4x3x3xf32"),
    ("conv2d", [(1, 3, 5, 5), (4, 3, 3, 3)], {"strides": (1,)},
     "conv2d: strides needs 2 values and pads 4, got [1] and [0, 0, 0, 0]"),
    ("conv2d", [(1, 3, 5, 5), (4, 3, 3, 3)], {"pads": (1, 1)},
     "conv2d: strides needs 2 values and pads 4, got [1, 1] and [1, 1]"),
    ("conv2d", [(1, 4, 5, 5), (4, 2, 3, 3)], {"group": 2},
     "conv2d: only group=1 or depthwise (group == input channels) is supported, got 2"),
    ("conv2d", [(1, 3, 5, 5), (4, 3, 6, 3)], {}, "conv2d: window 6 larger than padded input 5"),
    ("maxpool2d", [(1, 3, 5, 5)], {"kernel": (3,)}, "maxpool2d: kernel needs 2 values, got [3]"),
    ("maxpool2d", [(1, 3, 5, 5)], {"kernel": (2, 2), "pads": (2, 0, 0, 0)},
     "maxpool2d: pads [2, 0, 0, 0] must be smaller than the kernel [2, 2]"),
    ("maxpool2d", [(3, 5, 5)], {"kernel": (2, 2)}, "maxpool2d: input must be 4-D, got 3x5x5xf32"),
    ("avgpool2d", [(1, 3, 5, 5)], {"kernel": (6, 2)}, "avgpool2d: window 6 larger than padded input 5"),
    ("avgpool2d", [(1, 3, 5, 5)], {"kernel": (2, 2), "strides": (0, 1)},
     "avgpool2d: kernel/stride must be >= 1 and pads >= 0"),
    ("conv2d_grad_input", [(1, 4, 3, 3), (4, 3, 3, 3)], {"input_shape": (1, 3, 6, 5)},
     "conv2d_grad_input: output gradient 1x4x3x3xf32 does not match input_shape [1, 3, 6, 5]"),
    ("conv2d_grad_weight", [(1, 3, 5, 5), (1, 4, 3, 3)], {"kernel": (2, 2)},
     "conv2d_grad_weight: output gradient 1x4x3x3xf32 does not match input 1x3x5x5xf32"),
    ("maxpool2d_grad", [(1, 3, 2, 2), (1, 3, 5, 5)], {"kernel": (2, 2)},
     "maxpool2d_grad: output gradient 1x3x2x2xf32 does not match input [1, 3, 5, 5]"),
    ("avgpool2d_grad", [(1, 3, 2, 2)], {"kernel": (2, 2), "input_shape": (1, 3, 5, 5)},
     "avgpool2d_grad: output gradient 1x3x2x2xf32 does not match input [1, 3, 5, 5]"),
    ("gemm", [(4, 5), (3, 5)], {}, "gemm: inner dimensions differ (5 vs 3) for A [4, 5] and B [3, 5]"),
    ("gemm", [(4, 5), (5, 3), (4,)], {}, "gemm: C [4] does not broadcast to [4, 3]"),
    ("gemm", [(4, 5), (5, 3), (2, 4, 3)], {}, "gemm: C [2, 4, 3] does not broadcast to [4, 3]"),
    ("softmax", [(2, 3)], {"axis": -3}, "softmax: axis -3 out of range for 2x3xf32"),
    ("softmax_grad", [(2, 3), (2, 3)], {"axis": 2}, "softmax_grad: axis 2 out of range for 2x3xf32"),
    ("softmax_grad", [(2, 3), (2, 4)], {}, "softmax_grad: operands must have the same type, got 2x3xf32 and 2x4xf32"),
    ("relu_grad", [(2, 3), (3, 2)], {}, "relu_grad: operands must have the same type, got 2x3xf32 and 3x2xf32"),
    ("add", [(2, 3), (4,)], {}, "add: shapes [2, 3] and [4] do not broadcast"),
    ("reshape", [(2, 3)], {"shape": (4, 2)}, "reshape: cannot reshape 2x3xf32 to [4, 2]"),
    ("reduce_sum", [(2, 3)], {"axes": (0, 0)}, "reduce_sum: axes [0, 0] invalid for 2x3xf32"),
    ("reduce_sum", [(2, 3)], {"axes": (2,)}, "reduce_sum: axes [2] invalid for 2x3xf32"),
    ("broadcast", [(2, 3)], {"shape": (4, 3)}, "broadcast: cannot broadcast 2x3xf32 to [4, 3]"),
    ("global_avgpool", [(2, 3)], {}, "global_avgpool: input must be at least 3-D, got 2x3xf32"),
    ("batchnorm", [(2, 3, 4, 4), (3,), (3,), (4,), (3,)], {}, "batchnorm: per-channel operand must be [3], got 4xf32"),
    ("mse_loss", [(2, 3), (3, 2)], {},
     "mse_loss: target must be a float tensor shaped like the prediction 2x3xf32, got 3x2xf32"),
    ("softmax_cross_entropy", [(4, 3), (4,)], {}, "softmax_cross_entropy: labels must be [4] integers, got 4xf32"),
    ("sgd_update", [(2, 3), (2, 3)], {"lr": 0.1, "momentum": 0.9},
     "sgd_update: a momentum buffer operand is needed exactly when momentum != 0"),
    ("sgd_update", [(2, 3), (2, 3), (2, 3)], {"lr": 0.1, "nesterov": 1},
     "sgd_update: a momentum buffer operand is needed exactly when momentum != 0"),
    ("adam_update", [(2, 3), (2, 3), (2, 3), (2, 3), ()], {"lr": 0.1},
     "adam_update: step must be an integer scalar, got f32"),
]


@pytest.mark.parametrize("op,shapes,attrs,message", INVALID, ids=[row[3] for row in INVALID])
def test_invalid_combinations_name_the_op(op: str, shapes: list[tuple[int, ...]], attrs: dict[str, Any],
                                          message: str) -> None:
    with pytest.raises(IRError) as info:
        infer_types(op, [f32(shape) for shape in shapes], attrs)
    assert str(info.value) == message


def test_integer_input_is_rejected() -> None:
    with pytest.raises(IRError, match="^conv2d: input must be a float tensor, got 1x3x5x5xi32$"):
        infer_types("conv2d", [TensorType((1, 3, 5, 5), DType.I32), f32((4, 3, 3, 3))], {})
    with pytest.raises(IRError, match="^maxpool2d: input must be a float tensor"):
        infer_types("maxpool2d", [TensorType((1, 3, 5, 5), DType.I64)], {"kernel": (2, 2)})

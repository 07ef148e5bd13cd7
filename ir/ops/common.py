"""Helpers shared by the op families."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyodl.ir.registry import AttrSpec, IRError
from tinyodl.ir.types import DType, TensorType

WINDOW_ATTRS = {
    "kernel": AttrSpec("ints"),
    "strides": AttrSpec("ints", (1, 1)),
    "pads": AttrSpec("ints", (0, 0, 0, 0)),  # top, left, bottom, right (ONNX order)
}


def expect_rank(op: str, what: str, t: TensorType, rank: int) -> None:
    if len(t.shape) != rank:
        raise IRError(f"{op}: {what} must be {rank}-D, got {t}")


def expect_float(op: str, what: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise IRError(f"{op}: {what} must be a float tensor, got {t}")


def expect_same(op: str, a: TensorType, b: TensorType, what: str = "operands") -> None:
    if a.shape != b.shape or a.dtype != b.dtype:
        raise IRError(f"{op}: {what} must have the same type, got {a} and {b}")


def window_out(op: str, size: int, kernel: int, stride: int, pad_begin: int, pad_end: int) -> int:
    if kernel < 1 or stride < 1 or pad_begin < 0 or pad_end < 0:
        raise IRError(f"{op}: kernel/stride must be >= 1 and pads >= 0")
    span = size + pad_begin + pad_end - kernel
    if span < 0:
        raise IRError(f"{op}: window {kernel} larger than padded input {size + pad_begin + pad_end}")
    return span // stride + 1


def check_window_attrs(op: str, attrs: dict | object) -> tuple[tuple[int, int], tuple[int, int], tuple[int, ...]]:
    assert isinstance(attrs, dict) or hasattr(attrs, "__getitem__")
    strides = tuple(attrs["strides"])  # type: ignore[index]
    pads = tuple(attrs["pads"])  # type: ignore[index]
    if len(strides) != 2 or len(pads) != 4:
        raise IRError(f"{op}: strides needs 2 values and pads 4, got {list(strides)} and {list(pads)}")
    return (strides[0], strides[1]), (pads[0], pads[1]), pads


def broadcast_shape(op: str, a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(tuple(a), tuple(b)))
    except ValueError:
        raise IRError(f"{op}: shapes {list(a)} and {list(b)} do not broadcast") from None


def windows(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
            fill: float = 0.0) -> np.ndarray:
    """Padded sliding windows of an NCHW array: [N, C, OH, OW, KH, KW] (a view)."""
    top, left, bottom, right = pads
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    view = np.lib.stride_tricks.sliding_window_view(padded, tuple(kernel), axis=(2, 3))
    return view[:, :, :: strides[0], :: strides[1]]


def f(t: TensorType, shape: Sequence[int]) -> TensorType:
    """A float tensor type of `t`'s dtype and layout with a new shape."""
    return TensorType(tuple(int(d) for d in shape), t.dtype, t.layout)


def scalar_like(t: TensorType) -> TensorType:
    return TensorType((), t.dtype)


def int_dtype(t: TensorType) -> bool:
    return t.dtype in (DType.I32, DType.I64)

"""Rounding to the reduced float dtypes, as the target's conversions do it.

Values are held in float64 on the host. A value of dtype fp16 or bf16 is rounded through float32 (the
target computes in float32 and converts its result: fcvt.h.s for fp16, a 16-bit shift with round to
nearest even for bf16), so the host and the target round the same float32 number.
"""

from __future__ import annotations

import numpy as np

from tinyodl.ir.types import DType


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """The bfloat16 bit patterns (uint16) of float32 values: round to nearest, ties to even; infinities stay,
    overflow gives infinity, a NaN stays a (quiet) NaN with its sign."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    # A NaN whose payload sits in the low half would round to infinity (or carry into the sign): keep the
    # sign and exponent and set the quiet bit instead.
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    quiet = (bits >> np.uint32(16)) | np.uint32(0x0040)
    return np.where(nan, quiet, rounded).astype(np.uint16)


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_to(values: np.ndarray, dtype: DType) -> np.ndarray:
    """float64 values rounded to `dtype` (fp16, bf16) and held in float64; other dtypes unchanged."""
    if dtype is DType.F16:
        with np.errstate(over="ignore"):
            return np.asarray(values, np.float64).astype(np.float32).astype(np.float16).astype(np.float64)
    if dtype is DType.BF16:
        with np.errstate(over="ignore"):
            single = np.asarray(values, np.float64).astype(np.float32)
        return bf16_to_float32(bf16_bits(single)).astype(np.float64).reshape(np.shape(values))
    return np.asarray(values)

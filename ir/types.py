"""Scalar types, layouts, value roles and op phases of the training IR."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class DType(enum.Enum):
    F32 = "f32"
    F16 = "f16"    # IEEE binary16
    BF16 = "bf16"  # bfloat16 (PULP's float16alt): float32's exponent, 7 mantissa bits
    I32 = "i32"
    I64 = "i64"

    @property
    def numpy(self) -> np.dtype:
        """The host array type that holds the dtype's values exactly (numpy has no bfloat16: float32)."""
        return np.dtype({"f32": np.float32, "f16": np.float16, "bf16": np.float32, "i32": np.int32,
                         "i64": np.int64}[self.value])

    @property
    def itemsize(self) -> int:
        """Bytes per element on the target."""
        return 2 if self in (DType.F16, DType.BF16) else self.numpy.itemsize

    @property
    def is_float(self) -> bool:
        return self in FLOAT_DTYPES

    @classmethod
    def parse(cls, text: str) -> DType:
        """A float dtype from its IR name (f32, f16, bf16) or its option name (fp32, fp16, bf16)."""
        aliases = {"fp32": "f32", "fp16": "f16"}
        dtype = cls(aliases.get(text, text))
        if not dtype.is_float:
            raise ValueError(f"{text!r} is not a float dtype")
        return dtype


FLOAT_DTYPES = frozenset({DType.F32, DType.F16, DType.BF16})


class Layout(enum.Enum):
    """Memory order of a 4-D activation; ANY for tensors where it does not apply."""

    ANY = "any"
    CHW = "chw"
    HWC = "hwc"


class Role(enum.Enum):
    INPUT = "input"
    PARAM = "param"
    CONST = "const"
    STATE = "state"
    ACT = "act"
    GRAD = "grad"
    LOSS = "loss"
    L1 = "l1"  # a tile in the L1 scratchpad (inside a tile loop's body)


class Phase(enum.Enum):
    FORWARD = "forward"
    LOSS = "loss"
    BACKWARD = "backward"
    UPDATE = "update"


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: DType = DType.F32
    layout: Layout = Layout.ANY

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def with_shape(self, shape: tuple[int, ...]) -> TensorType:
        return TensorType(tuple(shape), self.dtype, self.layout)

    def __str__(self) -> str:
        dims = "".join(f"{d}x" for d in self.shape)
        text = f"{dims}{self.dtype.value}"
        if self.layout is not Layout.ANY:
            text += f",{self.layout.value}"
        return text

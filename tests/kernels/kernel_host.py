"""Builds the kernel library for the host (pthreads stand-in runtime) and calls it through ctypes.

Every array handed to a kernel lives inside a larger buffer with guard zones on both sides: input
guards hold NaN (a read outside the tensor that reaches a result turns it into NaN), output guards
hold a sentinel that must survive (a write outside the tensor is caught), and outputs start as NaN
(an element the kernel forgets to write is caught).
"""
from __future__ import annotations

import ctypes
import pathlib
import subprocess

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
KERNELS = ROOT / "backend_c" / "kernels"
HOST_RT = pathlib.Path(__file__).resolve().parent / "host_rt"
GUARD = 64
SENTINEL = np.float32(7777.0)
CORE_COUNTS = (1, 3, 7, 8)


class ConvParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in (
        "N", "C", "H", "W", "K", "KH", "KW", "OH", "OW", "stride_h", "stride_w",
        "pad_top", "pad_left", "pad_bottom", "pad_right", "groups")]


class PoolParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in (
        "N", "C", "H", "W", "OH", "OW", "KH", "KW", "stride_h", "stride_w",
        "pad_top", "pad_left", "pad_bottom", "pad_right", "count_include_pad")]


class GemmParams(ctypes.Structure):
    _fields_ = [("M", ctypes.c_int), ("N", ctypes.c_int), ("K", ctypes.c_int),
                ("trans_a", ctypes.c_int), ("trans_b", ctypes.c_int),
                ("alpha", ctypes.c_float), ("beta", ctypes.c_float), ("bias_kind", ctypes.c_int),
                ("lda", ctypes.c_int), ("ldb", ctypes.c_int), ("ldy", ctypes.c_int)]


class Arg(ctypes.Union):
    _fields_ = [("p", ctypes.c_void_p), ("i", ctypes.c_longlong), ("f", ctypes.c_double)]


def build(out_dir: pathlib.Path) -> pathlib.Path:
    lib = out_dir / "libtinyodl_kernels_host.so"
    sources = [HOST_RT / "host_team.c", *sorted(KERNELS.glob("*.c"))]
    cmd = ["gcc", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
           f"-I{HOST_RT}", f"-I{KERNELS}", *map(str, sources), "-o", str(lib), "-lm", "-lpthread"]
    subprocess.run(cmd, check=True)
    return lib


class Guarded:
    """A float32 (or int32) array inside a guarded buffer."""

    def __init__(self, values: np.ndarray, output: bool):
        values = np.asarray(values)
        dtype = np.int32 if values.dtype.kind in "iu" else np.float32
        self.output = output
        self.shape = values.shape
        fill = SENTINEL if output else np.nan
        self.full = np.full(values.size + 2 * GUARD, fill if dtype == np.float32 else -1, dtype=dtype)
        self.view = self.full[GUARD:GUARD + values.size]
        self.view[:] = np.nan if output and dtype == np.float32 else values.reshape(-1)

    @property
    def pointer(self) -> int:
        return self.view.ctypes.data

    def result(self) -> np.ndarray:
        if self.output:
            guards = np.concatenate([self.full[:GUARD], self.full[GUARD + self.view.size:]])
            assert np.all(guards == SENTINEL), "kernel wrote outside its output"
        return self.view.reshape(self.shape).copy()


class KernelLib:
    def __init__(self, path: pathlib.Path):
        self.lib = ctypes.CDLL(str(path))
        self.lib.team_run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(Arg)]
        self.lib.team_run.restype = ctypes.c_int

    def run(self, name: str, cores: int, *args) -> None:
        packed = (Arg * max(len(args), 1))()
        for slot, value in zip(packed, args, strict=False):
            if value is None:
                slot.p = None
            elif isinstance(value, Guarded):
                slot.p = value.pointer
            elif isinstance(value, ctypes.Structure):
                slot.p = ctypes.addressof(value)
            elif isinstance(value, np.ndarray):
                slot.p = value.ctypes.data
            elif isinstance(value, (bool, int, np.integer)):
                slot.i = int(value)
            else:
                slot.f = float(value)
        assert self.lib.team_run(name.encode(), cores, packed) == 0, f"unknown kernel {name}"

    def call(self, name: str, cores: int, inputs: list, outputs: list[np.ndarray | None],
             arg_order: list) -> list[np.ndarray]:
        """Runs `name` with arguments `arg_order`, where ('in', k) / ('out', k) stand for the k-th
        input / output array and anything else is passed as is. Returns the outputs."""
        ins = [None if a is None else Guarded(a, output=False) for a in inputs]
        outs = [None if o is None else Guarded(np.zeros(o.shape, o.dtype), output=True) for o in outputs]
        args = []
        for item in arg_order:
            if isinstance(item, tuple) and len(item) == 2 and item[0] in ("in", "out"):
                args.append((ins if item[0] == "in" else outs)[item[1]])
            else:
                args.append(item)
        self.run(name, cores, *args)
        return [None if o is None else o.result() for o in outs]

    def call_inplace(self, name: str, cores: int, arrays: list[np.ndarray], arg_order: list) -> list[np.ndarray]:
        """Runs `name` on arrays it updates in place (optimizers); returns their new values."""
        bufs = [None if a is None else Guarded(a, output=False) for a in arrays]
        args = [bufs[item[1]] if isinstance(item, tuple) and item[0] == "io" else item for item in arg_order]
        self.run(name, cores, *args)
        return [None if b is None else b.view.reshape(b.shape).copy() for b in bufs]

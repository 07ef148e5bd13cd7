"""L1 tile plans: how one kernel's work splits into tiles that fit the L1 scratchpad.

A plan has axes (batch, channel blocks, bands of rows, flat chunks, ...), each cut into tiles. Each
axis has a table of entries, one per tile along it, whose columns give the ranges the tile covers (for
example a band of output rows and the input rows it reads, with the zero padding that the band really
has). A tile is one entry of every axis; the axes marked `reduction` are swept innermost and their
partial results are summed in L1. Every operand is a 4-D view of its L2 tensor; its box in a tile is,
per dimension, either the whole extent or an entry's (start, size) columns. Outputs have a compute box
(what the kernel writes in L1) and a store box inside it (what goes back to L2): a band of input rows
of a convolution's input gradient is computed with its halo and stored without it.

The tables are computed here once, exactly; the C backend emits them as data and the runtime's tile
loop composes a tile's boxes from them, so the numbers the hypothesis tests check are the ones the
program runs. `run_tiled` executes a plan with the numpy references, tile by tile.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyodl.ir.types import TensorType

IN, OUT, INOUT = "in", "out", "inout"


@dataclass(frozen=True)
class Axis:
    name: str
    extent: int
    tile: int
    reduction: bool
    columns: tuple[str, ...]
    entries: tuple[tuple[int, ...], ...]

    def col(self, name: str) -> int:
        return self.columns.index(name)


@dataclass(frozen=True)
class Slice:
    """One box dimension taken from an axis entry: columns `start` and `size` of axis `axis`."""

    axis: int
    start: str
    size: str


Box = tuple["Slice | None", ...]  # None: the whole extent of that view dimension


@dataclass(frozen=True)
class OperandTiling:
    name: str                  # the kernel's name for it ("x", "w", "y", ...)
    mode: str                  # in | out | inout
    index: int                 # position in the op's inputs (in/inout) or outputs (out)
    view: tuple[int, ...]      # 4-D view of the L2 tensor
    box: Box                   # compute box (loaded for in/inout, written by the kernel for out)
    store: Box | None = None   # out: the part of the compute box stored to L2 (None: all of it)
    shape: tuple[int, ...] = ()  # the tensor's own shape, where the view differs from it
    # Bytes per element: the tensor's dtype (fp16 and bf16 take 2); the C program holds integers (labels, the
    # step counter) in 32-bit words.
    itemsize: int = 4

    def axes(self) -> set[int]:
        return {s.axis for s in self.box if s is not None}


@dataclass(frozen=True)
class TilePlan:
    kernel: str
    family: str
    attrs: Mapping[str, Any]
    axes: tuple[Axis, ...]
    operands: tuple[OperandTiling, ...]

    @property
    def tiles(self) -> int:
        return math.prod(len(a.entries) for a in self.axes) if self.axes else 1

    def tile_sizes(self) -> tuple[int, ...]:
        return tuple(a.tile for a in self.axes)

    def box_shape(self, operand: OperandTiling, entries: Sequence[tuple[int, ...]], box: Box | None = None
                  ) -> tuple[int, ...]:
        box = operand.box if box is None else box
        return tuple(dim if s is None else entries[s.axis][self.axes[s.axis].col(s.size)]
                     for dim, s in zip(operand.view, box, strict=True))

    def box_start(self, operand: OperandTiling, entries: Sequence[tuple[int, ...]], box: Box | None = None
                  ) -> tuple[int, ...]:
        box = operand.box if box is None else box
        return tuple(0 if s is None else entries[s.axis][self.axes[s.axis].col(s.start)] for s in box)

    def max_box(self, operand: OperandTiling, box: Box | None = None) -> tuple[int, ...]:
        """The largest extent of each box dimension over all tiles (the L1 buffer's shape)."""
        box = operand.box if box is None else box
        return tuple(dim if s is None else max(e[self.axes[s.axis].col(s.size)] for e in self.axes[s.axis].entries)
                     for dim, s in zip(operand.view, box, strict=True))

    def buffer_bytes(self, operand: OperandTiling) -> int:
        return math.prod(self.max_box(operand)) * operand.itemsize

    def reduces(self) -> bool:
        return any(a.reduction and len(a.entries) > 1 for a in self.axes)

    def slots(self, operand: OperandTiling) -> int:
        """L1 copies of an operand: two (double buffering) when its box changes during the loop."""
        changing = any(len(self.axes[a].entries) > 1 for a in operand.axes())
        return 2 if changing else 1

    def l1_layout(self) -> list[tuple[OperandTiling, list[int], int]]:
        """(operand, slot offsets, scratch offset or -1) with 16-byte aligned buffers, in operand order."""
        layout, offset = [], 0
        for operand in self.operands:
            size = _align(self.buffer_bytes(operand))
            slots = []
            for _ in range(self.slots(operand)):
                slots.append(offset)
                offset += size
            scratch = -1
            if operand.mode == OUT and self.reduces():
                scratch, offset = offset, offset + size
            layout.append((operand, slots, scratch))
        return layout

    @functools.cached_property
    def _l1_total(self) -> int:
        total = 0
        for operand, slots, scratch in self.l1_layout():
            total = max(total, max(slots) + _align(self.buffer_bytes(operand)))
            if scratch >= 0:
                total = max(total, scratch + _align(self.buffer_bytes(operand)))
        return total

    def l1_bytes(self) -> int:
        return self._l1_total

    def iterate(self) -> Iterator[tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]]:
        """Tiles in execution order: (entry index per axis, entry per axis); last axis fastest."""
        for index in np.ndindex(*(len(a.entries) for a in self.axes)):
            yield tuple(int(i) for i in index), tuple(a.entries[i] for a, i in zip(self.axes, index, strict=True))

    def dma_bytes(self) -> tuple[int, int]:
        """(bytes loaded, bytes stored) over the whole loop, skipping reloads of unchanged boxes."""
        loaded = stored = 0
        previous: dict[int, tuple[int, ...]] = {}
        for index, entries in self.iterate():
            for position, operand in enumerate(self.operands):
                key = tuple(index[a] for a in sorted(operand.axes()))
                if operand.mode in (IN, INOUT) and previous.get(position) != key:
                    loaded += math.prod(self.box_shape(operand, entries)) * operand.itemsize
                previous[position] = key
                if operand.mode in (OUT, INOUT) and self.last_of_reduction(index):
                    box = operand.store if operand.store is not None else operand.box
                    stored += math.prod(self.box_shape(operand, entries, box)) * operand.itemsize
        return loaded, stored

    def last_of_reduction(self, index: Sequence[int]) -> bool:
        return all(i == len(a.entries) - 1 for a, i in zip(self.axes, index, strict=True) if a.reduction)

    def first_of_reduction(self, index: Sequence[int]) -> bool:
        return all(i == 0 for a, i in zip(self.axes, index, strict=True) if a.reduction)


def _align(nbytes: int) -> int:
    return (nbytes + 15) // 16 * 16


class TilingError(Exception):
    """No tiling of the kernel fits the budget; `min_l1_bytes` is what its smallest tile needs."""

    def __init__(self, message: str, min_l1_bytes: int) -> None:
        super().__init__(message)
        self.min_l1_bytes = min_l1_bytes


# -- axis tables ------------------------------------------------------------------------------------
def _blocks(extent: int, tile: int, step: int = 1) -> list[tuple[int, int]]:
    """[start, size) blocks of `tile` covering [0, extent); starts are multiples of `step`."""
    tile = max(step, tile // step * step)
    return [(start, min(tile, extent - start)) for start in range(0, extent, tile)]


def _window_band(o0: int, ot: int, size: int, kernel: int, stride: int, pad: int) -> tuple[int, ...]:
    """Output rows [o0, o0+ot) of a window op: (o0, ot, i0, it, pad_top, pad_bottom) of the input band."""
    first = o0 * stride - pad
    last = (o0 + ot - 1) * stride - pad + kernel  # one past the last row read
    i0, i1 = max(0, first), min(size, last)
    return (o0, ot, i0, i1 - i0, i0 - first, last - i1)


def _bands(out_size: int, tile: int, size: int, kernel: int, stride: int, pad: int) -> list[tuple[int, ...]]:
    """Bands of output rows (see _window_band). A band whose windows read only padding (pads larger than
    the window) joins its neighbour, so that every band reads at least one row of the image."""
    blocks = _blocks(out_size, tile)
    merged: list[list[int]] = []
    for o0, on in blocks:
        band = _window_band(o0, on, size, kernel, stride, pad)
        if merged and (band[3] <= 0 or merged[-1][2] <= 0):
            merged[-1][1] += on
            merged[-1][2] = _window_band(merged[-1][0], merged[-1][1], size, kernel, stride, pad)[3]
        else:
            merged.append([o0, on, band[3]])
    return [_window_band(o0, on, size, kernel, stride, pad) for o0, on, _ in merged]


def _grad_band(h0: int, ht: int, size: int, out_size: int, kernel: int, stride: int, pad: int) -> tuple[int, ...]:
    """Input-gradient rows [h0, h0+ht) of a window op, computed on a band with its halo.

    Outputs oa..ob are every window that touches the rows, widened at the top to the window starting at
    or before h0 so the computed band starts at or before h0 (rows no window reads get zeros). Columns:
    (h0, ht, ca, ct, oa, ot, pad_top, pad_bottom) with the computed band [ca, ca+ct).
    """
    oa = min(out_size - 1, (h0 + pad) // stride)
    oa = max(0, min(oa, -(-(h0 + pad - kernel + 1) // stride)))
    ob = max(oa, min(out_size - 1, (h0 + ht - 1 + pad) // stride))
    first = oa * stride - pad
    last = ob * stride - pad + kernel
    ca = max(0, first)
    cb = max(h0 + ht, min(size, last))
    return (h0, ht, ca, cb - ca, oa, ob - oa + 1, ca - first, max(0, last - cb))


def _axis(name: str, extent: int, tile: int, columns: Sequence[str], entries: Sequence[tuple[int, ...]],
          reduction: bool = False) -> Axis:
    return Axis(name, extent, tile, reduction, tuple(columns), tuple(tuple(int(v) for v in e) for e in entries))


# -- families ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """A way to tile a set of kernels: which axes exist (with the step their tile sizes take) and how a
    plan is built from tile sizes."""

    name: str
    kernels: tuple[str, ...]
    axes: Callable[[str, Sequence[TensorType], Sequence[TensorType], Mapping[str, Any]],
                   list[tuple[str, int, int]]]  # (axis name, extent, step)
    build: Callable[[str, Sequence[TensorType], Sequence[TensorType], Mapping[str, Any], Mapping[str, int]],
                    tuple[list[Axis], list[OperandTiling]]]
    run: Callable[[TilePlan, Sequence[tuple[int, ...]], list[np.ndarray]], list[np.ndarray]]
    # whether the family takes this instance of one of its kernels (else it runs as one whole tile)
    accepts: Callable[[str, Sequence[TensorType], Sequence[TensorType], Mapping[str, Any]], bool]
    doc: str = ""


def _v4(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(shape)
    if len(shape) > 4:
        return (math.prod(shape[:-3]), *shape[-3:])
    return (1,) * (4 - len(shape)) + shape


def _e(plan: TilePlan, entries: Sequence[tuple[int, ...]], axis: str, column: str) -> int:
    for position, a in enumerate(plan.axes):
        if a.name == axis:
            return entries[position][a.col(column)]
    raise KeyError(axis)


def _has(plan: TilePlan, axis: str) -> bool:
    return any(a.name == axis for a in plan.axes)


from tinyodl.ir import tiling_rules as _rules  # noqa: E402  (the families need the classes above)

FAMILIES: dict[str, Family] = {family.name: family for family in _rules.FAMILIES}
_BY_KERNEL = {kernel: family for family in FAMILIES.values() for kernel in family.kernels}


def family_of(kernel: str, in_types: Sequence[TensorType], out_types: Sequence[TensorType],
              attrs: Mapping[str, Any]) -> Family:
    family = _BY_KERNEL.get(kernel)
    if family is not None and family.accepts(kernel, in_types, out_types, attrs):
        return family
    return FAMILIES["whole"]


def tiling_axes(kernel: str, in_types: Sequence[TensorType], out_types: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(name, extent, step) of each axis the kernel can be tiled along."""
    return family_of(kernel, in_types, out_types, attrs).axes(kernel, in_types, out_types, attrs)


def make_plan(kernel: str, in_types: Sequence[TensorType], out_types: Sequence[TensorType],
              attrs: Mapping[str, Any], tile_sizes: Mapping[str, int]) -> TilePlan:
    from tinyodl.ir.registry import lookup

    attrs = lookup(kernel).with_defaults(attrs)
    family = family_of(kernel, in_types, out_types, attrs)
    axes, operands = family.build(kernel, in_types, out_types, attrs, tile_sizes)
    sized = [dataclasses.replace(o, itemsize=element_bytes((out_types if o.mode == OUT else in_types)[o.index]))
             for o in operands]
    return TilePlan(kernel, family.name, dict(attrs), tuple(axes), tuple(sized))


def element_bytes(t: TensorType) -> int:
    return t.dtype.itemsize if t.dtype.is_float else 4


def run_tiled(plan: TilePlan, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Execute the plan tile by tile with the numpy references: the outputs (and in-place results)."""
    family = FAMILIES[plan.family]
    results: dict[int, np.ndarray] = {}
    inout = {op.index: np.array(inputs[op.index], dtype=np.float64, copy=True)
             for op in plan.operands if op.mode == INOUT}
    accumulators: dict[int, np.ndarray] = {}
    for position, operand in enumerate(plan.operands):
        if operand.mode == OUT:
            results[position] = np.full(operand.view, np.nan)
    for index, entries in plan.iterate():
        tile_inputs = []
        for operand in plan.operands:
            if operand.mode == OUT:
                continue
            source = inout[operand.index] if operand.mode == INOUT else np.asarray(inputs[operand.index])
            tile_inputs.append(_cut(source.reshape(operand.view), plan.box_start(operand, entries),
                                    plan.box_shape(operand, entries)))
        produced = family.run(plan, entries, tile_inputs)
        outputs = [op for op in plan.operands if op.mode in (OUT, INOUT)]
        for (position, operand), array in zip([(p, o) for p, o in enumerate(plan.operands) if o in outputs],
                                              produced, strict=True):
            array = np.asarray(array, np.float64).reshape(plan.box_shape(operand, entries))
            if operand.mode == OUT and not plan.first_of_reduction(index):
                array = accumulators[position] + array
            accumulators[position] = array
            if not plan.last_of_reduction(index):
                continue
            start = plan.box_start(operand, entries)
            store = operand.store if operand.store is not None else operand.box
            s_start, s_shape = plan.box_start(operand, entries, store), plan.box_shape(operand, entries, store)
            local = tuple(slice(a - b, a - b + n) for a, b, n in zip(s_start, start, s_shape, strict=True))
            target = results[position] if operand.mode == OUT else inout[operand.index].reshape(operand.view)
            region = tuple(slice(a, a + n) for a, n in zip(s_start, s_shape, strict=True))
            if operand.mode == OUT and not np.all(np.isnan(target[region])):
                raise AssertionError(f"{plan.kernel}: output {operand.name} stored twice at {region}")
            target[region] = array[local]
    out = []
    for position, operand in enumerate(plan.operands):
        if operand.mode == OUT:
            out.append(results[position])
        elif operand.mode == INOUT:
            out.append(inout[operand.index])
    return out


def _cut(array: np.ndarray, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    return array[tuple(slice(a, a + n) for a, n in zip(start, shape, strict=True))]

"""Tile loops and the ops of their bodies: DMA between L2 and L1, waits, and accumulation in L1.

A `tile_loop` op stands in the graph for the kernel it tiles: it reads and writes the same L2 values,
and the reference executor runs it as that kernel. Its attributes are the kernel's plus `tiled_op`, `tile`
(the tile size of each axis, in the kernel family's axis order), `tiles` and `l1_bytes`. Its body shows
one tile: `dma_in` of each operand's box into L1 (offsets of its double-buffer slots), `dma_wait`, the
kernel on the L1 tiles, `tile_accumulate` where a reduction is split over tiles, and `dma_out` of each
result's box. The body is derived from the attributes (`build_body`) and checked against them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyodl.ir.graph import Graph, Op, Value
from tinyodl.ir.registry import Attrs, AttrSpec, IRError, OpDef, evaluate, kernel_of, lookup, register
from tinyodl.ir.tiling import IN, INOUT, OUT, OperandTiling, TilePlan, make_plan, tiling_axes
from tinyodl.ir.types import Role, TensorType


def _never(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    raise IRError("tile_loop: types come from its kernel")  # infer_types delegates before reaching this


def _run_kernel(inputs: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    kernel, kernel_attrs = kernel_of("tile_loop", attrs)
    return evaluate(kernel, inputs, kernel_attrs)


def _body_only(name: str):  # type: ignore[no-untyped-def]
    def reference(inputs: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
        raise IRError(f"{name} exists only inside a tile loop's body")
    return reference


def _infer_dma_in(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    shape = tuple(attrs["shape"])
    if len(shape) != len(types[0].shape) or any(t > d for t, d in zip(shape, types[0].shape, strict=True)):
        raise IRError(f"dma_in: tile {list(shape)} does not fit in {types[0]}")
    return [TensorType(shape, types[0].dtype, types[0].layout)]


def _infer_none(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    return []


def _infer_same(types: Sequence[TensorType], attrs: Attrs) -> list[TensorType]:
    return [types[0]]


register(OpDef("tile_loop", _never, _run_kernel, 0, 64, {},
               doc="a kernel computed tile by tile in L1; attributes: the kernel's plus tiled_op, tile, tiles, "
                   "l1_bytes; body: one tile's DMA and compute"))
register(OpDef("dma_in", _infer_dma_in, _body_only("dma_in"), 1, 1,
               {"shape": AttrSpec("ints"), "box": AttrSpec("str"), "l1": AttrSpec("ints")},
               doc="copy a box of an L2 tensor into an L1 tile (offsets of its slots in `l1`)"))
register(OpDef("dma_wait", _infer_none, _body_only("dma_wait"), 1, 64, {},
               doc="wait until the transfers into these tiles are complete"))
register(OpDef("dma_out", _infer_none, _body_only("dma_out"), 1, 1,
               {"to": AttrSpec("int"), "box": AttrSpec("str"), "l1": AttrSpec("ints")},
               doc="copy the stored box of an L1 tile to result `to` (or in-place operand) in L2"))
register(OpDef("tile_accumulate", _infer_same, _body_only("tile_accumulate"), 1, 1, {"scratch": AttrSpec("int")},
               doc="add a partial tile (computed at L1 offset `scratch`) into the tile being reduced"))


def plan_of(op: Op) -> TilePlan:
    """The tile plan a tile loop's attributes describe."""
    kernel, attrs = kernel_of(op.type, op.attrs)
    in_types, out_types = [v.type for v in op.inputs], [v.type for v in op.outputs]
    if lookup(kernel).mutates:
        out_types = []
    axes = tiling_axes(kernel, in_types, out_types, lookup(kernel).with_defaults(attrs))
    sizes = tuple(op.attrs.get("tile", ()))  # type: ignore[arg-type]
    if len(sizes) != len(axes):
        raise IRError(f"tile_loop: {kernel} tiles along {len(axes)} axes "
                      f"({', '.join(a[0] for a in axes) or 'none'}), tile gives {len(sizes)} sizes")
    for (name, extent, step), size in zip(axes, sizes, strict=True):
        if not (isinstance(size, int) and 1 <= size <= extent and (size == extent or size % step == 0)):
            raise IRError(f"tile_loop: tile size {size} of axis {name} must be a multiple of {step} in "
                          f"[1, {extent}]")
    return make_plan(kernel, in_types, out_types, attrs, {a[0]: s for a, s in zip(axes, sizes, strict=True)})


def box_text(plan: TilePlan, operand: OperandTiling, store: bool = False) -> str:
    box = operand.store if store and operand.store is not None else operand.box
    parts = [":" if s is None else f"{plan.axes[s.axis].name}.{s.start}+{s.size}" for s in box]
    return f"[{', '.join(parts)}] of {'x'.join(str(d) for d in operand.view)}"


def build_body(graph: Graph, op: Op, plan: TilePlan) -> list[Op]:
    """One tile of the loop as ops on L1 tile values named after the L2 values they hold."""
    kernel, attrs = kernel_of(op.type, op.attrs)
    layout = {id(operand): (slots, scratch) for operand, slots, scratch in plan.l1_layout()}
    body: list[Op] = []
    tiles: dict[int, Value] = {}
    loaded: list[Value] = []
    for position, operand in enumerate(plan.operands):
        if operand.mode == OUT:
            continue
        source = op.inputs[operand.index]
        shape = _tile_shape(plan, operand, source)
        tile = graph.new_value(f"{source.name}.l1", TensorType(shape, source.dtype, source.layout), Role.L1)
        slots, _ = layout[id(operand)]
        body.append(Op("dma_in", [source], [tile], {"shape": shape, "box": box_text(plan, operand),
                                                    "l1": tuple(slots)}, op.phase, op.node))
        tile.producer = body[-1]
        tiles[position] = tile
        loaded.append(tile)
    if loaded:
        body.append(Op("dma_wait", list(loaded), [], {}, op.phase, op.node))
    results = []
    for operand in plan.operands:
        if operand.mode == OUT:
            result = op.outputs[operand.index]
            shape = _tile_shape(plan, operand, result)
            results.append(graph.new_value(f"{result.name}.l1", TensorType(shape, result.dtype, result.layout),
                                           Role.L1))
    compute = Op(kernel, [tiles[p] for p, o in enumerate(plan.operands) if o.mode != OUT], results, attrs,
                 op.phase, op.node)
    for value in results:
        value.producer = compute
    body.append(compute)
    out_tiles = iter(results)
    for position, operand in enumerate(plan.operands):
        if operand.mode == IN:
            continue
        slots, scratch = layout[id(operand)]
        tile = tiles[position] if operand.mode == INOUT else next(out_tiles)
        if operand.mode == OUT and scratch >= 0:
            total = graph.new_value(f"{tile.name}.sum", tile.type, Role.L1)
            body.append(Op("tile_accumulate", [tile], [total], {"scratch": scratch}, op.phase, op.node))
            total.producer = body[-1]
            tile = total
        body.append(Op("dma_out", [tile], [], {"to": operand.index, "box": box_text(plan, operand, store=True),
                                               "l1": tuple(slots)}, op.phase, op.node))
    return body


def _tile_shape(plan: TilePlan, operand: OperandTiling, value: Value) -> tuple[int, ...]:
    """The largest tile in the value's own rank (views only prepend unit dimensions or merge leading ones)."""
    shape = plan.max_box(operand)
    if len(value.shape) >= 4:
        return (*value.shape[:-3], *shape[1:]) if len(value.shape) > 4 else shape
    return shape[4 - len(value.shape):]


def check_body(op: Op, defined: set[Value]) -> None:
    kernel, _ = kernel_of(op.type, op.attrs)
    plan = plan_of(op)
    if op.attrs.get("tiles") != plan.tiles:
        raise IRError(f"tile_loop: tiles = {op.attrs.get('tiles')}, the tile sizes give {plan.tiles}")
    if op.attrs.get("l1_bytes") != plan.l1_bytes():
        raise IRError(f"tile_loop: l1_bytes = {op.attrs.get('l1_bytes')}, the plan needs {plan.l1_bytes()}")
    visible = set(defined) | set(op.inputs)
    for inner in op.body:
        if inner.type not in ("dma_in", "dma_wait", "dma_out", "tile_accumulate", kernel):
            raise IRError(f"tile_loop body: {inner.type} is neither a DMA op nor the kernel {kernel}")
        for value in inner.inputs:
            if value not in visible:
                raise IRError(f"tile_loop body: {inner.type} uses %{value.name} before it is defined")
        visible.update(inner.outputs)
        if inner.type == "dma_out" and not 0 <= int(inner.attrs["to"]) < max(len(op.outputs), len(op.inputs)):
            raise IRError(f"tile_loop body: dma_out to {inner.attrs['to']} names no result")
    expected_in = sum(1 for o in plan.operands if o.mode != OUT)
    if sum(1 for inner in op.body if inner.type == "dma_in") != expected_in:
        raise IRError(f"tile_loop body: {kernel} loads {expected_in} operands, the body has another number "
                      "of dma_in")
    expected_out = sum(1 for o in plan.operands if o.mode != IN)
    if sum(1 for inner in op.body if inner.type == "dma_out") != expected_out:
        raise IRError(f"tile_loop body: {kernel} stores {expected_out} tiles, the body has another number "
                      "of dma_out")


__all__ = ["IN", "INOUT", "OUT", "build_body", "check_body", "plan_of", "box_text"]

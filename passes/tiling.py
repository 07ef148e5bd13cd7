"""tiling: every kernel computes on L1 tiles, moved by DMA and double-buffered.

Each kernel op becomes a `tile_loop` wrapping it, with tile sizes per axis chosen so that all its L1
buffers (two slots for every operand whose box changes, a scratch tile for split reductions) fit
`l1_bytes`, at the lowest estimated cycle count (`estimate_cycles`). Reshapes (views) and the step
counter's increment are not kernels and stay as they are. A kernel whose smallest tile does not fit is
an error naming the layer, its phase and the L1 it needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tinyodl.ir.graph import Graph, Op
from tinyodl.ir.ops.tiling import build_body
from tinyodl.ir.registry import kernel_of, lookup, op_macs
from tinyodl.ir.tiling import IN, OUT, TilePlan, make_plan, tiling_axes
from tinyodl.passes.manager import Pass, PassError, register_pass

# The finite check of loss scaling reduces a whole gradient to one flag and reads it from L2 as it goes.
UNTILED = ("reshape", "step_increment", "tile_loop", "amp_unscale", "amp_update_scale")

# The cost model, calibrated on the simulator's instruction counts of the kernels (tinyodl bench):
MAC_PER_CYCLE_PER_CORE = 0.55   # a 3x3 convolution's inner loops on one core
ELEMENT_CYCLES = 4.0            # an element-wise kernel's cycles per element on one core
TILE_OVERHEAD_CYCLES = 2000     # per tile: three barriers, core 0 issuing and waiting for DMA, kernel set-up
WORK_PER_CORE_GRANULE = 16      # output elements below which a core of the team has nothing to do
CHANNEL_BLOCK = 4
MAX_TILES_PER_AXIS = 4096       # finer cuts only multiply the per-tile overhead (and the pass's own time)
WINDOW_FAMILIES = ("conv_fwd", "conv_grad_input", "conv_grad_weight", "pool", "pool_grad")
DMA_SETUP_CYCLES = 21           # per transfer, and bytes per cycle (the platform's figures, GVSoC pulp-open)
DMA_BYTES_PER_CYCLE = 8.0


class TileBudgetError(PassError):
    """The smallest tile of a kernel does not fit the L1 budget."""


@register_pass
@dataclass(frozen=True)
class Tiling(Pass):
    name = "tiling"
    l1_bytes: int = 128 * 1024
    cores: int = 8

    def requires(self, graph: Graph) -> None:
        if self.l1_bytes <= 0:
            raise PassError(f"tiling needs an L1 budget > 0, got {self.l1_bytes}")

    def run(self, graph: Graph) -> bool:
        changed = False
        for index, op in enumerate(list(graph.ops)):
            if op.type in UNTILED:
                continue
            plan = choose_plan(op, self.l1_bytes, self.cores)
            loop = Op("tile_loop", list(op.inputs), list(op.outputs),
                      {**op.attrs, "tiled_op": op.type, "tile": plan.tile_sizes(), "tiles": plan.tiles,
                       "l1_bytes": plan.l1_bytes()}, op.phase, op.node)
            for value in loop.outputs:
                value.producer = loop
            graph.ops[index] = loop
            loop.body = build_body(graph, loop, plan)
            changed = True
        return changed


def _types(op: Op) -> tuple[list, list]:  # type: ignore[type-arg]
    outs = [] if lookup(op.type).mutates else [v.type for v in op.outputs]
    return [v.type for v in op.inputs], outs


def choose_plan(op: Op, l1_bytes: int, cores: int) -> TilePlan:
    """The cheapest plan that fits: shrink the axis that costs least per byte saved until the plan fits,
    then grow any axis again while it still fits and gets cheaper."""
    # A greedy descent, not an exhaustive search: a few dozen plans per kernel keep the pass fast.
    ins, outs = _types(op)
    attrs = lookup(op.type).with_defaults(op.attrs)
    axes = tiling_axes(op.type, ins, outs, attrs)
    dense = lookup(op.type).name.startswith("conv2d") and int(attrs.get("group", 1)) == 1
    candidates = [_candidates(extent, step, CHANNEL_BLOCK if dense and name in ("k", "c") else 1)
                  for name, extent, step in axes]
    choice = [len(c) - 1 for c in candidates]  # start from whole extents

    plans: dict[tuple[int, ...], TilePlan] = {}
    costs: dict[int, float] = {}

    def plan_at(positions: Sequence[int]) -> TilePlan:
        key = tuple(positions)
        if key not in plans:
            plans[key] = make_plan(op.type, ins, outs, attrs,
                                   {a[0]: c[i] for a, c, i in zip(axes, candidates, positions, strict=True)})
        return plans[key]

    def cost(candidate: TilePlan) -> float:
        if id(candidate) not in costs:
            costs[id(candidate)] = estimate_cycles(candidate, macs, cores)
        return costs[id(candidate)]

    plan = plan_at(choice)
    macs = op_macs(op)
    while plan.l1_bytes() > l1_bytes:
        best: tuple[float, list[int], TilePlan] | None = None
        for axis in range(len(axes)):
            for position in range(choice[axis]):  # cutting an axis in two may save nothing (two slots)
                trial = choice.copy()
                trial[axis] = position
                smaller = plan_at(trial)
                saved = plan.l1_bytes() - smaller.l1_bytes()
                if saved <= 0:
                    continue
                score = (cost(smaller) - cost(plan)) / saved
                if best is None or score < best[0]:
                    best = (score, trial, smaller)
        if best is None:  # no single move saves bytes (a cut axis doubles its buffers): the smallest tiles
            smallest = [0] * len(axes)
            if plan_at(smallest).l1_bytes() > l1_bytes:
                kernel, _ = kernel_of(op.type, op.attrs)
                raise TileBudgetError(f"layer {op.node!r} ({op.phase.value}, {kernel}): its smallest L1 tile "
                                      f"needs {plan_at(smallest).l1_bytes()} bytes, the L1 budget is {l1_bytes} "
                                      "(raise --l1)")
            choice, plan = smallest, plan_at(smallest)
            break
        _, choice, plan = best
    improved = True
    while improved:  # best-improvement local search over one step up or down of any axis
        improved = False
        best_neighbour = (cost(plan), choice, plan)
        for axis in range(len(axes)):
            for step in (-1, 1):
                if not 0 <= choice[axis] + step < len(candidates[axis]):
                    continue
                trial = choice.copy()
                trial[axis] += step
                neighbour = plan_at(trial)
                if neighbour.l1_bytes() <= l1_bytes and cost(neighbour) < best_neighbour[0]:
                    best_neighbour = (cost(neighbour), trial, neighbour)
        if best_neighbour[2] is not plan:
            _, choice, plan = best_neighbour
            improved = True
    return plan


def _candidates(extent: int, step: int, granule: int = 1) -> list[int]:
    """Tile sizes worth trying, ascending: ceil(extent / k) rounded up to the step for k = 1..8, then
    k growing by a quarter each time (a few dozen sizes even for long flat axes). Sizes of at least one
    granule (a dense kernel's block of 4 channels) are rounded up to whole granules; the sizes below one
    granule stay, for budgets that need them. No axis is cut into more than MAX_TILES_PER_AXIS tiles."""
    smallest = max(step, -(-extent // MAX_TILES_PER_AXIS // step) * step)
    sizes = {extent, *range(smallest, min(extent, max(smallest, granule * step)) + 1, step)}
    parts = 1
    while parts <= extent:
        size = -(-extent // parts)
        if size < smallest:
            break
        if size >= granule:
            size = -(-size // granule) * granule
        sizes.add(min(extent, -(-size // step) * step))
        parts = parts + 1 if parts < 8 else parts + max(1, parts // 4)
    return sorted(sizes)


def estimate_cycles(plan: TilePlan, macs: int, cores: int) -> float:
    """Compute (spread over the cores, with the imbalance of a tile's work items) + per-tile overhead + the
    DMA time compute does not hide (double buffering overlaps a tile's transfers with the previous tile's
    compute, so the first tile's loads are always exposed)."""
    tiles = plan.tiles
    out_boxes = [plan.max_box(o) for o in plan.operands if o.mode != IN]
    out_elements = sum(math.prod(box) for box in out_boxes)
    items = max((_work_items(plan, box) for box in out_boxes), default=1)
    balance = items / (math.ceil(items / cores) * cores)
    if plan.family in WINDOW_FAMILIES and int(plan.attrs.get("group", 1)) == 1:
        channels = max(box[1] for box in out_boxes)  # dense kernels compute 4 channels at a time: 6 cost 8
        balance *= channels / (math.ceil(channels / CHANNEL_BLOCK) * CHANNEL_BLOCK)
    work = macs / MAC_PER_CYCLE_PER_CORE if macs else out_elements * tiles * ELEMENT_CYCLES
    compute = work / (cores * balance)
    loaded, stored, transfers = dma_totals(plan)
    dma = transfers * DMA_SETUP_CYCLES + (loaded + stored) / DMA_BYTES_PER_CYCLE
    partials = out_elements * tiles * 2 / (cores * balance) if plan.reduces() else 0.0
    first_load = dma / tiles
    return compute + partials + tiles * TILE_OVERHEAD_CYCLES + max(0.0, dma - compute) + first_load


def _work_items(plan: TilePlan, box: tuple[int, ...]) -> int:
    """What a kernel splits over the cores: (image, 4-channel block, row) for window ops, elements else."""
    if plan.family in WINDOW_FAMILIES:
        return box[0] * math.ceil(box[1] / 4) * box[2]
    return max(1, math.prod(box) // WORK_PER_CORE_GRANULE)


def dma_totals(plan: TilePlan) -> tuple[int, int, int]:
    """(bytes loaded, bytes stored, box transfers) over the loop, in closed form: an operand is loaded
    again whenever an axis up to the innermost one its box depends on advances."""
    loaded = stored = transfers = 0
    for operand in plan.operands:
        depends = operand.axes()
        modes = []
        if operand.mode != OUT:
            modes.append((operand.box, True))
        if operand.mode != IN:
            modes.append((operand.store if operand.store is not None else operand.box, False))
        for box, is_load in modes:
            volume = 1.0
            for dim, s in zip(operand.view, box, strict=True):
                if s is None:
                    volume *= dim
            per_axis = []
            for position, axis in enumerate(plan.axes):
                if position in depends:
                    sums = sum(math.prod(entry[axis.col(s.size)] for s in box if s is not None and s.axis == position)
                               for entry in axis.entries)
                    per_axis.append(sums)
            repeats = 1
            moving = [p for p in depends if len(plan.axes[p].entries) > 1]
            last = max(moving) if moving else -1
            for position, axis in enumerate(plan.axes):
                if position in depends:
                    continue
                if is_load and position < last:
                    repeats *= len(axis.entries)
                if not is_load and not axis.reduction:
                    repeats *= len(axis.entries)
            count = repeats * math.prod(len(plan.axes[p].entries) for p in depends)
            nbytes = int(volume * math.prod(per_axis) * repeats) * operand.itemsize
            if is_load:
                loaded += nbytes
                transfers += count
            else:
                stored += nbytes
                transfers += count
    return loaded, stored, transfers

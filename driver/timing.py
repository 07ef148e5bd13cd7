"""DMA time per layer and how much of it the compute hides: the tile loops' transfers replayed against
the measured compute cycles.

For every tile loop the tile plan gives, tile by tile, the transfers the runtime issues (the same box
decomposition as runtime/c/tile.c) and each costs the platform's setup + bytes / bandwidth. The loop's
compute cycles (the busiest core's, from the plugin) are spread over its tiles in proportion to their
work. Then the runtime's schedule is replayed: the first tile's loads are waited for; tile t+1's loads
start when tile t starts computing and queue behind earlier transfers on the single DMA engine; results
go out after the last tile of their reduction; before computing into an output slot the cores wait for
the store that last read it; the loop ends when every transfer is done. Cycles the cores spend waiting
are exposed; the rest of the DMA time is hidden.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from tinyodl.ir.graph import Graph, Op
from tinyodl.ir.ops.tiling import plan_of
from tinyodl.ir.registry import kernel_of, op_macs
from tinyodl.ir.target import Target
from tinyodl.ir.tiling import IN, OUT, OperandTiling, TilePlan


@dataclass
class LoopTiming:
    kernel: str
    tiles: int
    tile_shape: dict[str, int]
    work: float                           # relative compute weight of the loop within its layer
    loads: list[float]                    # modelled DMA cycles of the transfers issued for each tile's inputs
    stores: list[float]                   # ... and of each tile's results (0 where nothing is stored)
    tile_work: list[float]                # each tile's share of the loop's compute
    first_of_output: list[bool]           # the tile starts a new output tile (waits for its slot's store)
    dma_bytes: int


@dataclass
class LayerTiming:
    loops: list[LoopTiming] = field(default_factory=list)

    @property
    def tiles(self) -> int:
        return sum(loop.tiles for loop in self.loops)

    @property
    def dma_bytes(self) -> int:
        return sum(loop.dma_bytes for loop in self.loops)

    def main_loop(self) -> LoopTiming | None:
        return max(self.loops, key=lambda loop: loop.work) if self.loops else None

    def dma_cycles(self, compute_cycles: float) -> tuple[float, float]:
        """(hidden, exposed) DMA cycles of one run of the layer whose compute takes `compute_cycles`."""
        total_work = sum(loop.work for loop in self.loops) or 1.0
        hidden = exposed = 0.0
        for loop in self.loops:
            h, e = replay(loop, compute_cycles * loop.work / total_work)
            hidden += h
            exposed += e
        return hidden, exposed


def layer_timings(graph: Graph, target: Target) -> dict[tuple[str, str], LayerTiming]:
    """The tile loops of every (node, phase) region."""
    layers: dict[tuple[str, str], LayerTiming] = {}
    for op in graph.ops:
        if op.type != "tile_loop":
            continue
        layers.setdefault((op.node, op.phase.value), LayerTiming()).loops.append(loop_timing(op, target))
    return layers


def loop_timing(op: Op, target: Target) -> LoopTiming:
    plan = plan_of(op)
    kernel = kernel_of(op.type, op.attrs)[0]
    loads, stores, work, starts = [], [], [], []
    previous: tuple[int, ...] | None = None
    for index, entries in plan.iterate():
        load = 0.0
        for operand in plan.operands:
            if operand.mode == OUT:
                continue
            moving = sorted(operand.axes())
            if previous is None or any(index[a] != previous[a] for a in moving):
                load += _box_cycles(plan, operand, entries, target, to_l1=True)
        store = 0.0
        if plan.last_of_reduction(index):
            for operand in plan.operands:
                if operand.mode != IN:
                    store += _box_cycles(plan, operand, entries, target, to_l1=False)
        loads.append(load)
        stores.append(store)
        work.append(float(math.prod(entry[1] if len(entry) > 1 else 1 for entry in entries)))
        starts.append(plan.first_of_reduction(index))
        previous = index
    total = sum(work) or 1.0
    loaded, stored = plan.dma_bytes()
    weight = float(op_macs(op)) or float(sum(math.prod(plan.operands[i].view) for i, o in
                                             enumerate(plan.operands) if o.mode != IN))
    return LoopTiming(kernel, plan.tiles, {a.name: a.tile for a in plan.axes}, weight, loads, stores,
                      [w / total for w in work], starts, loaded + stored)


def _box_cycles(plan: TilePlan, operand: OperandTiling, entries: Sequence[tuple[int, ...]], target: Target,
                *, to_l1: bool) -> float:
    """The transfers runtime/c/tile.c issues for one box: the dimensions whole on both sides merge into
    one run, the next one gives the rows of a 2-D transfer, outer ones repeat it."""
    tile = plan.box_shape(operand, entries)
    part = tile if to_l1 or operand.store is None else plan.box_shape(operand, entries, operand.store)
    dims = operand.view
    run_dim = 3
    while run_dim > 0 and part[run_dim] == dims[run_dim] and part[run_dim] == tile[run_dim]:
        run_dim -= 1
    transfers = math.prod(part[:max(0, run_dim - 1)]) if run_dim > 0 else 1
    nbytes = math.prod(part) * operand.itemsize
    per_transfer = nbytes // transfers
    return float(transfers * target.dma_cycles(per_transfer, to_l1=to_l1))


def replay(loop: LoopTiming, compute_cycles: float) -> tuple[float, float]:
    """(hidden, exposed) DMA cycles of one loop run (see the module's description)."""
    tiles = loop.tiles
    dma_free = loop.loads[0]            # the first tile's loads, issued before the loop starts
    load_done = [0.0] * (tiles + 1)
    load_done[0] = dma_free
    store_done = [0.0] * tiles
    core = 0.0
    waited = 0.0
    outputs = 0
    output_store: list[float] = [0.0, 0.0]  # per output slot: when its last store completes
    for t in range(tiles):
        ready = load_done[t]
        if loop.first_of_output[t]:
            ready = max(ready, output_store[outputs % 2])
        begin = max(core, ready)
        waited += begin - core
        if t + 1 < tiles:
            dma_free = max(dma_free, begin) + loop.loads[t + 1]
            load_done[t + 1] = dma_free
        core = begin + compute_cycles * loop.tile_work[t]
        if loop.stores[t]:
            dma_free = max(dma_free, core) + loop.stores[t]
            store_done[t] = dma_free
            output_store[outputs % 2] = dma_free
            outputs += 1
    end = max(core, dma_free)
    waited += end - core
    total = sum(loop.loads) + sum(loop.stores)
    exposed = min(waited, total)
    return total - exposed, exposed


def add_dma_timing(report: dict, graph: Graph, target: Target) -> None:  # type: ignore[type-arg]
    """Per layer: tiles (per step), tile_shape, dma_bytes and dma_cycles_hidden/exposed (over the run, like
    the layer's other figures); totals: the cycles with the exposed DMA added and the DMA cycles, each for
    the run (`_run`) and per step (`_per_step`), and the cluster's MACs per cycle."""
    timings = layer_timings(graph, target)
    steps = max(1, int(report.get("steps_run") or 1))
    exposed_total = hidden_total = 0.0
    for layer in report["layers"]:
        timing = timings.get((layer["name"], layer["phase"]), LayerTiming())
        main = timing.main_loop()
        hidden, exposed = timing.dma_cycles(layer["cycles_est"] / steps)
        layer.update({"tiles": timing.tiles, "tile_shape": main.tile_shape if main else {},
                      "dma_bytes": timing.dma_bytes * steps, "dma_cycles_hidden": round(hidden * steps),
                      "dma_cycles_exposed": round(exposed * steps)})
        hidden_total += hidden * steps
        exposed_total += exposed * steps
    totals = report["totals"]
    compute = sum(layer["cycles_est"] for layer in report["layers"])
    run_cycles = compute + exposed_total
    totals.update({"cycles_critical_path_est": round(compute),
                   "cycles_run_est": round(run_cycles), "cycles_per_step_est": round(run_cycles / steps),
                   "dma_cycles_hidden_run": round(hidden_total), "dma_cycles_exposed_run": round(exposed_total),
                   "dma_cycles_hidden_per_step": round(hidden_total / steps),
                   "dma_cycles_exposed_per_step": round(exposed_total / steps),
                   "mac_per_cycle": totals["macs"] / run_cycles if run_cycles else 0.0})

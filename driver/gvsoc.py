"""What a GVSoC run adds to the report and to `bench`: cycles measured by the cores' own counters.

On QEMU every cycle figure is the plugin's model (`*_est` keys, with the DMA replayed by driver/timing.py);
on GVSoC the same layers carry measured figures under `*_measured` keys, and the model's keys are None,
so that a report of each target for the same model can be put side by side layer by layer (same layer
names and phases). Per layer the busiest core's cycles are the layer's time (the cores meet at a barrier
after every kernel, and a core waiting in the event unit's barrier is clock-gated: its counter stops);
the stall breakdown is that core's; DMA time is what the issuing core spent waiting for transfers.
"""

from __future__ import annotations

from typing import Any

from tinyodl.driver.report import RUN_AND_STEP_CYCLES, width
from tinyodl.driver.timing import LayerTiming, layer_timings
from tinyodl.ir.graph import Graph
from tinyodl.ir.target import Target
from tinyodl.runtime.host import RunResult

# the taken-branch penalty of pulp-open's RI5CY cores: a taken branch costs 3 cycles, 2 more than issue
# (TOOLCHAIN.md, measured on GVSoC; the CV32E40P user manual's pipeline chapter gives the same)
TAKEN_BRANCH_EXTRA_CYCLES = 2
STALLS = {  # report key -> PERF field (runtime/gvsoc.py)
    "icache_miss": "icache_miss_cycles", "load_use": "load_use_stall", "jump_register": "jump_register_stall",
}
ESTIMATE_KEYS = ("cycles_est", "cycles_critical_path_est", *RUN_AND_STEP_CYCLES, "mac_per_cycle")
NOTES = ("cycles_measured are GVSoC pulp-open's core counters (busiest core per layer; a core waiting in a "
         "barrier is clock-gated and not counted); stalls_measured is that core's breakdown in cycles "
         "(branch_taken = taken branches x 2 extra cycles; other = cycles - instructions - the counted stalls: "
         "L2 latency, TCDM conflicts, multi-cycle instructions, which pulp-open's counters do not separate); "
         "dma_wait_cycles_measured are the cycles the "
         "issuing core spent in rt_dma_wait; model estimates (*_est) exist only for --target qemu")


def _stalls(fields: dict[str, int]) -> dict[str, int]:
    """The counted stall cycles, and `other`: the cycles neither issuing an instruction nor counted (L2
    latency, TCDM bank conflicts, multi-cycle instructions, the event unit's wake-up; pulp-open does not
    feed the cores' counters for L2 and TCDM contention)."""
    stalls = {key: fields[name] for key, name in STALLS.items()}
    stalls["branch_taken"] = fields["branches_taken"] * TAKEN_BRANCH_EXTRA_CYCLES
    stalls["other"] = max(0, fields["cycles"] - fields["instructions"] - sum(stalls.values()))
    return stalls


def add_measured(report: dict[str, Any], result: RunResult, program: Any, graph: Graph, target: Target) -> None:
    """Per layer: cycles_measured (busiest core) and per core, stalls_measured, dma_wait_cycles_measured,
    mac_per_cycle_measured, and the tile plan's tiles, tile_shape and dma_bytes; totals: the step's measured
    critical path and MAC/cycle; the model's keys (and its replayed DMA) None."""
    cores = report["cores"]
    steps = max(1, int(report.get("steps_run") or 1))
    timings = layer_timings(graph, target)
    report["target"] = "gvsoc"
    report["cycle_model"] = None
    empty = dict.fromkeys(("cycles", "instructions", *STALLS.values(), "branches_taken", "dma_wait_cycles"), 0)
    totals_stalls: dict[str, int] = {}
    critical = dma_wait = 0
    for layer, region in zip(report["layers"], program.regions, strict=True):
        per_core = [result.measured.get(core, {}).get(region.id, empty) for core in range(cores)]
        cycles = [fields["cycles"] for fields in per_core]
        busiest = max(range(cores), key=lambda core: cycles[core])
        stalls = _stalls(per_core[busiest])
        waited = sum(fields["dma_wait_cycles"] for fields in per_core)
        timing = timings.get((layer["name"], layer["phase"]), LayerTiming())
        main = timing.main_loop()
        layer.update({"tiles": timing.tiles, "tile_shape": main.tile_shape if main else {},
                      "dma_bytes": timing.dma_bytes * steps, "dma_cycles_hidden": None, "dma_cycles_exposed": None})
        layer.update({"cycles_est": None, "cycles_measured": cycles[busiest], "cycles_measured_per_core": cycles,
                      "stalls_measured": stalls, "dma_wait_cycles_measured": waited,
                      "mac_per_cycle_measured": layer["macs"] / cycles[busiest] if cycles[busiest] else 0.0})
        critical += cycles[busiest]
        dma_wait += waited
        for key, value in stalls.items():
            totals_stalls[key] = totals_stalls.get(key, 0) + value
    totals = report["totals"]
    totals.update(dict.fromkeys(ESTIMATE_KEYS, None))
    totals.update({"cycles_measured_run": critical, "cycles_measured_per_step": round(critical / steps),
                   "stalls_measured": totals_stalls,
                   "dma_wait_cycles_measured": dma_wait,
                   "mac_per_cycle_measured": totals["macs"] / critical if critical else 0.0})
    memory = report["memory"]
    memory["dma_cycles_est"] = None
    memory["dma_wait_cycles_measured"] = dma_wait
    report["wall_seconds"] = round(result.wall_seconds, 3)
    report["notes"] = f"{report['notes']}; {NOTES}"


def _stall_columns(stalls: dict[str, int]) -> str:
    return " ".join(f"{stalls.get(key, 0):>9}" for key in ("icache_miss", "load_use", "branch_taken", "other"))


STALL_HEADER = f"{'icache':>9} {'load-use':>9} {'branch':>9} {'other':>9}"


def print_measured(report: dict[str, Any]) -> None:
    """The measured table: per layer the busiest core's cycles, its stall breakdown and the DMA wait."""
    steps = max(1, int(report.get("steps_run") or 1))
    total_label = "step (critical path)" if steps == 1 else f"run of {steps} steps (critical path)"
    name_w = width("layer", total_label, *(layer["name"] for layer in report["layers"]))
    head = (f"{'layer':<{name_w}} {'phase':<8} {'cycles (max core)':>17} {'IPC':>5} {STALL_HEADER} {'DMA wait':>9} "
            f"{'MAC/cycle':>9}")
    print("measured on GVSoC pulp-open (cycles, busiest core; stall cycles of that core):")
    print(head)
    print("-" * len(head))
    for layer in report["layers"]:
        cycles = layer["cycles_measured"]
        ipc = max(layer["instructions"]) / cycles if cycles else 0.0
        print(f"{layer['name']:<{name_w}} {layer['phase']:<8} {cycles:>17} {ipc:>5.2f} "
              f"{_stall_columns(layer['stalls_measured'])} {layer['dma_wait_cycles_measured']:>9} "
              f"{layer['mac_per_cycle_measured']:>9.3f}")
    totals = report["totals"]
    print("-" * len(head))
    critical = totals["cycles_measured_run"]
    print(f"{total_label:<{name_w}} {'':<8} {critical:>17} {'':>5} {_stall_columns(totals['stalls_measured'])} "
          f"{totals['dma_wait_cycles_measured']:>9} {totals['mac_per_cycle_measured']:>9.3f}")
    run = f" (run of {steps} steps: {critical} cycles)" if steps > 1 else ""
    print(f"per step on {report['cores']} cores: {totals['cycles_measured_per_step']} cycles measured{run}, "
          f"{totals['mac_per_cycle_measured']:.2f} "
          f"MAC/cycle for the cluster, DMA wait {totals['dma_wait_cycles_measured']} cycles; GVSoC ran "
          f"{report.get('wall_seconds', 0):.1f} s")


def compare_measured(main: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """`bench` on GVSoC: per layer the measured cycles on both core counts and the speed-up they give."""
    base_layers = {(layer["name"], layer["phase"]): layer for layer in base["layers"]}
    rows = []
    for layer in main["layers"]:
        other = base_layers[(layer["name"], layer["phase"])]
        rows.append({"name": layer["name"], "phase": layer["phase"], "macs": layer["macs"],
                     "cycles_measured_base": other["cycles_measured"], "cycles_measured": layer["cycles_measured"],
                     "speedup_measured": other["cycles_measured"] / layer["cycles_measured"]
                     if layer["cycles_measured"] else 0.0,
                     "mac_per_cycle_measured": layer["mac_per_cycle_measured"],
                     "stalls_measured": layer["stalls_measured"],
                     "dma_wait_cycles_measured": layer["dma_wait_cycles_measured"]})
    critical, critical_base = (main["totals"]["cycles_measured_per_step"],
                               base["totals"]["cycles_measured_per_step"])
    return {"layers": rows, "totals": {
        "cycles_measured": critical, "cycles_measured_base": critical_base,
        "speedup_measured": critical_base / critical if critical else 0.0,
        "mac_per_cycle_measured": main["totals"]["mac_per_cycle_measured"],
        "mac_per_cycle_measured_base": base["totals"]["mac_per_cycle_measured"],
        "stalls_measured": main["totals"]["stalls_measured"],
        "dma_wait_cycles_measured": main["totals"]["dma_wait_cycles_measured"],
        "wall_seconds": main.get("wall_seconds"), "wall_seconds_base": base.get("wall_seconds")}}


def print_measured_comparison(measured: dict[str, Any], cores: int, base: int) -> None:
    name_w = width("layer", "step (critical path)", *(row["name"] for row in measured["layers"]))
    head = (f"{'layer':<{name_w}} {'phase':<8} {'MACs':>10} {f'cyc@{base}':>11} {f'cyc@{cores}':>10} {'speed-up':>8} "
            f"{'MAC/cyc':>8} {STALL_HEADER} {'DMA wait':>9}")
    print(f"measured on GVSoC pulp-open (cycles of the busiest core; stalls on {cores} cores):")
    print(head)
    print("-" * len(head))
    for row in measured["layers"]:
        print(f"{row['name']:<{name_w}} {row['phase']:<8} {row['macs']:>10} {row['cycles_measured_base']:>11} "
              f"{row['cycles_measured']:>10} {row['speedup_measured']:>8.2f} "
              f"{row['mac_per_cycle_measured']:>8.3f} "
              f"{_stall_columns(row['stalls_measured'])} {row['dma_wait_cycles_measured']:>9}")
    totals = measured["totals"]
    print("-" * len(head))
    print(f"{'step (critical path)':<{name_w}} {'':<8} {'':>10} {totals['cycles_measured_base']:>11} "
          f"{totals['cycles_measured']:>10} {totals['speedup_measured']:>8.2f} "
          f"{totals['mac_per_cycle_measured']:>8.3f} "
          f"{_stall_columns(totals['stalls_measured'])} {totals['dma_wait_cycles_measured']:>9}")
    print(f"step measured on GVSoC: {totals['cycles_measured']} cycles on {cores} cores "
          f"({totals['mac_per_cycle_measured']:.2f} MAC/cycle), {totals['cycles_measured_base']} on {base} "
          f"({totals['mac_per_cycle_measured_base']:.2f} MAC/cycle); GVSoC wall time {totals['wall_seconds']:.1f} s "
          f"and {totals['wall_seconds_base']:.1f} s")

"""`tinyodl bench`: one training step on N cores and on a baseline core count, per layer and phase.

Speed-up is measured on instruction counts, which the simulator gives exactly: for a layer, the busiest
core's instructions on the baseline over those on N cores; for the whole step, the sum over layers of the
busiest core's instructions (the cores meet at a barrier after every kernel), baseline over N cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from tinyodl.driver.data import load_batches
from tinyodl.driver.files import check_writable, save_report
from tinyodl.driver.gvsoc import compare_measured, print_measured_comparison
from tinyodl.driver.options import Options, UserError
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.driver.precision import check_c_backend
from tinyodl.driver.progress import Progress
from tinyodl.driver.qemu import SimulationFailed, run_on_qemu
from tinyodl.driver.report import RUN_AND_STEP_CYCLES, cycles_line, width


def _key(layer: dict[str, Any]) -> tuple[str, str]:
    return layer["name"], layer["phase"]


def compare_reports(main: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    base_layers = {_key(layer): layer for layer in base["layers"]}
    rows = []
    for layer in main["layers"]:
        other = base_layers[_key(layer)]
        busiest, busiest_base = max(layer["instructions"]), max(other["instructions"])
        rows.append({"name": layer["name"], "op": layer["op"], "phase": layer["phase"], "macs": layer["macs"],
                     "instructions_base": busiest_base, "instructions": busiest,
                     "speedup": busiest_base / busiest if busiest else 0.0,
                     "mac_per_instr": layer["mac_per_instr"],
                     **{key: layer.get(key) for key in ("tiles", "tile_shape", "dma_bytes", "dma_cycles_hidden",
                                                        "dma_cycles_exposed", "cycles_est")}})
    critical, critical_base = (main["totals"]["critical_path_instructions"],
                               base["totals"]["critical_path_instructions"])
    return {"model": main["model"], "cores": main["cores"], "baseline_cores": base["cores"],
            "steps_run": main["steps_run"], "layers": rows,
            "totals": {"macs": main["totals"]["macs"], "critical_path_instructions": critical,
                       "critical_path_instructions_base": critical_base,
                       "speedup": critical_base / critical if critical else 0.0,
                       "mac_per_instr": main["totals"]["mac_per_instr"],
                       "cycles_est": main["totals"]["cycles_est"],
                       "cycles_est_base": base["totals"]["cycles_est"],
                       **{key: main["totals"].get(key) for key in (*RUN_AND_STEP_CYCLES, "mac_per_cycle")}},
            "memory": main["memory"], "check_ok": main["check"]["ok"] and base["check"]["ok"]}


def _shape(shape: dict[str, int] | None) -> str:
    return ",".join(f"{axis}{size}" for axis, size in (shape or {}).items()) or "-"


def _or_dash(value: int | None) -> str:
    """A replayed DMA figure, or "-" where the target measures instead (GVSoC)."""
    return "-" if value is None else str(value)


def print_comparison(result: dict[str, Any]) -> None:
    cores, base = result["cores"], result["baseline_cores"]
    rows = result["layers"]
    total_label = "step (critical path)" if result.get("steps_run", 1) == 1 else "run (critical path)"
    name_w = width("layer", total_label, *(row["name"] for row in rows))
    op_w = width("op", *(row["op"] for row in rows))
    tile_w = width("tile", *(_shape(row.get("tile_shape")) for row in rows))
    head = (f"{'layer':<{name_w}} {'op':<{op_w}} {'phase':<8} {'MACs':>10} {f'instr@{base}':>11} "
            f"{f'instr@{cores}':>10} {'speed-up':>8} {'MAC/instr':>9} {'tiles':>5} {'tile':<{tile_w}} {'DMA B':>8} "
            f"{'hidden':>8} {'exposed':>8}")
    print(head)
    print("-" * len(head))
    for row in rows:
        print(f"{row['name']:<{name_w}} {row['op']:<{op_w}} {row['phase']:<8} {row['macs']:>10} "
              f"{row['instructions_base']:>11} {row['instructions']:>10} {row['speedup']:>8.2f} "
              f"{row['mac_per_instr']:>9.3f} {row.get('tiles') or 0:>5} {_shape(row.get('tile_shape')):<{tile_w}} "
              f"{row.get('dma_bytes') or 0:>8} {_or_dash(row.get('dma_cycles_hidden')):>8} "
              f"{_or_dash(row.get('dma_cycles_exposed')):>8}")
    totals = result["totals"]
    print("-" * len(head))
    print(f"{total_label:<{name_w}} {'':<{op_w}} {'':<8} {totals['macs']:>10} "
          f"{totals['critical_path_instructions_base']:>11} {totals['critical_path_instructions']:>10} "
          f"{totals['speedup']:>8.2f} {totals['mac_per_instr']:>9.3f}")
    memory = result["memory"]
    estimated = f"est. cycles: {totals['cycles_est_base']} on {base} core(s), {totals['cycles_est']} on {cores}; " \
        if totals["cycles_est"] is not None else ""
    print(f"{estimated}checks {'ok' if result['check_ok'] else 'FAILED'}")
    if totals.get("cycles_per_step_est"):
        print(f"on {cores} cores, {cycles_line(totals, result['steps_run'])}")
    if memory.get("l2_peak_bytes"):
        print(f"L2 plan: peak {memory['l2_peak_bytes']} B, naive {memory['l2_naive_bytes']} B, lower bound "
              f"{memory['l2_lower_bound_bytes']} B; L1 {memory['l1_bytes']} of {memory['l1_capacity']} B")


def cmd_bench(args: argparse.Namespace, options: Options) -> int:
    if not 1 <= args.baseline_cores <= 8:
        raise UserError(f"--baseline-cores must be between 1 and 8, got {args.baseline_cores}")
    if not args.timeout > 0:  # NaN fails this too
        raise UserError(f"--timeout must be > 0 seconds, got {args.timeout}")
    check_c_backend(options, "bench")
    check_writable(args.report)
    graph = build_training_graph(args.model, options)
    batches = load_batches(graph, args.data, args.steps)
    reports = {}
    main_cores = options.target().cores
    target = getattr(args, "target", "qemu")
    for cores in (main_cores, args.baseline_cores):
        print(f"[tinyodl] {args.model.name}: {args.steps} step(s) on {cores} core(s)", file=sys.stderr, flush=True)
        try:
            reports[cores] = run_on_qemu(graph, batches, replace(options, cores=cores), timeout=args.timeout,
                                         progress=Progress(), simulator=target).report
        except SimulationFailed as exc:
            print(f"tinyodl: {exc}", file=sys.stderr)
            return 1
    result = compare_reports(reports[main_cores], reports[args.baseline_cores])
    print_comparison(result)
    if target == "gvsoc":
        result["measured"] = compare_measured(reports[main_cores], reports[args.baseline_cores])
        print_measured_comparison(result["measured"], main_cores, args.baseline_cores)
    if args.report is not None:
        save_report(args.report, {"comparison": result, "reports": {str(k): v for k, v in reports.items()}})
    if args.json:
        print(json.dumps({**result["totals"], **({"measured": result["measured"]["totals"]}
                                                 if "measured" in result else {})}))
    return 0 if result["check_ok"] else 1

"""The report: one JSON-able dict per run (the same schema for every target) and its printed summary."""

from __future__ import annotations

from typing import Any

from tinyodl.driver.check import SimOutput
from tinyodl.driver.options import Options
from tinyodl.ir.graph import Graph
from tinyodl.ir.registry import kernel_of, op_macs
from tinyodl.ir.types import Phase, Role

# The modelled cycles that add the exposed DMA (driver/timing.py), for the whole run and per step.
RUN_AND_STEP_CYCLES = ("cycles_run_est", "cycles_per_step_est", "dma_cycles_hidden_run", "dma_cycles_exposed_run",
                       "dma_cycles_hidden_per_step", "dma_cycles_exposed_per_step")


def build_report(graph: Graph, options: Options, program: Any, result: Any, simulated: SimOutput,
                 check: dict[str, Any], memory: Any) -> dict[str, Any]:
    cores = options.target().cores
    steps = program.steps
    layers = []
    for region in program.regions:
        per_core = [result.per_hart_regions.get(h, {}).get(region.id) for h in range(cores)]
        insns = [c.insns if c else 0 for c in per_core]
        cycles = [c.cycles if c else 0 for c in per_core]
        macs = region.macs * steps
        busiest = max(insns) if insns else 0
        layers.append({"name": region.node, "op": "+".join(dict.fromkeys(region.ops)), "phase": region.phase,
                       "macs": macs, "instructions": insns, "cycles_est": max(cycles) if cycles else 0,
                       "mac_per_instr": macs / (cores * busiest) if busiest else 0.0,
                       "l1_accesses": sum(c.l1_accesses for c in per_core if c),
                       "l2_accesses": sum(c.l2_accesses for c in per_core if c)})
    per_core_total = [sum(layer["instructions"][h] for layer in layers) for h in range(cores)]
    per_core_cycles = [sum(c.cycles for rid, c in result.per_hart_regions.get(h, {}).items() if rid != 0)
                       for h in range(cores)]
    total_macs = sum(layer["macs"] for layer in layers)
    critical = sum(max(layer["instructions"]) for layer in layers if layer["instructions"])
    busiest_total = max(per_core_total) if per_core_total else 0
    return {
        "model": graph.name, "target": "qemu", "platform": options.target().describe(), "dtype": options.dtype,
        "cycle_model": dict(result.cycle_model),
        "cores": cores, "steps_run": steps,
        "steps": [{"loss": loss} for loss in simulated.losses],
        "check": check,
        "shared_params": shared_params(graph),
        "layers": layers,
        "totals": {"macs": total_macs, "instructions_max_core": busiest_total,
                   "instructions_per_core": per_core_total,
                   "critical_path_instructions": critical,
                   "mac_per_instr": total_macs / (cores * busiest_total) if busiest_total else 0.0,
                   "cycles_est": max(per_core_cycles) if per_core_cycles else 0},
        "memory": {"l1_bytes": memory.l1_used, "l1_capacity": memory.l1_bytes, "l2_bytes": memory.l2_used,
                   "l2_capacity": memory.l2_bytes, "dma_bytes": simulated.dma[0], "dma_transfers": simulated.dma[1],
                   "dma_cycles_est": simulated.dma[2], **memory_plan_fields(graph)},
        "notes": "instructions, MACs, cycles and DMA figures are summed over all steps, except those named "
                 "_per_step (the run's divided by steps_run) and tiles (one step's); instructions exclude start-up "
                 "and output (region 0); critical_path_instructions sums each layer's busiest core (cores meet at "
                 "a barrier after every kernel); cycles_est is the plugin's in-order model "
                 "(runtime/plugin/tinyodl_insn.c) with the platform's memory timing; l1_accesses/l2_accesses are "
                 "loads and stores summed over the compute cores (the per-core stacks count as L1)",
    }


def memory_plan_fields(graph: Graph) -> dict[str, Any]:
    """The L2 plan of the memory pass (when it ran): peak, naive sum, lower bound, the peak op, per tensor
    its offset, size, role and first/last op index, and the op index spans of the phases (what `--plot`
    draws; updates interleave with the backward ops that produce their gradients)."""
    plan = graph.memory_plan
    if plan is None:
        return {}
    roles = {value.name: value.role.value for value in graph.all_values()}
    peak = graph.ops[plan.peak_op]
    return {"l2_peak_bytes": plan.peak_bytes, "l2_naive_bytes": plan.naive_bytes,
            "l2_lower_bound_bytes": plan.lower_bound_bytes, "l2_peak_op": plan.peak_op,
            "l2_peak_kernel": kernel_of(peak.type, peak.attrs)[0], "l2_peak_node": peak.node,
            "tensors": [{"name": t.name, "offset": t.offset, "size": t.size, "first": t.first, "last": t.last,
                         "role": roles.get(t.name, ""), "shares": t.shares} for t in plan.tensors],
            "phases": _phase_spans(graph)}


def _phase_spans(graph: Graph) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = []
    for index, op in enumerate(graph.ops):
        if spans and spans[-1]["phase"] == op.phase.value:
            spans[-1]["last"] = index
        else:
            spans.append({"phase": op.phase.value, "first": index, "last": index})
    return spans


def shared_params(graph: Graph) -> dict[str, list[str]]:
    """Parameters that several forward layers read (one initializer used by several nodes): each is one
    tensor, trained with the sum of its uses' gradients. By parameter, the layers that read it."""
    readers: dict[str, dict[str, None]] = {}
    for op in graph.ops:
        if op.phase is Phase.FORWARD:
            for value in op.inputs:
                if value.role is Role.PARAM:
                    readers.setdefault(value.origin or value.name, {})[op.node] = None
    return {name: list(nodes) for name, nodes in readers.items() if len(nodes) > 1}


def reference_report(graph: Graph, options: Options, losses: list[float]) -> dict[str, Any]:
    """The report of a reference run, with the keys of a QEMU run's: what only a simulated run measures
    (instructions, cycles, L1 use, DMA) is None, and `layers` is empty."""
    steps = len(losses)
    return {
        "model": graph.name, "target": "reference", "platform": options.target().describe(), "dtype": options.dtype,
        "cycle_model": None,
        "cores": options.target().cores, "steps_run": steps,
        "steps": [{"loss": loss} for loss in losses],
        "check": {"ok": True, "worst": None, "reason": "the reference is the golden run; nothing to compare"},
        "shared_params": shared_params(graph),
        "layers": [],
        "totals": {"macs": sum(op_macs(op) for op in graph.ops) * steps, "instructions_max_core": None,
                   "instructions_per_core": [], "critical_path_instructions": None, "mac_per_instr": None,
                   "cycles_est": None, "cycles_critical_path_est": None, **dict.fromkeys(RUN_AND_STEP_CYCLES),
                   "mac_per_cycle": None},
        "memory": {"l1_bytes": None, "l1_capacity": options.target().l1_bytes, "l2_bytes": None,
                   "l2_capacity": options.target().l2_bytes, "dma_bytes": None, "dma_transfers": None,
                   "dma_cycles_est": None, **memory_plan_fields(graph)},
        "notes": "a float64 numpy run of the training graph: MACs are summed over all steps; instruction, cycle, "
                 "memory and DMA figures exist only for --target qemu",
    }


def print_summary(report: dict[str, Any], *, quiet: bool = False) -> None:
    """The run on stdout: every step's loss and the per-layer table, then the totals and the check. `quiet`
    keeps only the summary: the first and last loss, the totals and the check."""
    if quiet:
        print(_first_and_last_loss([item["loss"] for item in report["steps"]]))
    else:
        for step, item in enumerate(report["steps"]):
            print(f"step {step}: loss {item['loss']:.6f}")
    for name, nodes in report.get("shared_params", {}).items():
        print(f"shared parameter {name}: one tensor read by {', '.join(nodes)}")
    if report["target"] == "reference":
        return  # the golden run itself: no instructions, cycles or check to show
    if not quiet:
        _print_layers(report)
    totals = report["totals"]
    memory = report["memory"]
    print(platform_line(report["platform"]))
    over = f" over {report['steps_run']} steps" if report["steps_run"] > 1 else ""
    estimated = f", est. cycles (busiest core{over}) {totals['cycles_est']}" if totals["cycles_est"] is not None else ""
    print(f"cores {report['cores']}{estimated}, "
          f"L1 {memory['l1_bytes']} B, L2 {memory['l2_bytes']} B, DMA {memory['dma_bytes']} B")
    if totals.get("cycles_per_step_est"):
        tiles = sum(layer.get("tiles", 0) for layer in report["layers"])
        plan = f"; L2 plan peak {memory['l2_peak_bytes']} B (naive {memory['l2_naive_bytes']} B)" \
            if memory.get("l2_peak_bytes") else ""
        print(f"{cycles_line(totals, report['steps_run'])}; {tiles} tiles{plan}")
    check = report["check"]
    worst = check["worst"]
    print(f"check: {'ok' if check['ok'] else 'FAILED'} (worst {worst['tensor']}: relative error "
          f"{worst['rel_err']:.3g})")


def _first_and_last_loss(losses: list[float]) -> str:
    if not losses:
        return "no steps run"
    last = f", {losses[-1]:.6f} at step {len(losses) - 1}" if len(losses) > 1 else ""
    return f"loss {losses[0]:.6f} at step 0{last}"


def _print_layers(report: dict[str, Any]) -> None:
    """One row per layer and phase, the name and op columns as wide as their longest entry."""
    layers, totals = report["layers"], report["totals"]
    name_width = width("layer", "total", *(layer["name"] for layer in layers))
    op_width = width("op", *(layer["op"] for layer in layers))
    header = (f"{'layer':<{name_width}} {'op':<{op_width}} {'phase':<8} {'MACs':>11} {'instr (max core)':>16} "
              f"{'MAC/instr':>9}")
    print(header)
    print("-" * len(header))
    for layer in layers:
        print(f"{layer['name']:<{name_width}} {layer['op']:<{op_width}} {layer['phase']:<8} {layer['macs']:>11} "
              f"{max(layer['instructions']):>16} {layer['mac_per_instr']:>9.3f}")
    print("-" * len(header))
    print(f"{'total':<{name_width}} {'':<{op_width}} {'':<8} {totals['macs']:>11} "
          f"{totals['instructions_max_core']:>16} {totals['mac_per_instr']:>9.3f}")


def width(*cells: str) -> int:
    """The width of a table column that holds these cells (its header among them) without cutting any."""
    return max(len(cell) for cell in cells)


def cycles_line(totals: dict[str, Any], steps: int) -> str:
    """The modelled cycles per step with their DMA, and the run's total when it has several steps."""
    per_step, exposed = totals["cycles_per_step_est"], totals["dma_cycles_exposed_per_step"]
    line = (f"per step (model estimate): {per_step} cycles, DMA {exposed} exposed "
            f"({100 * exposed / per_step:.1f}%) and {totals['dma_cycles_hidden_per_step']} hidden, "
            f"{totals['mac_per_cycle']:.2f} MAC/cycle")
    if steps > 1:
        line += f"; run of {steps} steps: {totals['cycles_run_est']} cycles"
    return line


def platform_line(platform: dict[str, Any]) -> str:
    """The platform and the memory timing every cycle figure above rests on, in one line."""
    return (f"platform {platform['name']}: L1 {platform['l1_bytes']} B at 1 cycle "
            f"(+{platform['l1_load_use_stall']} load-use), L2 {platform['l2_bytes']} B at "
            f"{platform['l2_load_cycles']}/{platform['l2_store_cycles']} cycles load/store "
            f"(+{platform['l2_load_use_stall']} load-use), DMA {platform['dma_in_setup_cycles']} + B/"
            f"{platform['dma_in_bytes_per_cycle']:g} in, {platform['dma_out_setup_cycles']} + B/"
            f"{platform['dma_out_bytes_per_cycle']:g} out")

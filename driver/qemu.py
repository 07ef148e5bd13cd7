"""`tinyodl simulate --target qemu`: compile, build, run on the simulated cluster, check, report."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyodl.driver import TrainingOptions, UserError
from tinyodl.ir.graph import Graph
from tinyodl.simulate import Batches, ReferenceRun, run_reference, save_params, save_report

RTOL, ATOL = 1e-4, 1e-5   # fp32 kernels against the float64 reference
# Updates (final minus initial parameters) are also compared, normwise: a parameter's own magnitude would
# otherwise hide a wrong gradient whenever lr * grad is far below RTOL * |w|. The floor allows float32
# rounding of the parameter itself, twice per step.
UPDATE_RTOL = 1e-3
# The last step's parameter gradients, normwise: checks every backward kernel whatever the optimizer
# (Adam's update is ill-conditioned where a gradient is near zero, SGD's is linear in it).
GRAD_RTOL = 1e-3
F32_EPS = 2.0 ** -24


@dataclass
class SimOutput:
    losses: list[float]
    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray] = field(default_factory=dict)  # of the last step
    dma: tuple[int, int, int] = (0, 0, 0)  # bytes, transfers, modelled cycles


def parse_output(stdout: str, param_names: list[str]) -> SimOutput:
    """Read the LOSS lines and the PARAM / GRAD blocks that the generated main() prints."""
    losses: dict[int, float] = {}
    blocks: dict[str, dict[str, np.ndarray]] = {"PARAM": {}, "GRAD": {}}
    dma = (0, 0, 0)
    lines = iter(stdout.splitlines())
    for line in lines:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "DMA":
            dma = (int(parts[1]), int(parts[2]), int(parts[3]))
        elif len(parts) == 3 and parts[0] == "LOSS":
            losses[int(parts[1])] = float(np.frombuffer(bytes.fromhex(parts[2])[::-1], np.float32)[0])
        elif len(parts) == 3 and parts[0] in blocks:
            index, numel = int(parts[1]), int(parts[2])
            words: list[str] = []
            for body in lines:
                if body.strip() == "END":
                    break
                words.extend(body.split())
            if len(words) != numel:
                raise ValueError(f"{parts[0].lower()} {index}: {len(words)} words printed, {numel} expected")
            raw = np.array([int(w, 16) for w in words], dtype=np.uint32)
            blocks[parts[0]][param_names[index]] = raw.view(np.float32).copy()
    return SimOutput([losses[i] for i in sorted(losses)], blocks["PARAM"], blocks["GRAD"], dma)


def compare(reference: ReferenceRun, simulated: SimOutput, steps: int) -> dict[str, Any]:
    """Per tensor: pass when |sim - ref| <= ATOL + RTOL |ref| everywhere; report the worst tensor."""
    if len(simulated.losses) != steps:
        return {"ok": False, "worst": {"tensor": "loss", "rel_err": float("inf")},
                "reason": f"the program printed {len(simulated.losses)} of {steps} losses"}
    pairs = [(f"loss[step {i}]", np.array([r]), np.array([s]))
             for i, (r, s) in enumerate(zip(reference.losses, simulated.losses, strict=False))]
    for name, ref in reference.params.items():
        if name not in simulated.params:
            return {"ok": False, "worst": {"tensor": name, "rel_err": float("inf")},
                    "reason": f"parameter {name} missing from the output"}
        pairs.append((name, np.asarray(ref, np.float64).reshape(-1),
                      simulated.params[name].astype(np.float64).reshape(-1)))
    worst_name, worst_ratio, worst_rel, ok = "", -1.0, 0.0, True
    for name, ref, sim in pairs:
        diff = np.abs(sim - ref)
        ratio = float(np.max(diff / (ATOL + RTOL * np.abs(ref)))) if diff.size else 0.0
        if not np.all(np.isfinite(sim)):
            ratio = float("inf")
        rel = float(np.max(diff) / max(float(np.max(np.abs(ref))), 1e-30)) if diff.size else 0.0
        ok &= ratio <= 1.0
        if ratio > worst_ratio:
            worst_name, worst_ratio, worst_rel = name, ratio, rel
    for name, ratio, rel in _update_errors(reference, simulated, steps) + _grad_errors(reference, simulated):
        ok &= ratio <= 1.0
        if ratio > worst_ratio:
            worst_name, worst_ratio, worst_rel = name, ratio, rel
    return {"ok": bool(ok), "worst": {"tensor": worst_name, "rel_err": worst_rel, "tolerance_ratio": worst_ratio},
            "tolerance": {"rtol": RTOL, "atol": ATOL, "update_rtol": UPDATE_RTOL, "grad_rtol": GRAD_RTOL}}


def _grad_errors(reference: ReferenceRun, simulated: SimOutput) -> list[tuple[str, float, float]]:
    """(name, error / tolerance, normwise relative error) of every parameter gradient of the last step."""
    found = []
    for name, expected in reference.grads.items():
        actual = simulated.grads.get(name)
        if actual is None:
            found.append((f"gradient of {name}", float("inf"), float("inf")))
            continue
        expected_flat = np.asarray(expected, np.float64).reshape(-1)
        error = float(np.max(np.abs(actual.astype(np.float64).reshape(-1) - expected_flat), initial=0.0))
        scale = float(np.max(np.abs(expected_flat), initial=0.0))
        tolerance = GRAD_RTOL * scale + 1e-30
        ratio = error / tolerance if np.isfinite(error) else float("inf")
        found.append((f"gradient of {name}", ratio, error / scale if scale > 0 else error))
    return found


def _update_errors(reference: ReferenceRun, simulated: SimOutput, steps: int) -> list[tuple[str, float, float]]:
    """(name, error / tolerance, normwise relative error) of the total update of each parameter that
    plain SGD updates (an update linear in the gradient)."""
    found = []
    for name, ref in reference.params.items():
        initial = reference.initial.get(name)
        if initial is None or name not in reference.linear_updates:
            continue
        ref_flat = np.asarray(ref, np.float64).reshape(-1)
        expected = ref_flat - initial.reshape(-1)
        actual = simulated.params[name].astype(np.float64).reshape(-1) - initial.reshape(-1)
        if not expected.size:
            continue
        error = float(np.max(np.abs(actual - expected)))
        scale = float(np.max(np.abs(expected)))
        tolerance = UPDATE_RTOL * scale + 2 * steps * F32_EPS * float(np.max(np.abs(ref_flat)))
        ratio = error / tolerance if tolerance > 0 else (0.0 if error == 0 else float("inf"))
        found.append((f"update of {name}", ratio if np.isfinite(error) else float("inf"),
                      error / scale if scale > 0 else error))
    return found


def _progress(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"[tinyodl] {message}", file=sys.stderr, flush=True)


@dataclass
class QemuRun:
    report: dict[str, Any]
    simulated: SimOutput
    reference: ReferenceRun


def run_on_qemu(graph: Graph, batches: Batches, options: TrainingOptions, *, timeout: float,
                build_dir: Path | None = None, progress: Callable[[str], None] = lambda message: None) -> QemuRun:
    """Reference, compile, build, run with instruction counting, compare; raises UserError on failure."""
    from tinyodl.backend_c.project import write_project
    from tinyodl.runtime import host

    try:
        toolchain = host.find_toolchain(need_plugin=True)
    except host.ToolchainError as exc:
        raise UserError(str(exc)) from None
    progress(f"reference: {len(batches.steps)} step(s) in float64")
    reference = run_reference(graph, batches)
    work = Path(build_dir) if build_dir else Path(tempfile.mkdtemp(prefix="tinyodl-sim-"))
    try:
        project = work / "project" if build_dir is None else work
        progress(f"compiling the C project into {project}")
        program = write_project(graph, batches, options, project)
        progress("building with riscv64-unknown-elf-gcc")
        try:
            elf = host.build(project)
        except host.BuildError as exc:
            raise UserError(f"build failed: {exc}") from None
        memory = host.memory_usage(elf, toolchain)
        progress(f"running {len(batches.steps)} step(s) in QEMU on {options.cores} harts")
        result = host.run_qemu(elf, options.cores, timeout, count=True, toolchain=toolchain)
        if not result.ok:
            raise SimulationFailed(f"simulation failed: {result.failure}")
        try:
            simulated = parse_output(result.stdout, [name for name, _ in program.trainable])
        except (ValueError, IndexError) as exc:
            raise SimulationFailed(f"the program's output is malformed: {exc}") from None
        check = compare(reference, simulated, len(batches.steps))
        report = build_report(graph, options, program, result, simulated, check, memory)
        return QemuRun(report, simulated, reference)
    finally:
        if build_dir is None:
            shutil.rmtree(work, ignore_errors=True)


class SimulationFailed(Exception):
    """The simulated program trapped, timed out or misbehaved (exit code 1, not a user error)."""


def simulate_qemu(args: argparse.Namespace, options: TrainingOptions, graph: Graph, batches: Batches) -> int:
    try:
        run = run_on_qemu(graph, batches, options, timeout=args.timeout, build_dir=args.build_dir,
                          progress=lambda message: _progress(args, message))
    except SimulationFailed as exc:
        print(f"tinyodl: {exc}", file=sys.stderr)
        return 1
    report = run.report
    print_summary(report)
    if args.report is not None:
        save_report(args.report, report)
    if args.save_params is not None:
        shapes = {name: np.shape(array) for name, array in run.reference.params.items()}  # the program prints flat
        save_params(args.save_params, {name: flat.reshape(shapes[name]) for name, flat in run.simulated.params.items()})
    check = report["check"]
    if not check["ok"]:
        worst = check["worst"]
        print(f"tinyodl: check failed: worst tensor {worst['tensor']} (relative error {worst['rel_err']:.3g}, "
              f"{worst.get('tolerance_ratio', float('inf')):.3g}x the tolerance)", file=sys.stderr)
        return 1
    return 0


def build_report(graph: Graph, options: TrainingOptions, program: Any, result: Any, simulated: SimOutput,
                 check: dict[str, Any], memory: Any) -> dict[str, Any]:
    cores = options.cores
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
                       "mac_per_instr": macs / (cores * busiest) if busiest else 0.0})
    per_core_total = [sum(layer["instructions"][h] for layer in layers) for h in range(cores)]
    per_core_cycles = [sum(c.cycles for rid, c in result.per_hart_regions.get(h, {}).items() if rid != 0)
                       for h in range(cores)]
    total_macs = sum(layer["macs"] for layer in layers)
    critical = sum(max(layer["instructions"]) for layer in layers if layer["instructions"])
    busiest_total = max(per_core_total) if per_core_total else 0
    return {
        "model": graph.name, "target": "qemu", "platform": options.target().describe(), "dtype": options.dtype,
        "cores": cores, "steps_run": steps,
        "steps": [{"loss": loss} for loss in simulated.losses],
        "check": check,
        "layers": layers,
        "totals": {"macs": total_macs, "instructions_max_core": busiest_total,
                   "instructions_per_core": per_core_total,
                   "critical_path_instructions": critical,
                   "mac_per_instr": total_macs / (cores * busiest_total) if busiest_total else 0.0,
                   "cycles_est": max(per_core_cycles) if per_core_cycles else 0},
        "memory": {"l1_bytes": memory.l1_used, "l1_capacity": memory.l1_bytes, "l2_bytes": memory.l2_used,
                   "l2_capacity": memory.l2_bytes, "dma_bytes": simulated.dma[0], "dma_transfers": simulated.dma[1],
                   "dma_cycles_est": simulated.dma[2]},
        "notes": "instructions and MACs are summed over all steps; instructions exclude start-up and output "
                 "(region 0); critical_path_instructions sums each layer's busiest core (cores meet at a barrier after "
                 "every kernel); cycles_est is the plugin's in-order model (runtime/plugin/tinyodl_insn.c)",
    }


def print_summary(report: dict[str, Any]) -> None:
    for step, item in enumerate(report["steps"]):
        print(f"step {step}: loss {item['loss']:.6f}")
    header = f"{'layer':<28} {'op':<34} {'phase':<8} {'MACs':>11} {'instr (max core)':>16} {'MAC/instr':>9}"
    print(header)
    print("-" * len(header))
    for layer in report["layers"]:
        print(f"{layer['name'][:28]:<28} {layer['op'][:34]:<34} {layer['phase']:<8} {layer['macs']:>11} "
              f"{max(layer['instructions']):>16} {layer['mac_per_instr']:>9.3f}")
    totals = report["totals"]
    print("-" * len(header))
    print(f"{'total':<28} {'':<34} {'':<8} {totals['macs']:>11} {totals['instructions_max_core']:>16} "
          f"{totals['mac_per_instr']:>9.3f}")
    memory = report["memory"]
    print(f"cores {report['cores']}, est. cycles (busiest core) {totals['cycles_est']}, "
          f"L1 {memory['l1_bytes']} B, L2 {memory['l2_bytes']} B, DMA {memory['dma_bytes']} B")
    check = report["check"]
    worst = check["worst"]
    print(f"check: {'ok' if check['ok'] else 'FAILED'} (worst {worst['tensor']}: relative error "
          f"{worst['rel_err']:.3g})")

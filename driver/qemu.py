"""`tinyodl simulate --target qemu`: compile, build, run on the simulated cluster, parse its output."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyodl.driver.check import SimOutput, StepState
from tinyodl.driver.data import Batches
from tinyodl.driver.files import save_params, save_report
from tinyodl.driver.options import Options, UserError
from tinyodl.driver.reference import ReferenceRun, run_reference
from tinyodl.driver.report import build_report, print_summary
from tinyodl.driver.stepcheck import check_steps
from tinyodl.ir.graph import Graph


def parse_output(stdout: str, param_names: list[str], state_names: Sequence[str] = ()) -> SimOutput:
    """Read the LOSS lines, the STATE blocks (P / G / S) and the final PARAM / GRAD blocks that the generated
    main() prints."""
    losses: dict[int, float] = {}
    blocks: dict[str, dict[str, np.ndarray]] = {"PARAM": {}, "GRAD": {}}
    states: dict[int, StepState] = {}
    current: StepState | None = None
    dma = (0, 0, 0)
    lines = iter(stdout.splitlines())
    for line in lines:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "DMA":
            dma = (int(parts[1]), int(parts[2]), int(parts[3]))
        elif len(parts) == 3 and parts[0] == "LOSS":
            losses[int(parts[1])] = float(np.frombuffer(bytes.fromhex(parts[2])[::-1], np.float32)[0])
        elif len(parts) == 2 and parts[0] == "STATE":
            current = states[int(parts[1])] = StepState()
        elif len(parts) == 3 and parts[0] in ("PARAM", "GRAD", "P", "G", "S"):
            index, raw = int(parts[1]), _words(parts[0], int(parts[2]), lines)
            if parts[0] in blocks:
                blocks[parts[0]][param_names[index]] = raw.view(np.float32).copy()
            elif current is None:
                raise ValueError(f"a {parts[0]} block before any STATE line")
            elif parts[0] == "S":
                current.state[state_names[index]] = raw
            else:
                target = current.params if parts[0] == "P" else current.grads
                target[param_names[index]] = raw.view(np.float32).copy()
    return SimOutput([losses[i] for i in sorted(losses)], blocks["PARAM"], blocks["GRAD"], dma, states)


def _words(tag: str, numel: int, lines: Iterator[str]) -> np.ndarray:
    words: list[str] = []
    for body in lines:
        if body.strip() == "END":
            break
        words.extend(body.split())
    if len(words) != numel:
        raise ValueError(f"{tag} block: {len(words)} words printed, {numel} expected")
    return np.array([int(w, 16) for w in words], dtype=np.uint32)


def _progress(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"[tinyodl] {message}", file=sys.stderr, flush=True)


@dataclass
class QemuRun:
    report: dict[str, Any]
    simulated: SimOutput
    reference: ReferenceRun


def run_on_qemu(graph: Graph, batches: Batches, options: Options, *, timeout: float,
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
        cores = options.target().cores
        progress(f"running {len(batches.steps)} step(s) in QEMU on {cores} harts")
        result = host.run_qemu(elf, cores, timeout, count=True, toolchain=toolchain, target=options.target())
        if not result.ok:
            raise SimulationFailed(f"simulation failed: {result.failure}")
        try:
            simulated = parse_output(result.stdout, [name for name, _ in program.trainable],
                                     [b.value_name for b in program.buffers if b.kind == "state"])
        except (ValueError, IndexError, KeyError) as exc:
            raise SimulationFailed(f"the program's output is malformed: {exc}") from None
        progress(f"checking {len(simulated.states)} printed states step-locally against the reference")
        check = check_steps(graph, batches.steps, simulated)
        report = build_report(graph, options, program, result, simulated, check, memory)
        return QemuRun(report, simulated, reference)
    finally:
        if build_dir is None:
            shutil.rmtree(work, ignore_errors=True)


class SimulationFailed(Exception):
    """The simulated program trapped, timed out or misbehaved (exit code 1, not a user error)."""


def simulate_qemu(args: argparse.Namespace, options: Options, graph: Graph, batches: Batches) -> int:
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

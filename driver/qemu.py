"""`tinyodl simulate --target qemu`: compile, build, run on the simulated cluster, parse its output."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyodl.driver.check import SimOutput, StepState, check_steps
from tinyodl.driver.data import Batches
from tinyodl.driver.gvsoc import add_measured
from tinyodl.driver.options import Options, UserError
from tinyodl.driver.progress import Progress
from tinyodl.driver.reference import ReferenceRun, run_reference
from tinyodl.driver.report import build_report
from tinyodl.driver.timing import add_dma_timing
from tinyodl.ir.graph import Graph

INTEGER = re.compile(r"-?[0-9]+")


def parse_output(stdout: str, param_names: list[str], state_names: Sequence[str] = ()) -> SimOutput:
    """Read the LOSS lines and the STATE blocks (P / G / S) that the generated main() prints; the last state
    holds the trained parameters and the last step's gradients."""
    losses: dict[int, float] = {}
    states: dict[int, StepState] = {}
    current: StepState | None = None
    dma = (0, 0, 0)
    lines = iter(stdout.splitlines())
    for line in lines:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "DMA":
            dma = (int(parts[1]), int(parts[2]), int(parts[3]))
        elif len(parts) == 3 and parts[0] == "LOSS":
            losses[int(parts[1])] = _float32(parts[2])
        elif len(parts) == 2 and parts[0] == "STATE":
            current = states[int(parts[1])] = StepState()
        elif len(parts) == 3 and parts[0] in ("P", "G", "S"):
            index, raw = int(parts[1]), read_words(parts[0], int(parts[2]), lines)
            if current is None:
                raise ValueError(f"a {parts[0]} block before any STATE line")
            if parts[0] == "S":
                current.state[state_names[index]] = raw
            else:
                target = current.params if parts[0] == "P" else current.grads
                target[param_names[index]] = raw.view(np.float32).copy()
    last = states[max(states)] if states else StepState()
    return SimOutput([losses[i] for i in sorted(losses)], last.params, last.grads, dma, states)


def _float32(text: str) -> float:
    """A float32 as the program prints it: in decimal with enough digits to be exact (runtime/c/print.c)."""
    return float(np.float32(float(text)))


def _show_loss(line: str, progress: Progress) -> None:
    """A LOSS line as the guest prints it, shown as progress while QEMU still runs."""
    parts = line.split()
    if len(parts) == 3 and parts[0] == "LOSS":
        try:
            progress.step(int(parts[1]), _float32(parts[2]))
        except ValueError:
            return  # a garbled line: parse_output reports the malformed output once QEMU is done


def read_words(tag: str, numel: int, lines: Iterator[str]) -> np.ndarray:
    """The values of one printed block up to its END line, as raw 32-bit words: an integer (the step
    counter) as int32, anything else (printed with a point, an exponent, inf or nan) as float32."""
    words: list[str] = []
    for body in lines:
        if body.strip() == "END":
            break
        words.extend(body.split())
    if len(words) != numel:
        raise ValueError(f"{tag} block: {len(words)} values printed, {numel} expected")
    raw = np.empty(len(words), np.uint32)
    for i, word in enumerate(words):
        if INTEGER.fullmatch(word):
            if not -2**31 <= int(word) < 2**31:
                raise ValueError(f"{tag} block: {word} is not a 32-bit integer")
            raw[i] = np.int32(int(word)).view(np.uint32)
        else:
            raw[i] = np.float32(float(word)).view(np.uint32)
    return raw


SIMULATOR_NAMES = {"qemu": "QEMU", "gvsoc": "GVSoC pulp-open"}
_L2_HINTS = {"gvsoc": " (on GVSoC the initial parameters, the batches and the kept gradients take L2 beside the "
                      "program: the pulp-open model has no off-chip memory a core can address)"}


@dataclass
class QemuRun:
    report: dict[str, Any]
    simulated: SimOutput
    reference: ReferenceRun


def run_on_qemu(graph: Graph, batches: Batches, options: Options, *, timeout: float,
                build_dir: Path | None = None, progress: Progress | None = None, simulator: str = "qemu") -> QemuRun:
    """Reference, compile, build, run with instruction counting, compare; raises UserError on failure.
    `simulator` is "qemu" or "gvsoc" (runtime/simulators.py): the same step, built for its platform."""
    from tinyodl.driver.files import write_c_project
    from tinyodl.runtime import host
    from tinyodl.runtime.simulators import SimulatorError, open_simulator

    progress = progress or Progress(quiet=True)
    try:
        sim = open_simulator(simulator, options.target())
    except SimulatorError as exc:
        raise UserError(str(exc)) from None
    toolchain = sim.toolchain
    progress.message(f"reference: {len(batches.steps)} step(s) in float64")
    progress.start_steps("reference", len(batches.steps))
    reference = run_reference(graph, batches, on_step=progress.step)
    work = Path(build_dir) if build_dir else Path(tempfile.mkdtemp(prefix="tinyodl-sim-"))
    try:
        project = work / "project" if build_dir is None else work
        progress.message(f"compiling the C project into {project}")
        program = write_c_project(graph, batches, options, project, platform=sim.platform)
        progress.message("building with riscv64-unknown-elf-gcc")
        try:
            elf = host.build(project)
        except host.BuildError as exc:
            raise UserError(f"build failed: {exc}{_L2_HINTS.get(sim.platform, '') if 'L2' in str(exc) else ''}") \
                from None
        memory = host.memory_usage(elf, toolchain)
        cores = options.target().cores
        progress.message(f"running {len(batches.steps)} step(s) in {SIMULATOR_NAMES[sim.name]} on {cores} cores")
        progress.start_steps(sim.name, len(batches.steps))
        result = sim.run(elf, cores, timeout, count=True, on_line=lambda line: _show_loss(line, progress))
        progress.finish()
        if not result.ok:
            raise SimulationFailed(f"simulation failed: {result.failure}")
        try:
            simulated = parse_output(result.stdout, [name for name, _ in program.trainable],
                                     [b.value_name for b in program.buffers if b.kind == "state"])
        except (ValueError, IndexError, KeyError) as exc:
            raise SimulationFailed(f"the program's output is malformed: {exc}") from None
        progress.message(f"checking {len(simulated.states)} printed states step-locally against the reference")
        check = check_steps(graph, batches.steps, simulated)
        report = build_report(graph, options, program, result, simulated, check, memory)
        if sim.cycles == "measured":
            add_measured(report, result, program, graph, options.target())
        else:
            add_dma_timing(report, graph, options.target())
        return QemuRun(report, simulated, reference)
    finally:
        if build_dir is None:
            shutil.rmtree(work, ignore_errors=True)


class SimulationFailed(Exception):
    """The simulated program trapped, timed out or misbehaved (exit code 1, not a user error)."""

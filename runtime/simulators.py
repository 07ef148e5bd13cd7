"""The simulators a program can run on, behind one interface: what the driver sees of QEMU and GVSoC.

Each one names the runtime platform its programs are built for (runtime/c/rt_platform.h), checks that it
can simulate a target (tools present, memory sizes), and runs an ELF into a `host.RunResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tinyodl.ir.target import TARGETS, Target
from tinyodl.runtime import gvsoc, host

NAMES = ("qemu", "gvsoc")


class SimulatorError(RuntimeError):
    """This simulator cannot run the target: missing, or built for other sizes. One line."""


class Simulator(Protocol):
    name: str
    platform: str
    toolchain: host.Toolchain
    # what its cycle figures are: "model" (an estimate on top of exact instruction counts) or "measured"
    cycles: str

    def run(self, elf: Path, cores: int, timeout_s: float, *, count: bool,
            on_line: Callable[[str], None] | None = None) -> host.RunResult: ...


@dataclass
class Qemu:
    toolchain: host.Toolchain
    target: Target
    name: str = "qemu"
    platform: str = "qemu"
    cycles: str = "model"

    def run(self, elf: Path, cores: int, timeout_s: float, *, count: bool,
            on_line: Callable[[str], None] | None = None) -> host.RunResult:
        return host.run_qemu(elf, cores, timeout_s, count=count, toolchain=self.toolchain, target=self.target,
                             on_line=on_line)


@dataclass
class Gvsoc:
    toolchain: host.Toolchain
    chip: gvsoc.Gvsoc
    name: str = "gvsoc"
    platform: str = "gvsoc"
    cycles: str = "measured"

    def run(self, elf: Path, cores: int, timeout_s: float, *, count: bool,
            on_line: Callable[[str], None] | None = None) -> host.RunResult:
        # the counters are always on: they are the chip's own
        return gvsoc.run_gvsoc(elf, cores, timeout_s, self.chip, self.toolchain, on_line)


def open_simulator(name: str, target: Target, *, count: bool = True) -> Simulator:
    """The simulator `name` ready to run `target` (a preset, maybe with smaller budgets); SimulatorError
    says why it cannot."""
    try:
        if name == "qemu":
            return Qemu(host.find_toolchain(need_plugin=count), target)
        if name == "gvsoc":
            toolchain = host.find_toolchain(need_plugin=False)
            chip = gvsoc.find_gvsoc()
            mismatch = gvsoc.check_sizes(chip, TARGETS[target.name], target)
            if mismatch is not None:
                raise SimulatorError(mismatch)
            return Gvsoc(toolchain, chip)
    except host.ToolchainError as exc:
        raise SimulatorError(str(exc)) from None
    raise SimulatorError(f"no simulator {name!r} (simulators: {', '.join(NAMES)})")

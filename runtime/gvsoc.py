"""Host side of the GVSoC target: find the simulator, learn the sizes it was built with, run programs.

GVSoC (the PULP platform's event-based simulator) runs the same ELF as QEMU would, built with
``RT_PLATFORM_GVSOC=1`` (runtime/c/rt_platform.h): its ``pulp-open`` chip has a fabric controller that
boots an 8-core cluster. Its cores count cycles, instructions and stall events in hardware; the runtime
reads them at every region marker and prints ``PERF`` lines at exit, which become the run's
per-core, per-region measured figures here.

Finding it: the launcher named by ``TINYODL_GVSOC``, else ``gvsoc`` on PATH. Its memory sizes are part
of the simulated chip (GVSoC has no option for them): they are read from the chip description that the
build installs beside the launcher, ``.../pulp/chips/pulp_open/cluster.json`` (the cluster's L1 mapping)
and ``soc.json`` (the shared L2 region), the same files a build with other sizes patches.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tinyodl.ir.target import Target
from tinyodl.runtime import host

ENV_VAR = "TINYODL_GVSOC"
LAUNCHER = "gvsoc"
TARGET = "pulp-open"
INSTALL_HINT = (
    "install GVSoC (github.com/gvsoc/gvsoc: clone with submodules, pip install its requirements, "
    "`make build TARGETS=pulp-open`) and put its bin/gvsoc on PATH or in TINYODL_GVSOC"
)

# "PERF <core> <region> <field>...", fields in the order of RT_PERF_* in runtime/c/tinyodl_rt.h
PERF_FIELDS = ("cycles", "instructions", "load_use_stall", "jump_register_stall", "icache_miss_cycles",
               "branches_taken", "dma_wait_cycles")
_PERF_LINE = re.compile(rf"^PERF (\d+) (\d+)((?: \d+){{{len(PERF_FIELDS)}}})$")
# "... /chip/cluster/pe0/lsu ... Invalid access (pc: 0x1c0437d0, offset: 0x0f037ab4, size: 0x4, is_write: 0)"
_INVALID_ACCESS = re.compile(r"/chip/(?P<unit>\S+?)/lsu\b.*?Invalid access \(pc: (?P<pc>0x[0-9a-f]+), "
                             r"offset: (?P<address>0x[0-9a-f]+), size: 0x[0-9a-f]+, is_write: (?P<write>\d)\)")
_EXEC_LINE = re.compile(r"""exec\s+["']?(?P<path>[^"'\s]+)""")


@dataclass(frozen=True)
class Gvsoc:
    launcher: Path
    l1_bytes: int
    l2_bytes: int


def find_gvsoc() -> Gvsoc:
    """The launcher and its chip's sizes; ToolchainError (saying how to install it) when there is none."""
    named = os.environ.get(ENV_VAR)
    if named:
        launcher = Path(named)
        if not (launcher.is_file() and os.access(launcher, os.X_OK)):
            raise host.ToolchainError(f"{ENV_VAR}={named} is not an executable GVSoC launcher: {INSTALL_HINT}")
    else:
        found = shutil.which(LAUNCHER)
        if found is None:
            raise host.ToolchainError(f"GVSoC not found ({ENV_VAR} unset, no {LAUNCHER} on PATH): {INSTALL_HINT}")
        launcher = Path(found)
    l1_bytes, l2_bytes = chip_sizes(launcher)
    return Gvsoc(launcher, l1_bytes, l2_bytes)


def _install_roots(launcher: Path) -> list[Path]:
    """Where the chip description may be: the tree of the launcher, and of what a wrapper script execs."""
    roots = [launcher.resolve().parent.parent]
    try:
        text = launcher.read_text(errors="replace") if launcher.stat().st_size < 65536 else ""
    except OSError:
        text = ""
    for match in _EXEC_LINE.finditer(text):
        target = Path(match["path"].replace("\\$", "$"))
        if target.is_file():
            roots.append(target.resolve().parent.parent)
    return roots


def chip_sizes(launcher: Path) -> tuple[int, int]:
    """(L1 bytes, shared L2 bytes) of the pulp-open chip that `launcher` simulates."""
    for root in _install_roots(launcher):
        for cluster in sorted(root.rglob("pulp_open/cluster.json")):
            soc = cluster.with_name("soc.json")
            if not soc.is_file():
                continue
            try:
                l1 = int(json.loads(cluster.read_text())["l1"]["mapping"]["size"], 0)
                l2 = int(json.loads(soc.read_text())["l2"]["shared"]["mapping"]["size"], 0)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            return l1, l2
    raise host.ToolchainError(f"{launcher}: no pulp_open/cluster.json and soc.json in its install tree, so its "
                              f"L1 and L2 sizes are unknown (is it a GVSoC built with TARGETS=pulp-open?)")


def check_sizes(gvsoc: Gvsoc, preset: Target, budget: Target) -> str | None:
    """None when the chip is the preset's (same L1 and L2) and the budgets (--l1, --l2) fit in it, else one
    line saying what differs."""
    if (gvsoc.l1_bytes, gvsoc.l2_bytes) != (preset.l1_bytes, preset.l2_bytes):
        return (f"--target gvsoc: platform {preset.name} has L1 {preset.l1_bytes} B and L2 {preset.l2_bytes} B, but "
                f"the GVSoC at {gvsoc.launcher} was built with L1 {gvsoc.l1_bytes} B and L2 {gvsoc.l2_bytes} B "
                f"(choose the platform with those sizes, or build GVSoC with GVSOC_L1_BYTES={preset.l1_bytes} "
                f"GVSOC_L2_BYTES={preset.l2_bytes})")
    if budget.l1_bytes > gvsoc.l1_bytes or budget.l2_bytes > gvsoc.l2_bytes:
        return (f"--target gvsoc: budgets L1 {budget.l1_bytes} B and L2 {budget.l2_bytes} B do not fit the GVSoC "
                f"chip's L1 {gvsoc.l1_bytes} B and L2 {gvsoc.l2_bytes} B")
    return None


def command(gvsoc: Gvsoc, elf: Path, work_dir: Path) -> list[str]:
    return [str(gvsoc.launcher), f"--target={TARGET}", f"--work-dir={work_dir}", "--binary", str(elf), "run"]


def parse_perf(stdout: str) -> dict[int, dict[int, dict[str, int]]]:
    """core -> region -> field -> value, from the PERF lines."""
    measured: dict[int, dict[int, dict[str, int]]] = {}
    for line in stdout.splitlines():
        match = _PERF_LINE.match(line.strip())
        if match is None:
            continue
        values = [int(word) for word in match[3].split()]
        measured.setdefault(int(match[1]), {})[int(match[2])] = dict(zip(PERF_FIELDS, values, strict=True))
    return measured


def run_gvsoc(elf: Path, cores: int, timeout_s: float, gvsoc: Gvsoc, toolchain: host.Toolchain,
              on_line: Callable[[str], None] | None = None) -> host.RunResult:
    """Runs `elf` on GVSoC pulp-open; per-core, per-region instructions (and cycles) from the cores'
    counters, the full measured record in `RunResult.measured`."""
    elf = Path(elf)
    if not elf.is_file():
        raise FileNotFoundError(f"no such program: {elf}")
    with tempfile.TemporaryDirectory(prefix="tinyodl-gvsoc-") as scratch:
        started = time.monotonic()
        try:
            completed = host.run_streaming(command(gvsoc, elf.resolve(), Path(scratch)), timeout_s, on_line)
        except subprocess.TimeoutExpired as expired:
            return host.RunResult(
                exit_code=host.EXIT_HOST_TIMEOUT, stdout=host.text_of(expired.stdout),
                stderr=host.text_of(expired.stderr),
                failure=f"host timeout: GVSoC still running after {timeout_s:g} s, killed",
                wall_seconds=time.monotonic() - started)
    wall_seconds = time.monotonic() - started
    stdout, stderr = host.text_of(completed.stdout), host.text_of(completed.stderr)
    failure = describe_failure(completed.returncode, stdout, stderr, elf, toolchain)
    measured = parse_perf(stdout)
    if failure is None and not measured:
        failure = "GVSoC run printed no PERF lines (was the program built with RT_PLATFORM_GVSOC=1?)"
    regions = {core: {region: host.RegionCount(fields["instructions"], fields["cycles"])
                      for region, fields in per_region.items()}
               for core, per_region in measured.items() if core < cores}
    return host.RunResult(completed.returncode, stdout, stderr, failure, regions, wall_seconds, {}, measured)


def describe_failure(exit_code: int, stdout: str, stderr: str, elf: Path, toolchain: host.Toolchain) -> str | None:
    """As for QEMU (the runtime's exit codes are the same), plus the simulator's own errors: a load or
    store to an unmapped address stops GVSoC with exit code 1 and an "Invalid access" line (the core does
    not trap), which names the code address."""
    output = stderr + "\n" + stdout
    invalid = _INVALID_ACCESS.search(output)
    if invalid is not None:
        where = host.function_at(elf, int(invalid["pc"], 16), toolchain)
        access = "store to" if invalid["write"] == "1" else "load from"
        return (f"invalid access: {access} {invalid['address']} at pc={invalid['pc']}"
                f"{f' in {where}' if where else ''}, {invalid['unit']}")
    if exit_code == 0:
        return None
    errors = [line.strip() for line in output.splitlines() if re.search(r"\berror\b|Traceback", line, re.IGNORECASE)]
    if exit_code not in (host.EXIT_CHECK, host.EXIT_TRAP, host.EXIT_STACK) and errors:
        return f"GVSoC failed (exit code {exit_code}): {errors[0]}"
    return host.describe_failure(exit_code, stdout, "", elf, toolchain)


def doctor_check() -> tuple[str, bool, str]:
    """The line `tinyodl doctor` shows for GVSoC (optional: only --target gvsoc needs it)."""
    try:
        gvsoc = find_gvsoc()
    except host.ToolchainError as exc:
        return ("GVSoC (optional, --target gvsoc)", False, str(exc))
    return ("GVSoC (optional, --target gvsoc)", True,
            f"{gvsoc.launcher}: pulp-open with L1 {gvsoc.l1_bytes} B, L2 {gvsoc.l2_bytes} B")

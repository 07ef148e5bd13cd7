"""Running programs in QEMU (`-machine virt`, one hart per core plus the DMA engine's), with the
instruction-count plugin; reading its counts and the runtime's failure lines back."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tinyodl.ir.target import PULP8, Target
from tinyodl.runtime.build import QEMU_DRAM_BYTES, BuildError, symbol_table
from tinyodl.runtime.toolchain import NM, QEMU, Toolchain, ToolchainError, find_toolchain

EXIT_OK = 0
EXIT_CHECK = 1
EXIT_TRAP = 3
EXIT_WATCHDOG = 4
EXIT_HART_COUNT = 5
EXIT_STACK = 6
EXIT_HOST_TIMEOUT = -1

TRAP_LINE = re.compile(
    r"TRAP mcause=(?P<name>\S+) \((?P<code>\d+)\) mepc=(?P<mepc>0x[0-9a-f]+) "
    r"mtval=(?P<mtval>0x[0-9a-f]+) hart=(?P<hart>\d+)"
)
STACK_LINE = re.compile(r"STACK OVERFLOW hart=(?P<hart>\d+) RT_STACK_BYTES=(?P<bytes>\d+)")


@dataclass(frozen=True)
class RegionCount:
    insns: int
    cycles: int
    # loads and stores (atomics count as loads) that landed in L1 (the .l1 region and the per-hart stacks)
    # and elsewhere (L2); counts JSON of a plugin without the memory model has neither
    l1_accesses: int = 0
    l2_accesses: int = 0


@dataclass
class RunResult:
    exit_code: int  # EXIT_HOST_TIMEOUT (-1) when the host killed QEMU
    stdout: str
    stderr: str
    failure: str | None  # one line, None on success
    per_hart_regions: dict[int, dict[int, RegionCount]] = field(default_factory=dict)
    wall_seconds: float = 0.0
    # parameters of the plugin's cycle model (runtime/plugin/tinyodl_insn.c), to show next to cycles
    cycle_model: dict[str, int] = field(default_factory=dict)
    # a simulator's own per-core, per-region measurements (GVSoC's counters: runtime/gvsoc.py), core ->
    # region -> field -> value; empty for QEMU
    measured: dict[int, dict[int, dict[str, int]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failure is None


# ---- running ----------------------------------------------------------------------------------------


def qemu_harts(cores: int) -> int:
    """Harts of the simulated cluster: the compute cores plus the DMA engine (hart number `cores`)."""
    return cores + 1


def plugin_memory_arguments(elf: Path, toolchain: Toolchain, target: Target) -> list[str]:
    """The plugin's memory-model arguments: the address ranges that count as L1, from the ELF's linker
    symbols, and the latencies of `target`.

    L1 is the .l1 region plus the per-hart block of thread-local storage, trap stacks and stacks: PULP
    runtimes keep core stacks in the TCDM, and our linker script places them in L2 only because QEMU
    has one RAM. Everything else a core reaches (L2, off-chip data, peripherals) counts as L2.
    """
    if toolchain.nm is None:
        raise ToolchainError(f"{NM} not found: apt-get install binutils-riscv64-unknown-elf")
    symbols = symbol_table(toolchain.nm, elf)
    wanted = ("__l1_start", "__l1_region_end", "__tls_blocks_start", "__stacks_start", "__stack_bytes",
              "__num_cores")
    missing = [name for name in wanted if name not in symbols]
    if missing:
        raise BuildError(f"{elf} was not linked with the tinyodl linker script (no {missing[0]})", "")
    stacks_end = symbols["__stacks_start"] + symbols["__num_cores"] * symbols["__stack_bytes"]
    ranges = [(symbols["__l1_start"], symbols["__l1_region_end"]), (symbols["__tls_blocks_start"], stacks_end)]
    return [
        *(f"l1=0x{start:x}:0x{end:x}" for start, end in ranges if end > start),
        f"load_use={target.l1_load_use_stall}", f"l2_load={target.l2_load_cycles}",
        f"l2_store={target.l2_store_cycles}", f"l2_load_use={target.l2_load_use_stall}",
    ]


def qemu_command(elf: Path, cores: int, toolchain: Toolchain, counts_json: Path | None,
                 target: Target = PULP8) -> list[str]:
    command = [
        str(toolchain.qemu), "-machine", "virt", "-m", f"{QEMU_DRAM_BYTES // (1024 * 1024)}M",
        "-smp", str(qemu_harts(cores)), "-cpu", "rv32,Zfh=true", "-bios", "none", "-kernel", str(elf),
        "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
    ]
    if counts_json is not None:
        plugin = str(toolchain.require_plugin()).replace(",", ",,")
        arguments = [f"out={str(counts_json).replace(',', ',,')}", *plugin_memory_arguments(elf, toolchain, target)]
        command += ["-plugin", ",".join([f"file={plugin}", *arguments])]
    return command


def run_qemu(
    elf: Path, cores: int, timeout_s: float, count: bool = True, toolchain: Toolchain | None = None,
    target: Target = PULP8, on_line: Callable[[str], None] | None = None,
) -> RunResult:
    """Runs `elf` on `cores` compute harts plus the DMA engine's hart; with `count`, per-hart per-region
    counts come from the plugin (the engine's hart, number `cores`, counts only in region 0). `on_line`
    sees each line of the guest's output as it is printed (progress while a long run goes on)."""
    tools = toolchain or find_toolchain(need_plugin=count)
    elf = Path(elf)
    if not elf.is_file():
        raise FileNotFoundError(f"no such program: {elf}")
    with tempfile.TemporaryDirectory(prefix="tinyodl-run-") as scratch:
        counts_json = Path(scratch) / "counts.json" if count else None
        command = qemu_command(elf, cores, tools, counts_json, target)
        started = time.monotonic()
        try:
            completed = run_streaming(command, timeout_s, on_line)
        except subprocess.TimeoutExpired as expired:
            return RunResult(
                exit_code=EXIT_HOST_TIMEOUT,
                stdout=text_of(expired.stdout),
                stderr=text_of(expired.stderr),
                failure=f"host timeout: QEMU still running after {timeout_s:g} s, killed",
                wall_seconds=time.monotonic() - started,
            )
        wall_seconds = time.monotonic() - started
        stdout, stderr = text_of(completed.stdout), text_of(completed.stderr)
        failure = describe_failure(completed.returncode, stdout, stderr, elf, tools)
        regions: dict[int, dict[int, RegionCount]] = {}
        cycle_model: dict[str, int] = {}
        if counts_json is not None:
            if counts_json.is_file():
                counts_text = counts_json.read_text()
                regions = parse_counts(counts_text)
                cycle_model = {name: int(value) for name, value in json.loads(counts_text)["cycle_model"].items()}
            elif failure is None:
                failure = f"the instruction-count plugin wrote no counts (is {tools.plugin} up to date?)"
    return RunResult(completed.returncode, stdout, stderr, failure, regions, wall_seconds, cycle_model)


def run_streaming(command: Sequence[str], timeout_s: float,
                   on_line: Callable[[str], None] | None) -> subprocess.CompletedProcess[str]:
    """subprocess.run(capture_output=True, timeout=...) that also hands each stdout line to `on_line` as it
    arrives; readers run in threads so that the timeout still holds when the guest prints nothing."""
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, encoding="utf-8", errors="replace")
    assert process.stdout is not None and process.stderr is not None
    out_lines: list[str] = []
    err_text: list[str] = []

    def read_stdout() -> None:
        callback = on_line
        for line in process.stdout:  # type: ignore[union-attr]
            out_lines.append(line)
            if callback is not None:
                try:
                    callback(line.rstrip("\n"))
                except Exception:  # noqa: BLE001 - a failing display must not stop the draining (QEMU would block)
                    callback = None

    readers = [threading.Thread(target=read_stdout, daemon=True),
               threading.Thread(target=lambda: err_text.append(process.stderr.read()), daemon=True)]  # type: ignore[union-attr]
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        for reader in readers:
            reader.join()
        raise subprocess.TimeoutExpired(command, timeout_s, "".join(out_lines), "".join(err_text)) from None
    for reader in readers:
        reader.join()
    return subprocess.CompletedProcess(command, process.returncode, "".join(out_lines), "".join(err_text))


def text_of(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


def parse_counts(text: str) -> dict[int, dict[int, RegionCount]]:
    document = json.loads(text)
    return {
        int(hart["hart"]): {
            int(region): RegionCount(int(count["insns"]), int(count["cycles"]), int(count.get("l1_accesses", 0)),
                                     int(count.get("l2_accesses", 0)))
            for region, count in hart["regions"].items()
        }
        for hart in document["harts"]
    }


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def describe_failure(exit_code: int, stdout: str, stderr: str, elf: Path, toolchain: Toolchain) -> str | None:
    """One line saying why a run failed (None if it did not), from the exit code and the output."""
    qemu_errors = [line.strip() for line in stderr.splitlines() if line.startswith(f"{QEMU}:")]
    if qemu_errors:
        return f"QEMU failed: {qemu_errors[0]}"
    if exit_code == EXIT_OK:
        return None
    if exit_code == EXIT_TRAP:
        match = TRAP_LINE.search(stdout)
        if match:
            mepc = int(match["mepc"], 16)
            where = function_at(elf, mepc, toolchain)
            return (
                f"trap: {match['name']} (mcause {match['code']}) at mepc={match['mepc']}"
                f"{f' in {where}' if where else ''}, mtval={match['mtval']}, hart {match['hart']}"
            )
        return f"trap (exit code 3): {_last_line(stdout) or 'no trap line printed'}"
    if exit_code == EXIT_WATCHDOG:
        watchdog = [line.strip() for line in stdout.splitlines() if line.startswith("WATCHDOG")]
        return f"watchdog: {watchdog[0] if watchdog else 'exit code 4'}"
    if exit_code == EXIT_HART_COUNT:
        return _last_line(stdout) or "wrong hart count"
    if exit_code == EXIT_STACK:
        stack = STACK_LINE.search(stdout)
        if stack:
            return (f"stack overflow on hart {stack['hart']}: its {stack['bytes']}-byte stack is too small "
                    f"(raise the stack size)")
        return "stack overflow (exit code 6)"
    if exit_code == EXIT_CHECK:
        return f"check failed: {_last_line(stdout) or 'exit code 1'}"
    return f"exited with code {exit_code}: {_last_line(stdout) or _last_line(stderr) or 'no output'}"


def function_at(elf: Path, address: int, toolchain: Toolchain) -> str | None:
    """'function (file:line)' for a code address, from addr2line, or the nearest symbol from nm."""
    if toolchain.addr2line is not None:
        output = subprocess.run(
            [str(toolchain.addr2line), "-f", "-e", str(elf), f"0x{address:x}"],
            capture_output=True, text=True, check=False,
        ).stdout.split("\n")
        if len(output) >= 2 and output[0] and output[0] != "??":
            location = output[1].strip()
            if location.startswith("??"):
                return output[0]
            return f"{output[0]} ({Path(location.split(' ')[0]).name})"
    if toolchain.nm is not None:
        best: tuple[int, str] | None = None
        for name, value in symbol_table(toolchain.nm, elf).items():
            if value <= address and (best is None or value > best[0]) and not name.startswith("__"):
                best = (value, name)
        if best is not None:
            return f"{best[1]}+0x{address - best[0]:x}"
    return None

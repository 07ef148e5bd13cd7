"""Host side of the runtime: find the toolchain, build guest programs, run them in QEMU.

The guest side lives in ``runtime/c`` (start-up, team, barrier, exit codes) and the per-hart
instruction counter in ``runtime/plugin`` (built by ``runtime/setup.sh``).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from tinyodl.ir.target import PULP8, Target

RUNTIME_DIR = Path(__file__).resolve().parent
RUNTIME_C_DIR = RUNTIME_DIR / "c"
RUNTIME_SOURCES = tuple(RUNTIME_C_DIR / name for name in ("crt0.S", "rt.c", "rt_qemu.c", "rt_gvsoc.c"))
# what the runtime can be built for (runtime/c/rt_platform.h)
PLATFORMS = ("qemu", "gvsoc")
PLUGIN_SOURCE = RUNTIME_DIR / "plugin" / "tinyodl_insn.c"
SETUP_SCRIPT = RUNTIME_DIR / "setup.sh"

GCC = "riscv64-unknown-elf-gcc"
ADDR2LINE = "riscv64-unknown-elf-addr2line"
NM = "riscv64-unknown-elf-nm"
QEMU = "qemu-system-riscv32"
PLUGIN_NAME = "tinyodl_insn.so"

# Zfh in -march breaks multilib selection at link time, so objects are compiled with it and the link
# uses the plain rv32imafc/ilp32f multilib of gcc and picolibc.
COMPILE_ARCH_FLAGS = ("-march=rv32imafc_zfh", "-mabi=ilp32f")
LINK_ARCH_FLAGS = ("-march=rv32imafc", "-mabi=ilp32f")
COMMON_FLAGS = ("-mcmodel=medany", "-O2", "-ffunction-sections", "-fdata-sections", "--specs=picolibc.specs")
COMPILE_ONLY_FLAGS = ("-std=gnu11", "-Wall", "-Wextra", "-g")
LINK_FLAGS = ("-nostartfiles", "-Wl,--gc-sections", "-Wl,--no-warn-rwx-segments")

QEMU_DRAM_BYTES = 128 * 1024 * 1024
# QEMU keeps the device tree in the last 2 MiB of DRAM; the program's memory must stay below it.
USABLE_DRAM_BYTES = QEMU_DRAM_BYTES - 2 * 1024 * 1024
L1_ALIGN_BYTES = 4096

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
# "/usr/lib/gcc/.../bin/ld: region `L1' overflowed" -> "ld: region `L1' overflowed"
TOOL_PATH_PREFIX = re.compile(r"^/\S*/(ld|as|collect2|cc1):")
L2_OVERFLOW = re.compile(r"region `L2' overflowed by (?P<bytes>\d+) bytes")
LINKER_L2_BYTES = re.compile(r"\bl2_bytes=(?P<bytes>\d+)")  # the generated linker script's header names it
STACK_LINE = re.compile(r"STACK OVERFLOW hart=(?P<hart>\d+) RT_STACK_BYTES=(?P<bytes>\d+)")
ERROR_LINE = re.compile(r"\berror\b|overflowed|undefined reference|cannot find|No rule to make", re.IGNORECASE)


class ToolchainError(RuntimeError):
    """A tool needed to build or simulate is missing; the message says what to install."""


class BuildError(RuntimeError):
    """Compiling or linking failed. ``str(error)`` is the first error line, ``log`` the full output."""

    def __init__(self, first_error: str, log: str) -> None:
        super().__init__(first_error)
        self.first_error = first_error
        self.log = log


@dataclass(frozen=True)
class Toolchain:
    gcc: Path
    qemu: Path
    addr2line: Path | None
    nm: Path | None
    plugin: Path | None

    def require_plugin(self) -> Path:
        if self.plugin is None:
            raise ToolchainError(
                f"instruction-count plugin {plugin_path()} not built: run {SETUP_SCRIPT} (as root)"
            )
        return self.plugin


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


@dataclass(frozen=True)
class MemoryUsage:
    l1_used: int
    l1_bytes: int
    l2_used: int
    l2_bytes: int


def tinyodl_home() -> Path:
    return Path(os.environ.get("TINYODL_HOME", Path.home() / ".cache" / "tinyodl"))


def plugin_path() -> Path:
    return tinyodl_home() / PLUGIN_NAME


def _which(name: str) -> Path | None:
    found = shutil.which(name)
    return Path(found) if found else None


def _picolibc_specs(gcc: Path) -> Path | None:
    """gcc prints the bare name back when it cannot find the file in its search path."""
    printed = subprocess.run(
        [str(gcc), "-print-file-name=picolibc.specs"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return Path(printed) if os.sep in printed and Path(printed).is_file() else None


def find_toolchain(need_plugin: bool = True) -> Toolchain:
    gcc = _which(GCC)
    if gcc is None:
        raise ToolchainError(f"{GCC} not found: apt-get install gcc-riscv64-unknown-elf (or run {SETUP_SCRIPT})")
    if _picolibc_specs(gcc) is None:
        raise ToolchainError(
            f"picolibc for {GCC} not found: apt-get install picolibc-riscv64-unknown-elf (or run {SETUP_SCRIPT})"
        )
    qemu = _which(QEMU)
    if qemu is None:
        raise ToolchainError(f"{QEMU} not found: apt-get install qemu-system-misc (or run {SETUP_SCRIPT})")
    _refresh_plugin()
    plugin = plugin_path() if plugin_path().is_file() else None
    toolchain = Toolchain(gcc=gcc, qemu=qemu, addr2line=_which(ADDR2LINE), nm=_which(NM), plugin=plugin)
    if need_plugin:
        toolchain.require_plugin()
    return toolchain


def plugin_source_hash() -> str:
    """sha256 of what the plugin is built from (its source, then qemu-plugin.h), as setup.sh computes it."""
    digest = hashlib.sha256(PLUGIN_SOURCE.read_bytes())
    header = tinyodl_home() / "qemu-plugin.h"
    if header.is_file():
        digest.update(header.read_bytes())
    return digest.hexdigest()


def plugin_hash_path() -> Path:
    """Where the hash of the sources the plugin was built from is kept, beside the plugin."""
    return plugin_path().with_name(f"{PLUGIN_NAME}.sha256")


def plugin_is_current() -> bool:
    """Staleness by content, not file times: a fresh clone's sources are all newer than a cached plugin."""
    stamp = plugin_hash_path()
    return plugin_path().is_file() and stamp.is_file() and stamp.read_text().strip() == plugin_source_hash()


def _refresh_plugin() -> None:
    """Rebuilds the plugin when it was built from other sources (e.g. after a pull), so counts never come
    from an outdated model. Needs the header that setup.sh fetched; otherwise does nothing."""
    plugin, header = plugin_path(), tinyodl_home() / "qemu-plugin.h"
    host_cc = _which("gcc") or _which("cc")
    if not (plugin.is_file() and header.is_file() and PLUGIN_SOURCE.is_file() and host_cc):
        return
    if plugin_is_current():
        return
    scratch = plugin.with_name(f"{plugin.name}.{os.getpid()}.tmp")
    completed = subprocess.run(
        [str(host_cc), "-std=c11", "-O2", "-Wall", "-fPIC", "-shared", "-I", str(header.parent),
         "-o", str(scratch), str(PLUGIN_SOURCE)],
        capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        scratch.unlink(missing_ok=True)
        raise ToolchainError(
            f"rebuilding {plugin} failed: {_first_error_line(completed.stderr)} (run {SETUP_SCRIPT})"
        )
    os.replace(scratch, plugin)
    plugin_hash_path().write_text(plugin_source_hash() + "\n")


# ---- building ---------------------------------------------------------------------------------------


def render_linker_script(l1_bytes: int, l2_bytes: int, stack_bytes: int, num_cores: int,
                         platform: str = "qemu") -> str:
    """The linker script for a target with these memory sizes on `platform` (see runtime/c/link.ld.j2)."""
    if platform not in PLATFORMS:
        raise ValueError(f"no runtime for platform {platform!r} (platforms: {', '.join(PLATFORMS)})")
    if l1_bytes <= 0 or l2_bytes <= 0:
        raise ValueError(f"L1 and L2 sizes must be positive (l1_bytes={l1_bytes}, l2_bytes={l2_bytes})")
    l1_origin_offset = -(-l2_bytes // L1_ALIGN_BYTES) * L1_ALIGN_BYTES
    if platform == "qemu" and l1_origin_offset + l1_bytes > USABLE_DRAM_BYTES:
        raise ValueError(
            f"L2 ({l2_bytes} B) + L1 ({l1_bytes} B) exceed the {USABLE_DRAM_BYTES} B usable in QEMU's "
            f"{QEMU_DRAM_BYTES // (1024 * 1024)} MiB"
        )
    if stack_bytes <= 0 or stack_bytes % 16:
        raise ValueError(f"stack_bytes must be a positive multiple of 16, got {stack_bytes}")
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(RUNTIME_C_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    template = environment.get_template("link.ld.j2")
    return template.render(l1_bytes=l1_bytes, l2_bytes=l2_bytes, stack_bytes=stack_bytes, num_cores=num_cores,
                           platform=platform)


def _first_error_line(log: str) -> str:
    lines = [TOOL_PATH_PREFIX.sub(r"\1:", line.strip()) for line in log.splitlines() if line.strip()]
    # collect2's "ld returned 1 exit status" only summarises the linker's own message
    specific = [line for line in lines if not line.startswith("collect2:")]
    for line in specific:
        if ERROR_LINE.search(line):
            return line
    for line in specific:
        if line.startswith("ld:") and "warning:" not in line and not line.endswith(":"):
            return line
    return lines[0] if lines else "build failed without output"


def _run_tool(command: Sequence[str], cwd: Path | None = None) -> None:
    completed = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        log = completed.stdout + completed.stderr
        raise BuildError(_first_error_line(log), log)


def _define_flags(defines: Mapping[str, object]) -> list[str]:
    return [f"-D{name}" if value is None else f"-D{name}={value}" for name, value in defines.items()]


def compile_and_link(
    sources: Iterable[Path],
    out_elf: Path,
    defines: Mapping[str, object] | None = None,
    include_dirs: Iterable[Path] = (),
    l1_bytes: int = 128 * 1024,
    l2_bytes: int = 64 * 1024 * 1024,
    cores: int = 8,
    stack_bytes: int = 8192,
    extra_cflags: Sequence[str] = (),
    toolchain: Toolchain | None = None,
    platform: str = "qemu",
) -> Path:
    """Compiles the runtime plus `sources` for the target and links `out_elf`.

    Objects and the rendered ``link.ld`` go to ``<out_elf without suffix>.build/``. RT_NUM_CORES and
    RT_STACK_BYTES are set from `cores` and `stack_bytes`, RT_PLATFORM_GVSOC from `platform`; `defines` may
    add or override others (value None gives a bare ``-DNAME``). Raises BuildError with the first error line.
    """
    tools = toolchain or find_toolchain(need_plugin=False)
    out_elf = Path(out_elf)
    build_dir = out_elf.with_suffix(".build")
    build_dir.mkdir(parents=True, exist_ok=True)
    linker_script = build_dir / "link.ld"
    linker_script.write_text(render_linker_script(l1_bytes, l2_bytes, stack_bytes, cores, platform))

    all_defines: dict[str, object] = {"RT_NUM_CORES": cores, "RT_STACK_BYTES": stack_bytes}
    if platform == "gvsoc":
        all_defines["RT_PLATFORM_GVSOC"] = 1
    all_defines.update(defines or {})
    includes = [f"-I{path}" for path in (RUNTIME_C_DIR, *include_dirs)]
    compile_flags = [
        *COMPILE_ARCH_FLAGS, *COMMON_FLAGS, *COMPILE_ONLY_FLAGS, *_define_flags(all_defines), *includes,
        *extra_cflags,
    ]
    all_sources = [*RUNTIME_SOURCES, *(Path(source) for source in sources)]
    objects = [build_dir / f"{index:02d}_{source.stem}.o" for index, source in enumerate(all_sources)]
    commands = [
        [str(tools.gcc), *compile_flags, "-c", str(source), "-o", str(obj)]
        for source, obj in zip(all_sources, objects, strict=True)
    ]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for future in [pool.submit(_run_tool, command) for command in commands]:
            future.result()
    _run_tool([
        str(tools.gcc), *LINK_ARCH_FLAGS, *COMMON_FLAGS, *LINK_FLAGS, "-T", str(linker_script),
        *(str(obj) for obj in objects), "-o", str(out_elf), "-lm",
    ])
    return out_elf


def build(project_dir: Path, target: str = "all", cache: bool = True) -> Path:
    """Runs ``make <target>`` in a generated project and returns the newest ELF it holds.

    Objects of the model-independent sources (kernels/, runtime/) are cached in TINYODL_HOME, keyed by
    the exact compile command and the contents of the source and of every header it may include, so
    repeated builds compile only the model's own files.
    """
    project_dir = Path(project_dir)
    if _which("make") is None:
        raise ToolchainError("make not found: apt-get install make")
    planned = _planned_compiles(project_dir, target) if cache else {}
    cache_dir = tinyodl_home() / "objcache"
    for obj, key in planned.items():
        cached = cache_dir / f"{key}.o"
        if cached.is_file():
            (project_dir / obj).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached, project_dir / obj)
    try:
        _run_tool(["make", "-C", str(project_dir), f"-j{os.cpu_count() or 1}", target])
    except BuildError as exc:
        raise BuildError(_name_the_l2_budget(exc.first_error, project_dir / "link.ld"), exc.log) from None
    for obj, key in planned.items():
        _store_atomic(project_dir / obj, cache_dir / f"{key}.o")
    elves = sorted(project_dir.rglob("*.elf"), key=lambda path: path.stat().st_mtime, reverse=True)
    if not elves:
        raise BuildError(f"make {target} in {project_dir} produced no .elf file", "")
    return elves[0]


def _name_the_l2_budget(message: str, linker_script: Path) -> str:
    """ld's "region `L2' overflowed by N bytes" as a line that names the L2 budget the script was made for."""
    overflow = L2_OVERFLOW.search(message)
    budget = LINKER_L2_BYTES.search(linker_script.read_text()) if overflow and linker_script.is_file() else None
    if overflow is None or budget is None:
        return message
    l2_bytes, extra = int(budget["bytes"]), int(overflow["bytes"])
    return (f"L2 overflow: code, data, stacks and the L2 arena need {l2_bytes + extra} bytes, {extra} more than "
            f"the L2 budget of {l2_bytes} bytes (--l2 or the platform's L2)")


_COMPILE_LINE = re.compile(r"\s-c\s+-o\s+(?P<obj>\S+\.o)\s+(?P<src>(?:kernels|runtime)/\S+\.[cS])\s*$")


def _planned_compiles(project_dir: Path, target: str) -> dict[str, str]:
    """Object -> cache key for each cacheable compile that `make` would run."""
    dry = subprocess.run(["make", "-n", "-C", str(project_dir), target], capture_output=True, text=True,
                         check=False)
    if dry.returncode != 0:
        return {}
    headers = b"".join(path.name.encode() + path.read_bytes()
                       for folder in ("kernels", "runtime") for path in sorted((project_dir / folder).glob("*.h")))
    planned = {}
    for line in dry.stdout.splitlines():
        match = _COMPILE_LINE.search(line)
        if match is None or not (project_dir / match["src"]).is_file():
            continue
        digest = hashlib.sha256(line.encode() + b"\0" + (project_dir / match["src"]).read_bytes() + b"\0" + headers)
        planned[match["obj"]] = digest.hexdigest()
    return planned


def _store_atomic(source: Path, destination: Path) -> None:
    if not source.is_file() or destination.is_file():
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=destination.parent, suffix=".tmp")
    os.close(handle)
    try:
        shutil.copyfile(source, temp)
        os.replace(temp, destination)
    except OSError:
        Path(temp).unlink(missing_ok=True)


def memory_usage(elf: Path, toolchain: Toolchain | None = None) -> MemoryUsage:
    """Static L1/L2 use of a linked program, read from the linker-script symbols."""
    tools = toolchain or find_toolchain(need_plugin=False)
    if tools.nm is None:
        raise ToolchainError(f"{NM} not found: apt-get install binutils-riscv64-unknown-elf")
    symbols = _symbol_table(tools.nm, elf)
    wanted = ("__l1_start", "__l1_end", "__l1_region_end", "__l2_start", "__l2_end", "__l2_region_end")
    missing = [name for name in wanted if name not in symbols]
    if missing:
        raise BuildError(f"{elf} was not linked with the tinyodl linker script (no {missing[0]})", "")
    return MemoryUsage(
        l1_used=symbols["__l1_end"] - symbols["__l1_start"],
        l1_bytes=symbols["__l1_region_end"] - symbols["__l1_start"],
        l2_used=symbols["__l2_end"] - symbols["__l2_start"],
        l2_bytes=symbols["__l2_region_end"] - symbols["__l2_start"],
    )


def _symbol_table(nm: Path, elf: Path) -> dict[str, int]:
    listing = subprocess.run([str(nm), str(elf)], capture_output=True, text=True, check=False).stdout
    symbols: dict[str, int] = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 3:
            symbols[parts[2]] = int(parts[0], 16)
    return symbols


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
    symbols = _symbol_table(toolchain.nm, elf)
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
        for name, value in _symbol_table(toolchain.nm, elf).items():
            if value <= address and (best is None or value > best[0]) and not name.startswith("__"):
                best = (value, name)
        if best is not None:
            return f"{best[1]}+0x{address - best[0]:x}"
    return None


# ---- diagnostics ------------------------------------------------------------------------------------


def _version_line(command: Sequence[str]) -> str:
    try:
        output = subprocess.run(list(command), capture_output=True, text=True, check=False, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    return output.splitlines()[0] if output else "no version output"


def doctor() -> list[tuple[str, bool, str]]:
    """(check, ok, detail) for each piece `tinyodl doctor` reports."""
    checks: list[tuple[str, bool, str]] = []
    gcc = _which(GCC)
    checks.append((GCC, gcc is not None,
                   _version_line([str(gcc), "--version"]) if gcc else "apt-get install gcc-riscv64-unknown-elf"))
    specs = _picolibc_specs(gcc) if gcc else None
    checks.append(("picolibc", specs is not None,
                   str(specs) if specs else "apt-get install picolibc-riscv64-unknown-elf"))
    qemu = _which(QEMU)
    checks.append((QEMU, qemu is not None,
                   _version_line([str(qemu), "--version"]) if qemu else "apt-get install qemu-system-misc"))
    plugin = plugin_path()
    if not plugin.is_file():
        checks.append(("instruction-count plugin", False, f"{plugin} missing: run {SETUP_SCRIPT} as root"))
    elif PLUGIN_SOURCE.is_file() and not plugin_is_current():
        checks.append(("instruction-count plugin", False,
                       f"{plugin} was built from other sources than {PLUGIN_SOURCE.name} and qemu-plugin.h now hold "
                       f"(content hash in {plugin_hash_path().name}): run {SETUP_SCRIPT}"))
    else:
        checks.append(("instruction-count plugin", True, str(plugin)))
    return checks

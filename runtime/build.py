"""Building guest programs: the linker script, compiling and linking the runtime with sources, `make` in a
generated project (with a cache of the model-independent objects), and the memory a program uses."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from tinyodl.runtime.toolchain import (
    NM,
    PLATFORMS,
    RUNTIME_C_DIR,
    RUNTIME_SOURCES,
    Toolchain,
    ToolchainError,
    find_toolchain,
    first_error_line,
    tinyodl_home,
    which,
)

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
L2_OVERFLOW = re.compile(r"region `L2' overflowed by (?P<bytes>\d+) bytes")
LINKER_L2_BYTES = re.compile(r"\bl2_bytes=(?P<bytes>\d+)")  # the generated linker script's header names it


class BuildError(RuntimeError):
    """Compiling or linking failed. ``str(error)`` is the first error line, ``log`` the full output."""

    def __init__(self, first_error: str, log: str) -> None:
        super().__init__(first_error)
        self.first_error = first_error
        self.log = log


@dataclass(frozen=True)
class MemoryUsage:
    l1_used: int
    l1_bytes: int
    l2_used: int
    l2_bytes: int


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


def _run_tool(command: Sequence[str], cwd: Path | None = None) -> None:
    completed = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        log = completed.stdout + completed.stderr
        raise BuildError(first_error_line(log), log)


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
    if which("make") is None:
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
    symbols = symbol_table(tools.nm, elf)
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


def symbol_table(nm: Path, elf: Path) -> dict[str, int]:
    listing = subprocess.run([str(nm), str(elf)], capture_output=True, text=True, check=False).stdout
    symbols: dict[str, int] = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 3:
            symbols[parts[2]] = int(parts[0], 16)
    return symbols

"""Finding the tools: the RISC-V GCC with picolibc, QEMU and tinyodl's instruction-count plugin (rebuilt
when its sources change), and what `tinyodl doctor` reports of them."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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

# "/usr/lib/gcc/.../bin/ld: region `L1' overflowed" -> "ld: region `L1' overflowed"
TOOL_PATH_PREFIX = re.compile(r"^/\S*/(ld|as|collect2|cc1):")
ERROR_LINE = re.compile(r"\berror\b|overflowed|undefined reference|cannot find|No rule to make", re.IGNORECASE)


class ToolchainError(RuntimeError):
    """A tool needed to build or simulate is missing; the message says what to install."""



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



def tinyodl_home() -> Path:
    return Path(os.environ.get("TINYODL_HOME", Path.home() / ".cache" / "tinyodl"))


def plugin_path() -> Path:
    return tinyodl_home() / PLUGIN_NAME


def which(name: str) -> Path | None:
    found = shutil.which(name)
    return Path(found) if found else None


def _picolibc_specs(gcc: Path) -> Path | None:
    """gcc prints the bare name back when it cannot find the file in its search path."""
    printed = subprocess.run(
        [str(gcc), "-print-file-name=picolibc.specs"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return Path(printed) if os.sep in printed and Path(printed).is_file() else None


def find_toolchain(need_plugin: bool = True) -> Toolchain:
    gcc = which(GCC)
    if gcc is None:
        raise ToolchainError(f"{GCC} not found: apt-get install gcc-riscv64-unknown-elf (or run {SETUP_SCRIPT})")
    if _picolibc_specs(gcc) is None:
        raise ToolchainError(
            f"picolibc for {GCC} not found: apt-get install picolibc-riscv64-unknown-elf (or run {SETUP_SCRIPT})"
        )
    qemu = which(QEMU)
    if qemu is None:
        raise ToolchainError(f"{QEMU} not found: apt-get install qemu-system-misc (or run {SETUP_SCRIPT})")
    _refresh_plugin()
    plugin = plugin_path() if plugin_path().is_file() else None
    toolchain = Toolchain(gcc=gcc, qemu=qemu, addr2line=which(ADDR2LINE), nm=which(NM), plugin=plugin)
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
    host_cc = which("gcc") or which("cc")
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
            f"rebuilding {plugin} failed: {first_error_line(completed.stderr)} (run {SETUP_SCRIPT})"
        )
    os.replace(scratch, plugin)
    plugin_hash_path().write_text(plugin_source_hash() + "\n")



def first_error_line(log: str) -> str:
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
    gcc = which(GCC)
    checks.append((GCC, gcc is not None,
                   _version_line([str(gcc), "--version"]) if gcc else "apt-get install gcc-riscv64-unknown-elf"))
    specs = _picolibc_specs(gcc) if gcc else None
    checks.append(("picolibc", specs is not None,
                   str(specs) if specs else "apt-get install picolibc-riscv64-unknown-elf"))
    qemu = which(QEMU)
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

"""Host side of the runtime in one import: finding the tools (`toolchain.py`), building guest programs
(`build.py`) and running them in QEMU (`qemu.py`; GVSoC's counterpart is `gvsoc.py`, and
`simulators.py` puts both behind one interface).

The guest side lives in ``runtime/c`` (start-up, team, barrier, exit codes) and the per-hart
instruction counter in ``runtime/plugin`` (built by ``runtime/setup.sh``).
"""

from __future__ import annotations

from tinyodl.runtime.build import (
    COMMON_FLAGS,
    COMPILE_ARCH_FLAGS,
    COMPILE_ONLY_FLAGS,
    L1_ALIGN_BYTES,
    LINK_ARCH_FLAGS,
    LINK_FLAGS,
    QEMU_DRAM_BYTES,
    USABLE_DRAM_BYTES,
    BuildError,
    MemoryUsage,
    _planned_compiles,
    build,
    compile_and_link,
    memory_usage,
    render_linker_script,
    symbol_table,
)
from tinyodl.runtime.qemu import (
    EXIT_CHECK,
    EXIT_HART_COUNT,
    EXIT_HOST_TIMEOUT,
    EXIT_OK,
    EXIT_STACK,
    EXIT_TRAP,
    EXIT_WATCHDOG,
    RegionCount,
    RunResult,
    describe_failure,
    function_at,
    parse_counts,
    plugin_memory_arguments,
    qemu_command,
    qemu_harts,
    run_qemu,
    run_streaming,
    text_of,
)
from tinyodl.runtime.toolchain import (
    ADDR2LINE,
    GCC,
    NM,
    PLATFORMS,
    PLUGIN_NAME,
    PLUGIN_SOURCE,
    QEMU,
    RUNTIME_C_DIR,
    RUNTIME_DIR,
    RUNTIME_SOURCES,
    SETUP_SCRIPT,
    Toolchain,
    ToolchainError,
    doctor,
    find_toolchain,
    first_error_line,
    plugin_hash_path,
    plugin_is_current,
    plugin_path,
    plugin_source_hash,
    tinyodl_home,
)

__all__ = [
    "ADDR2LINE", "COMMON_FLAGS", "COMPILE_ARCH_FLAGS", "COMPILE_ONLY_FLAGS", "EXIT_CHECK", "EXIT_HART_COUNT",
    "EXIT_HOST_TIMEOUT", "EXIT_OK", "EXIT_STACK", "EXIT_TRAP", "EXIT_WATCHDOG", "GCC", "L1_ALIGN_BYTES",
    "LINK_ARCH_FLAGS", "LINK_FLAGS", "NM", "PLATFORMS", "PLUGIN_NAME", "PLUGIN_SOURCE", "QEMU", "QEMU_DRAM_BYTES",
    "RUNTIME_C_DIR", "RUNTIME_DIR", "RUNTIME_SOURCES", "SETUP_SCRIPT", "USABLE_DRAM_BYTES", "BuildError",
    "MemoryUsage", "RegionCount", "RunResult", "Toolchain", "ToolchainError", "_planned_compiles", "build",
    "compile_and_link", "describe_failure", "doctor", "find_toolchain", "first_error_line", "function_at",
    "memory_usage", "parse_counts", "plugin_hash_path", "plugin_is_current", "plugin_memory_arguments",
    "plugin_path", "plugin_source_hash", "qemu_command", "qemu_harts", "render_linker_script", "run_qemu",
    "run_streaming", "symbol_table", "text_of", "tinyodl_home",
]

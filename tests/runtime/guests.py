"""Building the guest programs of tests/runtime/guest/ for the runtime tests."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path


def _import_host() -> types.ModuleType:
    """tinyodl.runtime.host, also when the repository is not pip-installed."""
    try:
        return importlib.import_module("tinyodl.runtime.host")
    except ModuleNotFoundError:
        repo_root = Path(__file__).resolve().parents[2]
        package = types.ModuleType("tinyodl")
        package.__path__ = [str(repo_root)]
        sys.modules.setdefault("tinyodl", package)
        return importlib.import_module("tinyodl.runtime.host")


host = _import_host()
GUEST_DIR = Path(__file__).parent / "guest"
RUN_TIMEOUT_S = 30.0


def build_guest(
    tmp_path: Path, toolchain: host.Toolchain, name: str, cores: int = 8, **options: object
) -> Path:
    """guest/<name>.c with the runtime for `cores` cores: upper-case options are -D defines, the others
    compile_and_link's size arguments (l1_bytes, l2_bytes, ...)."""
    defines = {key: value for key, value in options.items() if key.isupper()}
    sizes = {key: value for key, value in options.items() if not key.isupper()}
    suffix = "_".join(f"{key}{value}" for key, value in sorted(defines.items()))
    return host.compile_and_link(
        [GUEST_DIR / f"{name}.c"], tmp_path / f"{name}_{cores}_{suffix}.elf", defines=defines,
        cores=cores, toolchain=toolchain, **sizes,  # type: ignore[arg-type]
    )

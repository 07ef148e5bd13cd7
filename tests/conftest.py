from __future__ import annotations

import pytest

from tinyodl.runtime import host


@pytest.fixture(scope="session")
def toolchain() -> host.Toolchain:
    """The RISC-V toolchain with the instruction-count plugin; tests that need it skip without it."""
    try:
        return host.find_toolchain(need_plugin=True)
    except host.ToolchainError as exc:
        pytest.skip(f"RISC-V toolchain not available: {exc}")

from __future__ import annotations

import pytest

from tinyodl.runtime import host


@pytest.fixture(scope="session")
def toolchain() -> host.Toolchain:
    try:
        return host.find_toolchain(need_plugin=True)
    except host.ToolchainError as exc:
        pytest.skip(f"simulator toolchain missing: {exc}")

from __future__ import annotations

import pytest

from tinyodl.backend_c import project
from tinyodl.runtime import host


@pytest.fixture(scope="session")
def toolchain() -> host.Toolchain:
    """The RISC-V toolchain with the instruction-count plugin; tests that need it skip without it."""
    try:
        return host.find_toolchain(need_plugin=True)
    except host.ToolchainError as exc:
        pytest.skip(f"RISC-V toolchain not available: {exc}")


@pytest.fixture
def without_input_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Projects rendered while this is active have the tile loop's wait for a tile's inputs dropped from the
    runtime, so that a checking build's kernels read poisoned inputs (the planted DMA bug)."""
    original = project.render_project

    def render(*args, **kwargs):  # type: ignore[no-untyped-def]
        program, files = original(*args, **kwargs)
        source = files["runtime/tile.c"]
        assert "rt_dma_wait(loaded);" in source
        files["runtime/tile.c"] = source.replace("rt_dma_wait(loaded);", "(void)loaded;")
        return program, files

    monkeypatch.setattr(project, "render_project", render)

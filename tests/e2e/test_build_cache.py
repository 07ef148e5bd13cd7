"""The object cache of model-independent sources: keyed by command, source and headers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tinyodl.runtime import host

pytestmark = pytest.mark.qemu
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _project(tmp_path: Path, name: str, cores: int = 2) -> Path:
    out = tmp_path / name
    subprocess.run([sys.executable, "-m", "tinyodl", "compile", str(EXAMPLES / "mlp.onnx"), "-o", str(out),
                    "--cores", str(cores)], check=True, capture_output=True, timeout=300)
    return out


def test_cached_build_gives_the_same_program(tmp_path: Path, toolchain, monkeypatch) -> None:
    monkeypatch.setenv("TINYODL_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / host.PLUGIN_NAME).symlink_to(toolchain.require_plugin())
    first = host.build(_project(tmp_path, "a"))
    assert list((tmp_path / "home" / "objcache").glob("*.o"))
    second = host.build(_project(tmp_path, "b"))
    objcopy = str(toolchain.gcc).replace("gcc", "objcopy")
    for elf in (first, second):  # debug info names the build directory; the program itself must not differ
        subprocess.run([objcopy, "--strip-debug", str(elf), str(elf) + ".stripped"], check=True)
    assert Path(str(first) + ".stripped").read_bytes() == Path(str(second) + ".stripped").read_bytes()


def test_keys_follow_sources_headers_and_flags(tmp_path: Path, toolchain) -> None:
    project = _project(tmp_path, "a")
    keys = host._planned_compiles(project, "all")
    assert any(obj.startswith("build/kernels/") for obj in keys)
    assert not any(obj.startswith("build/src/") for obj in keys)  # the model's own files are never cached
    (project / "kernels" / "tinyodl_kernels.h").write_text(
        (project / "kernels" / "tinyodl_kernels.h").read_text() + "\n/* changed */\n")
    changed = host._planned_compiles(project, "all")
    assert all(changed[obj] != keys[obj] for obj in keys)
    other_cores = host._planned_compiles(_project(tmp_path, "c", cores=4), "all")
    assert other_cores["build/runtime/rt.o"] != keys["build/runtime/rt.o"]

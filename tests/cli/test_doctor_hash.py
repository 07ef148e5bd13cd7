"""`tinyodl doctor` decides plugin staleness by the content hash of its sources, not by file times."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tinyodl.runtime import host


def _plugin_row() -> tuple[bool, str]:
    rows = [(ok, detail) for what, ok, detail in host.doctor() if what == "instruction-count plugin"]
    assert len(rows) == 1
    return rows[0]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TINYODL_HOME", str(tmp_path))
    (tmp_path / "qemu-plugin.h").write_text("/* a header */\n")
    (tmp_path / host.PLUGIN_NAME).write_bytes(b"\x7fELF built plugin")
    return tmp_path


def test_hash_is_the_one_setup_sh_computes(home: Path) -> None:
    expected = hashlib.sha256(host.PLUGIN_SOURCE.read_bytes() + (home / "qemu-plugin.h").read_bytes()).hexdigest()
    assert host.plugin_source_hash() == expected
    # setup.sh's own pipeline on the same files gives the same digest
    shell = subprocess.run(["bash", "-c", 'cat "$1" "$2" | sha256sum | cut -d" " -f1', "_",
                            str(host.PLUGIN_SOURCE), str(home / "qemu-plugin.h")],
                           capture_output=True, text=True, check=True)
    assert shell.stdout.strip() == expected


def test_old_file_times_with_matching_hash_are_current(home: Path) -> None:
    """A fresh clone: the sources are newer than the cached plugin, but its contents are what it was built from."""
    plugin = home / host.PLUGIN_NAME
    os.utime(plugin, (0, 0))
    host.plugin_hash_path().write_text(host.plugin_source_hash() + "\n")
    assert plugin.stat().st_mtime < host.PLUGIN_SOURCE.stat().st_mtime
    ok, detail = _plugin_row()
    assert ok, detail


def test_other_sources_are_stale_whatever_the_times(home: Path) -> None:
    host.plugin_hash_path().write_text("0" * 64 + "\n")
    os.utime(home / host.PLUGIN_NAME, None)  # newer than the source: times would call it current
    ok, detail = _plugin_row()
    assert not ok
    assert "content hash" in detail and "setup.sh" in detail


def test_a_plugin_without_a_hash_is_stale(home: Path) -> None:
    ok, detail = _plugin_row()
    assert not ok and "content hash" in detail


def test_a_changed_header_makes_it_stale(home: Path) -> None:
    host.plugin_hash_path().write_text(host.plugin_source_hash() + "\n")
    assert host.plugin_is_current()
    (home / "qemu-plugin.h").write_text("/* another QEMU's header */\n")
    assert not host.plugin_is_current()

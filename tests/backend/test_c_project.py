"""The C project writer: what it replaces, its identifiers and its files (no toolchain needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyodl.backend_c.project import write_project
from tinyodl.driver import TrainingOptions, UserError, build_training_graph
from tinyodl.simulate import load_batches

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _mlp_project(out: Path) -> None:
    options = TrainingOptions()
    graph = build_training_graph(EXAMPLES / "mlp.onnx", options)
    write_project(graph, load_batches(graph, None, 1), options, out)


def test_refuses_to_replace_a_directory_that_is_not_a_project(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me\n")
    with pytest.raises(UserError, match="not a tinyodl project"):
        _mlp_project(out)
    assert (out / "thesis.tex").read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_replaces_an_earlier_project_and_fills_an_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "build"
    out.mkdir()
    _mlp_project(out)
    (out / "src" / "stale.c").write_text("/* from an older run */\n")
    _mlp_project(out)
    assert (out / "regions.json").is_file() and not (out / "src" / "stale.c").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_output_directory_given_as_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "build"
    _mlp_project(out)
    monkeypatch.chdir(out)
    _mlp_project(Path("."))
    assert (out / "regions.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_project_directory_gets_the_usual_permissions(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    _mlp_project(tmp_path / "build")
    assert (tmp_path / "build").stat().st_mode == plain.stat().st_mode

"""The C project writer: what it replaces, its identifiers and its files (no toolchain needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinyodl.backend_c.output import MANIFEST
from tinyodl.driver.data import load_batches
from tinyodl.driver.files import write_c_project
from tinyodl.driver.options import Options, UserError
from tinyodl.driver.pipeline import build_training_graph

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _mlp_project(out: Path, force: bool = False) -> None:
    options = Options()
    graph = build_training_graph(EXAMPLES / "mlp.onnx", options)
    write_c_project(graph, load_batches(graph, None, 1), options, out, force=force)


def test_refuses_to_replace_a_directory_that_is_not_a_project(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me\n")
    with pytest.raises(UserError, match="not a tinyodl project.*--force"):
        _mlp_project(out)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_force_adds_the_project_to_a_directory_and_keeps_its_files(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    (out / "src").mkdir(parents=True)
    (out / "thesis.tex").write_text("keep me\n")
    (out / "src" / "main.c").write_text("/* an older main */\n")
    _mlp_project(out, force=True)
    assert (out / "thesis.tex").read_text() == "keep me\n"
    assert "network_train_step" in (out / "src" / "main.c").read_text()
    assert "thesis.tex" not in _manifest(out) and "src/main.c" in _manifest(out)
    _mlp_project(out)  # a project now: no --force needed, and still the user's file stays
    assert (out / "thesis.tex").read_text() == "keep me\n"


def _manifest(out: Path) -> list[str]:
    return [line for line in (out / MANIFEST).read_text().splitlines() if not line.startswith("#")]


def test_recompiling_replaces_only_what_tinyodl_wrote(tmp_path: Path) -> None:
    out = tmp_path / "build"
    out.mkdir()
    _mlp_project(out)
    written = _manifest(out)
    assert written == sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != MANIFEST)
    (out / "notes.txt").write_text("mine\n")
    (out / "src" / "extra.c").write_text("/* mine */\n")
    (out / "src" / "main.c").write_text("/* edited */\n")
    (out / "kernels" / "old").mkdir()
    (out / "kernels" / "old" / "gone.c").write_text("/* an older tinyodl wrote this */\n")
    (out / MANIFEST).write_text((out / MANIFEST).read_text() + "kernels/old/gone.c\n")
    _mlp_project(out)
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "src" / "extra.c").read_text() == "/* mine */\n"
    assert "network_train_step" in (out / "src" / "main.c").read_text()
    assert not (out / "kernels" / "old").exists() and _manifest(out) == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]
    assert not [p for p in out.iterdir() if p.name.startswith(".tinyodl-staging")]


def test_a_file_of_the_user_at_a_project_path_is_kept_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "build"
    _mlp_project(out)
    (out / MANIFEST).write_text("\n".join(line for line in (out / MANIFEST).read_text().splitlines()
                                         if line != "README.md") + "\n")
    (out / "README.md").write_text("my own notes\n")
    with pytest.raises(UserError, match="README.md: not written by tinyodl"):
        _mlp_project(out)
    assert (out / "README.md").read_text() == "my own notes\n"
    _mlp_project(out, force=True)
    assert "tinyodl" in (out / "README.md").read_text() and "README.md" in _manifest(out)


@pytest.mark.parametrize("line", ["../outside.txt", "/etc/hostname", "src/../../outside.txt"])
def test_a_damaged_manifest_is_refused(tmp_path: Path, line: str) -> None:
    out = tmp_path / "build"
    _mlp_project(out)
    (tmp_path / "outside.txt").write_text("keep\n")
    (out / MANIFEST).write_text(f"{line}\n")
    with pytest.raises(UserError, match="damaged"):
        _mlp_project(out)
    assert (tmp_path / "outside.txt").read_text() == "keep\n"


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


def _colliding_names_model(path: Path) -> Path:
    """Names whose C identifiers meet the templates' derived ones: x / x_data, w / w_init."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w", "w_init"], ["y"], name="g", transB=1),
             helper.make_node("Add", ["y", "x_data"], ["out"], name="a")]
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("w_init", (4,)), ("w", (4, 5)))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x_data", TensorProto.FLOAT, [2, 4]),
                                           helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a host C compiler for -fsyntax-only")
def test_names_that_meet_derived_identifiers_compile(tmp_path: Path) -> None:
    options = Options(loss="mse")
    graph = build_training_graph(_colliding_names_model(tmp_path / "collide.onnx"), options)
    out = tmp_path / "build"
    write_c_project(graph, load_batches(graph, None, 1), options, out)
    _assert_compiles(out)


def _assert_compiles(project: Path) -> None:
    for source in ("src/network.c", "src/main.c"):
        result = subprocess.run(["gcc", "-fsyntax-only", "-std=gnu11", "-DRT_NUM_CORES=8", "-DRT_STACK_BYTES=16384",
                                 "-Iruntime", "-Ikernels", "-Isrc", source], cwd=project, capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a host C compiler for -fsyntax-only")
def test_clip_without_a_maximum_compiles(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Clip", ["r", "lo"], ["out"], name="clip_min")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4])],
                              [numpy_helper.from_array(np.array(-0.5, np.float32), "lo")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "clip.onnx")
    options = Options(loss="mse", train="none")  # nothing to train: its one initializer is a Clip bound
    graph_ir = build_training_graph(tmp_path / "clip.onnx", options)
    write_c_project(graph_ir, load_batches(graph_ir, None, 1), options, tmp_path / "build")
    assert "INFINITY" in (tmp_path / "build" / "src" / "network.c").read_text()
    _assert_compiles(tmp_path / "build")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_run_passes_the_plugin_and_its_output_file(tmp_path: Path) -> None:
    _mlp_project(tmp_path / "build")
    result = subprocess.run(["make", "-n", "run", "PLUGIN=/opt/insn.so", "COUNTS=/tmp/counts.json"],
                            cwd=tmp_path / "build", capture_output=True, text=True)
    assert "-plugin file=/opt/insn.so,out=/tmp/counts.json" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize(("l1_bytes", "l2_bytes", "fragment"), [(0, 1 << 20, "L1"), (128 * 1024, -5, "L2"),
                                                                 (128 * 1024, 127 << 20, "exceed")])
def test_memory_budgets_the_simulator_cannot_hold(tmp_path: Path, l1_bytes: int, l2_bytes: int,
                                                  fragment: str) -> None:
    options = Options(l1_bytes=l1_bytes, l2_bytes=l2_bytes)
    with pytest.raises(UserError, match=fragment):  # the memory pass already refuses a negative L2 budget
        graph = build_training_graph(EXAMPLES / "mlp.onnx", options)
        write_c_project(graph, load_batches(graph, None, 1), options, tmp_path / "build")
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_build_flags_ignore_the_environment_but_not_the_command_line(tmp_path: Path) -> None:
    _mlp_project(tmp_path / "build")
    env = {**os.environ, "CFLAGS": "-march=nocona -DFROM_ENV"}  # what an activated conda environment sets
    dry = subprocess.run(["make", "-n"], cwd=tmp_path / "build", env=env, capture_output=True, text=True).stdout
    assert "FROM_ENV" not in dry and "-O2" in dry
    dry = subprocess.run(["make", "-n", "CFLAGS=-O1 -DMINE"], cwd=tmp_path / "build", env=env, capture_output=True,
                         text=True).stdout
    assert "-DMINE" in dry


@pytest.mark.skipif(shutil.which("riscv64-unknown-elf-gcc") is None or shutil.which("make") is None,
                    reason="needs the RISC-V GCC and make")
def test_make_builds_the_project_without_a_warning(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = tmp_path / "data.npz"
    np.savez(data, input=rng.standard_normal((6, 64)).astype(np.float32), target=rng.integers(0, 10, 6))
    options = Options(optimizer="adam", batch=2)
    graph = build_training_graph(EXAMPLES / "mlp.onnx", options)
    write_c_project(graph, load_batches(graph, data, 3), options, tmp_path / "build")
    result = subprocess.run(["make", "-j2"], cwd=tmp_path / "build", capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "warning" not in result.stderr.lower(), result.stderr
    assert (tmp_path / "build" / "build" / "network.elf").is_file()

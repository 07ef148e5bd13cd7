"""Model names that are hostile to C (empty once sanitised, keywords, the generated code's own identifiers,
Unicode, 5,000 characters) still give a project that compiles, with every comment on its own line."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

import tinyodl
from tinyodl.backend_c.names import KINDS, SymbolTable
from tinyodl.driver.data import load_batches
from tinyodl.driver.files import write_c_project
from tinyodl.driver.options import Options
from tinyodl.driver.pipeline import build_training_graph

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from zoo import conv_zoo, dense_zoo  # noqa: E402

HOSTILE = [
    '"', '""', "\\", "\\\\", "*/", "/*", "*\\", "\n", "\t\x01\x7f", "??/", "naïve", "层", "卷积层一", "Ω",
    "int", "for", "static", "main", "p", "t", "x", "k", "e", "i", "l2", "first", "t0", "rt_barrier",
    "tinyodl_l2_arena", "tinyodl_l1", "params", "state", "NULL", "INFINITY", "gemm", "relu", "network_init",
    "train_step_on_core", "__x", "_Bool", "9lives", "a.b", "a-b", "a b", "a_b", "a__b", "a_b_",
    "p_", "p__", "in_x", "k_x", "tl_x", "x_init", "x_data", "x_step_rows", "x" * 5000, "x" * 4999 + "y",
]


def _hostile(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every tensor and node name replaced by one of HOSTILE (cycling, made distinct by
    characters that sanitising drops)."""
    graph = model.graph
    tensors = [v.name for v in graph.input] + [t.name for t in graph.initializer]
    tensors += [o for node in graph.node for o in node.output]
    names = iter(_distinct(len(tensors) + len(graph.node)))
    mapping = {name: next(names) for name in dict.fromkeys(tensors)}
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = mapping[value.name]
    for tensor in graph.initializer:
        tensor.name = mapping[tensor.name]
    for node in graph.node:
        node.input[:] = [mapping[n] if n else n for n in node.input]
        node.output[:] = [mapping[n] for n in node.output]
        node.name = next(names)
    graph.name = "*/ model\n\\"
    onnx.checker.check_model(model)
    return model


def _distinct(count: int) -> list[str]:
    names = list(HOSTILE)
    while len(names) < count:
        names.append(HOSTILE[len(names) % len(HOSTILE)] + "é" * (len(names) // len(HOSTILE)))
    return names[:count]


def _hostile_model(tmp_path: Path, make=conv_zoo) -> Path:  # type: ignore[no-untyped-def]
    path = make(tmp_path / "plain.onnx")
    hostile = tmp_path / "hostile.onnx"
    onnx.save(_hostile(onnx.load(path)), hostile)
    return hostile


def _project(model: Path, out: Path, options: Options) -> Path:
    graph = build_training_graph(model, options)
    write_c_project(graph, load_batches(graph, None, 2), options, out)
    return out


def _compile_commands(project: Path) -> list[list[str]]:
    """The Makefile's own compile command of every C file of the project, made -fsyntax-only."""
    dry = subprocess.run(["make", "-n", "-B", "build/network.elf"], cwd=project, capture_output=True, text=True,
                         check=True).stdout
    commands = []
    for line in dry.splitlines():
        words = shlex.split(line)
        if "-c" in words and words[-1].endswith(".c"):
            at = words.index("-o")
            commands.append([w for w in words[:at] + words[at + 2:] if w != "-c"] + ["-fsyntax-only"])
    return commands


def _comment_spans(text: str) -> list[int]:
    """The number of lines each /* */ comment spans, outside string literals, in order of appearance."""
    spans = []
    for match in re.finditer(r'"(?:\\.|[^"\\\n])*"|/\*.*?\*/|/\*', text, re.S):
        token = match.group()
        if token.startswith("/*"):
            assert token.endswith("*/") and len(token) >= 4, "an unterminated comment"
            spans.append(token.count("\n") + 1)
    return spans


@pytest.mark.skipif(shutil.which("riscv64-unknown-elf-gcc") is None or shutil.which("make") is None,
                    reason="needs the RISC-V GCC and make")
@pytest.mark.parametrize(("make", "options"), [
    (conv_zoo, Options(l1_bytes=4096, momentum=0.9)),
    (conv_zoo, Options(tiling=False, optimizer="adam")),
    (dense_zoo, Options(loss="mse", optimizer="adamw")),
], ids=["conv-tiled", "conv-untiled-adam", "dense-adamw"])
def test_hostile_names_compile_without_warnings(tmp_path: Path, make, options: Options) -> None:  # type: ignore[no-untyped-def]
    plain = _project(make(tmp_path / "plain.onnx"), tmp_path / "plain", options)
    hostile = _project(_hostile_model(tmp_path, make), tmp_path / "hostile", options)
    commands = _compile_commands(hostile)
    assert any(c[-2] == "src/network.c" for c in commands) and any(c[-2] == "src/main.c" for c in commands)
    for command in commands:
        if command[-2].startswith("src/"):
            result = subprocess.run(command, cwd=hostile, capture_output=True, text=True)
            assert result.returncode == 0 and not result.stderr, f"{command[-2]}:\n{result.stderr[:4000]}"
    for path in sorted(hostile.rglob("*")):
        if path.suffix in (".c", ".h"):
            relative = path.relative_to(hostile)
            assert _comment_spans(path.read_text()) == _comment_spans((plain / relative).read_text()), relative
    for name in ("Makefile", "README.md"):  # the model's name there is one line too
        assert len((hostile / name).read_text().splitlines()) == len((plain / name).read_text().splitlines())


FIXED_INCLUDES = ["math.h", "stddef.h", "stdint.h", "string.h", "tinyodl_rt.h", "tinyodl_tile.h",
                  "tinyodl_kernels.h", "generic.h"]


@pytest.mark.skipif(shutil.which("riscv64-unknown-elf-gcc") is None or shutil.which("make") is None,
                    reason="needs the RISC-V GCC and make")
def test_no_fixed_identifier_has_the_form_of_a_generated_one(tmp_path: Path) -> None:
    """What the generated code includes (C library, runtime, kernels, with their macros) and the templates'
    own text declare no identifier `<kind>_...`, so a model name can never meet one."""
    project = _project(conv_zoo(tmp_path / "plain.onnx"), tmp_path / "plain", Options(l1_bytes=4096))
    (project / "src" / "fixed.c").write_text("".join(f"#include <{header}>\n" for header in FIXED_INCLUDES))
    command = next(c for c in _compile_commands(project) if c[-2] == "src/network.c")[:-2]
    text = ""
    for mode in (["-E"], ["-E", "-dM"]):
        text += subprocess.run(command + mode + ["src/fixed.c"], cwd=project, capture_output=True, text=True,
                               check=True).stdout
    templates = Path(tinyodl.__file__).parent / "backend_c" / "templates"
    for template in templates.glob("*.j2"):
        text += re.sub(r"{{.*?}}|{%.*?%}|{#.*?#}", " ", template.read_text(), flags=re.S)
    identifiers = set(re.findall(r"\b[A-Za-z_]\w*", text))
    assert len(identifiers) > 1000  # the C library's and the runtime's, not an empty preprocessing
    clashing = sorted(name for name in identifiers if name.split("_", 1)[0] in KINDS and "_" in name)
    assert not clashing


@pytest.mark.parametrize("names", [HOSTILE, ["a.b", "a-b", "a b", "a_b", "a__b", "_a_b_", "a_b_2", "a_b"],
                                   ["", "层", "\"", "x" * 5000, "x" * 5001]])
def test_stems_are_unique_and_non_empty(names: list[str]) -> None:
    symbols = SymbolTable()
    stems = [symbols.stem(name) for name in names]
    assert len(set(stems)) == len(stems)
    assert all(re.fullmatch(r"[A-Za-z0-9]+(_[A-Za-z0-9]+)*", stem) and len(stem) <= 48 for stem in stems), stems
    assert "naive" in stems or "naïve" not in names  # accents go, the letters stay


@pytest.mark.qemu
@pytest.mark.slow
def test_hostile_names_train_and_check(tmp_path: Path, toolchain) -> None:  # type: ignore[no-untyped-def]
    result = tinyodl.simulate(_hostile_model(tmp_path), steps=2, l1_bytes=4096, momentum=0.9)
    assert result.ok, result.check
    assert set(result.params) == {t.name for t in onnx.load(_hostile_model(tmp_path)).graph.initializer}

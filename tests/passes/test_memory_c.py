"""The memory plan in the generated program and on the command line: buffers at their planned offsets in
one L2 arena, initial values and data in .l3, gradients kept off-chip after their update; a plan or a
program over the L2 budget is one line, exit 2, nothing written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinyodl.backend_c.dataset import TrainingData
from tinyodl.backend_c.project import render_project
from tinyodl.driver.data import load_batches
from tinyodl.driver.options import Options
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.runtime import host

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def tinyodl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinyodl", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_every_buffer_sits_at_its_planned_offset_in_one_arena() -> None:
    options = Options(optimizer="adam")
    graph = build_training_graph(EXAMPLES / "lenet.onnx", options)
    plan = graph.memory_plan
    assert plan is not None
    program, files = render_project(graph, TrainingData.from_steps(load_batches(graph, None, 1).steps), options.target())
    network = files["src/network.c"]
    arena = re.search(r"static uint8_t tinyodl_l2_arena\[(\d+)\]", network)
    assert arena is not None and int(arena.group(1)) == program.arena_bytes <= plan.peak_bytes
    offsets = {v.name: v.l2_offset for v in graph.all_values()}
    placed = [b for b in program.buffers if b.alias_of is None]
    assert {b.value_name for b in placed} == {t.name for t in plan.tensors}
    for buffer in placed:
        assert buffer.offset == offsets[buffer.value_name]
        assert f"#define {buffer.symbol} (({buffer.ctype} *)(tinyodl_l2_arena + {buffer.offset}))" in network
    # No tensor of the step has a static array of its own: only the arena, the L1 scratchpad of the tile
    # loops and the gradients kept for the host remain.
    arrays = set(re.findall(r"^static (?:float|int|uint8_t) (\w+)\[", network, re.MULTILINE)) - {"tinyodl_l1"}
    assert arrays == {"tinyodl_l2_arena"} | {g.symbol for g in program.grads if g}
    for header, kind in (("src/params.h", "init"), ("src/data.h", "data")):
        declarations = [line for line in files[header].splitlines()
                        if re.match(rf"static const \w+ {kind}_\w+\[", line)]
        assert declarations and all('section(".l3")' in line for line in declarations), header


def test_each_gradient_is_kept_in_region_0_right_after_its_update() -> None:
    options = Options()
    graph = build_training_graph(EXAMPLES / "mlp.onnx", options)
    program, files = render_project(graph, TrainingData.from_steps(load_batches(graph, None, 1).steps), options.target())
    body = files["src/network.c"].split("static void train_step_on_core", 1)[1]
    calls = re.findall(r"RT_REGION\((\d+)\);\n\s+(.*)\n", body)
    for (name, _), copy in zip(program.trainable, program.grads, strict=True):
        assert copy is not None
        index = next(i for i, (_, code) in enumerate(calls) if f"{copy.symbol}[i] = " in code)
        assert calls[index][0] == "0"
        assert f"(update): sgd_update {name} " in calls[index - 1][1]


def test_a_plan_over_the_l2_budget_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    result = tinyodl("compile", str(EXAMPLES / "resnet8.onnx"), "--l2", "1000000", "-o", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert re.fullmatch(r"tinyodl: error: \S*resnet8.onnx: pass 'memory' \(after [a-z, ]+\) failed: the L2 plan "
                        r"needs \d+ bytes at op #\d+ \w+ \(node '[^']+'\), more than the L2 budget of 1000000 bytes",
                        lines[0]), lines[0]
    assert result.stdout == "" and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_a_program_that_overflows_l2_at_link_time_names_the_budget(tmp_path: Path) -> None:
    try:
        host.find_toolchain(need_plugin=False)
    except host.ToolchainError as exc:
        pytest.skip(f"toolchain missing: {exc}")
    # The MLP's arena (~21 kB) fits 64 kB, its code and stacks do not.
    result = tinyodl("simulate", str(EXAMPLES / "mlp.onnx"), "--l2", "65536", "--quiet", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(r"tinyodl: error: build failed: L2 overflow: code, data, stacks and the L2 arena need "
                        r"(\d+) bytes, (\d+) more than the L2 budget of 65536 bytes \(--l2 or the platform's L2\)",
                        lines[0]), lines[0]

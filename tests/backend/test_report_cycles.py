"""The report's modelled cycles (driver/timing.py, driver/report.py): per-step figures under per-step names, run
totals under run names, and the printed summary quotes the per-step ones (a run of 3 steps prints what one
step costs, not 3 times it). The printed summary: a table as wide as its names, and under --quiet the
summary lines alone."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from tinyodl.driver.options import Options
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.driver.report import print_summary
from tinyodl.driver.timing import add_dma_timing, layer_timings
from tinyodl.ir.graph import Graph

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STEP_CYCLES = 5000  # each layer's compute cycles in one step


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_training_graph(EXAMPLES / "lenet.onnx", Options())


def _report(graph: Graph, steps: int) -> dict[str, Any]:
    """What a QEMU run of `steps` identical steps reports before the DMA timing is added."""
    options = Options()
    layers = [{"name": node, "op": "conv2d", "phase": phase, "macs": 1000 * steps, "instructions": [4000 * steps],
               "cycles_est": STEP_CYCLES * steps, "mac_per_instr": 0.25}
              for node, phase in layer_timings(graph, options.target())]
    macs = sum(layer["macs"] for layer in layers)
    return {"model": "lenet", "target": "qemu", "platform": options.target().describe(), "cores": 8,
            "steps_run": steps, "steps": [{"loss": 1.0}] * steps, "layers": layers,
            "totals": {"macs": macs, "instructions_max_core": 4000 * steps * len(layers), "mac_per_instr": 0.25,
                       "cycles_est": STEP_CYCLES * steps * len(layers)},
            "memory": {"l1_bytes": 1, "l2_bytes": 1, "dma_bytes": 1},
            "check": {"ok": True, "worst": {"tensor": "loss[step 0]", "rel_err": 0.0}}}


def test_per_step_figures_are_one_steps_and_run_figures_the_sum(graph: Graph) -> None:
    one, three = _report(graph, 1), _report(graph, 3)
    for report in (one, three):
        add_dma_timing(report, graph, Options().target())
    assert one["totals"]["dma_cycles_exposed_per_step"] + one["totals"]["dma_cycles_hidden_per_step"] > 0
    for name in ("cycles", "dma_cycles_hidden", "dma_cycles_exposed"):
        per_step = "cycles_per_step_est" if name == "cycles" else f"{name}_per_step"
        run = "cycles_run_est" if name == "cycles" else f"{name}_run"
        assert three["totals"][per_step] == one["totals"][per_step] == one["totals"][run], name
        assert abs(three["totals"][run] - 3 * one["totals"][run]) <= 2, name
    assert "cycles_step_est" not in three["totals"]
    assert three["totals"]["mac_per_cycle"] == pytest.approx(one["totals"]["mac_per_cycle"], rel=1e-6)


def test_the_summary_prints_one_steps_cycles_and_the_runs_total(graph: Graph) -> None:
    report = _report(graph, 3)
    add_dma_timing(report, graph, Options().target())
    out = io.StringIO()
    with redirect_stdout(out):
        print_summary(report)
    totals = report["totals"]
    line = next(line for line in out.getvalue().splitlines() if "per step" in line)
    assert f"per step (model estimate): {totals['cycles_per_step_est']} cycles" in line, line
    assert f"DMA {totals['dma_cycles_exposed_per_step']} exposed" in line, line
    assert f"run of 3 steps: {totals['cycles_run_est']} cycles" in line, line


def _printed(report: dict[str, Any], **options: bool) -> list[str]:
    out = io.StringIO()
    with redirect_stdout(out):
        print_summary(report, **options)
    return out.getvalue().splitlines()


def test_quiet_prints_the_summary_without_steps_or_layers(graph: Graph) -> None:
    report = _report(graph, 3)
    add_dma_timing(report, graph, Options().target())
    full, quiet = _printed(report), _printed(report, quiet=True)
    assert sum(line.startswith("step ") for line in full) == 3
    assert not any(line.startswith("step ") or line.startswith("layer") or line.startswith("---") for line in quiet)
    assert quiet[0] == "loss 1.000000 at step 0, 1.000000 at step 2"
    assert quiet[1:] == [line for line in full if line.startswith(("platform", "cores", "per step", "check"))]


def test_the_layer_table_holds_long_names_whole(graph: Graph) -> None:
    report = _report(graph, 1)
    add_dma_timing(report, graph, Options().target())
    report["layers"][0].update(name="/stack1/bn1/BatchNormalization_with_a_long_tail",
                               op="conv2d_grad_input+conv2d_grad_weight+relu_grad")
    lines = _printed(report)
    header = next(line for line in lines if line.startswith("layer"))
    row = next(line for line in lines if line.startswith("/stack1/"))
    assert "/stack1/bn1/BatchNormalization_with_a_long_tail conv2d_grad_input+conv2d_grad_weight+relu_grad" in row
    # every column still starts where its header does
    assert row.index(report["layers"][0]["phase"]) == header.index("phase")
    assert len(row) == len(header)


def test_the_bench_table_holds_long_names_and_tile_shapes_whole(capsys: pytest.CaptureFixture[str]) -> None:
    from tinyodl.driver.bench import print_comparison

    long = {"name": "/stack1/bn1/BatchNormalization_with_a_long_tail", "phase": "backward",
            "op": "conv2d_grad_input+conv2d_grad_weight", "tile_shape": {"n": 1, "c": 16, "h": 32, "w": 32, "k": 64}}
    short = {"name": "fc", "phase": "forward", "op": "gemm", "tile_shape": {}}
    rows = [{**row, "macs": 10, "instructions_base": 80, "instructions": 10, "speedup": 8.0, "mac_per_instr": 0.125,
             "tiles": 4, "dma_bytes": 64, "dma_cycles_hidden": 3, "dma_cycles_exposed": 1} for row in (long, short)]
    print_comparison({"cores": 8, "baseline_cores": 1, "steps_run": 1, "layers": rows, "memory": {},
                      "check_ok": True, "totals": {"macs": 20, "critical_path_instructions": 20,
                                                   "critical_path_instructions_base": 160, "speedup": 8.0,
                                                   "mac_per_instr": 0.125, "cycles_est": 1, "cycles_est_base": 8}})
    lines = capsys.readouterr().out.splitlines()
    header, first, second = lines[0], lines[2], lines[3]
    assert first.startswith("/stack1/bn1/BatchNormalization_with_a_long_tail conv2d_grad_input+conv2d_grad_weight ")
    assert "n1,c16,h32,w32,k64" in first
    assert len(first) == len(second) == len(header)
    assert second.index("forward") == header.index("phase") == first.index("backward")


def test_the_memory_plan_gives_the_phase_of_every_op(graph: Graph) -> None:
    from tinyodl.driver.report import memory_plan_fields

    spans = memory_plan_fields(graph)["phases"]
    assert spans[0]["first"] == 0 and spans[-1]["last"] == len(graph.ops) - 1
    for before, after in zip(spans, spans[1:], strict=False):
        assert after["first"] == before["last"] + 1 and after["phase"] != before["phase"]
    for span in spans:
        assert {op.phase.value for op in graph.ops[span["first"]:span["last"] + 1]} == {span["phase"]}
    assert [span["phase"] for span in spans[:3]] == ["forward", "loss", "backward"]

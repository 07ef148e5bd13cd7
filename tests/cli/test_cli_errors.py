"""The command line: bad input gives one line, exit code 2, no traceback and nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinyodl", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _pad_model(path: Path) -> Path:
    node = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad1")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor("pads", TensorProto.INT64, [4], [0, 1, 0, 1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _dynamic_model(path: Path) -> Path:
    node = helper.make_node("Relu", ["x"], ["y"], name="r")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("command", ["ir", "simulate", "compile"])
def test_truncated_file(tmp_path: Path, command: str) -> None:
    data = (EXAMPLES / "mlp.onnx").read_bytes()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[: len(data) // 2])
    extra = ["-o", str(tmp_path / "out")] if command == "compile" else []
    extra += ["--target", "reference"] if command == "simulate" else []
    result = run(command, str(bad), *extra)
    assert_one_line_error(result, "cut.onnx")
    assert not (tmp_path / "out").exists()


def test_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "notes.onnx"
    bad.write_text("hello, this is not a model\n")
    assert_one_line_error(run("ir", str(bad)), "notes.onnx")


def test_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(run("ir", str(tmp_path / "nope.onnx")), "nope.onnx")


def test_unsupported_op(tmp_path: Path) -> None:
    assert_one_line_error(run("ir", str(_pad_model(tmp_path / "pad.onnx"))), "pad1", "Pad", "17")


def test_dynamic_batch(tmp_path: Path) -> None:
    assert_one_line_error(run("ir", str(_dynamic_model(tmp_path / "dyn.onnx"))), "dynamic", "'x'")


def test_data_file_shape_mismatch(tmp_path: Path) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, input=np.zeros((4, 63), np.float32), target=np.zeros(4, np.int64))
    report = tmp_path / "report.json"
    result = run("simulate", str(EXAMPLES / "mlp.onnx"), "--target", "reference", "--data", str(data),
                 "--report", str(report))
    assert_one_line_error(result, "d.npz", "'input'", "[63]", "[64]")
    assert not report.exists()


def test_data_file_missing_target_and_too_few_rows(tmp_path: Path) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, input=np.zeros((4, 64), np.float32))
    assert_one_line_error(run("simulate", str(EXAMPLES / "mlp.onnx"), "--target", "reference", "--data",
                              str(data)), "'target'")
    np.savez(data, input=np.zeros((2, 64), np.float32), target=np.zeros(2, np.int64))
    assert_one_line_error(run("simulate", str(EXAMPLES / "mlp.onnx"), "--target", "reference", "--data",
                              str(data), "--steps", "3"), "3 steps")
    np.savez(data, input=np.zeros((3, 64), np.float32), target=np.full(3, 10, np.int64))
    assert_one_line_error(run("simulate", str(EXAMPLES / "mlp.onnx"), "--target", "reference", "--data",
                              str(data)), "labels")


def test_unknown_train_name() -> None:
    assert_one_line_error(run("ir", str(EXAMPLES / "mlp.onnx"), "--train", "fc9.weight"), "fc9.weight")


def test_unknown_pass_in_pipeline() -> None:
    assert_one_line_error(run("ir", str(EXAMPLES / "mlp.onnx"), "--pipeline", "canonicalize,frobnicate"),
                          "frobnicate")


def test_reference_simulate_with_data_report_and_params(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, input=rng.standard_normal((6, 64)).astype(np.float32), target=rng.integers(0, 10, 6))
    report, params = tmp_path / "r.json", tmp_path / "p.npz"
    result = run("simulate", str(EXAMPLES / "mlp.onnx"), "--target", "reference", "--data", str(data), "--steps",
                 "3", "--batch", "2", "--optimizer", "adam", "--lr", "0.001", "--report", str(report),
                 "--save-params", str(params))
    assert result.returncode == 0, result.stderr
    losses = [step["loss"] for step in json.loads(report.read_text())["steps"]]
    assert len(losses) == 3 and all(np.isfinite(losses))
    with np.load(params) as saved:
        assert sorted(saved.files) == sorted(["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight",
                                              "fc3.bias", "fc4.weight", "fc4.bias"])


def test_ir_print_after_all_shows_every_phase() -> None:
    result = run("ir", str(EXAMPLES / "resnet8.onnx"), "--print-after-all", "--time-passes")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for marker in ("IR after import", "IR after canonicalize", "IR after training", "pass timings"):
        assert marker in out
    final = out.split("IR after training")[1]
    for phase in (" forward \"", " loss \"", " backward \"", " update \""):
        assert phase in final
    assert "conv2d_grad_weight" in final and "sgd_update" in final


def test_ir_dot_format() -> None:
    result = run("ir", str(EXAMPLES / "lenet.onnx"), "--format", "dot")
    assert result.returncode == 0
    assert result.stdout.startswith("digraph") and "conv2d_grad_input" in result.stdout

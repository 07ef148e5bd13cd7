"""Bad option values through the CLI: one line naming the option, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinyodl", *map(str, argv)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--cores", "0"], "--cores must be between 1 and 8, got 0"),
    (["--cores", "9"], "--cores must be between 1 and 8, got 9"),
    (["--lr", "nan"], "--lr"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--timeout", "-1"], "--timeout"),
    (["--platform", "pulp9"], "invalid choice: 'pulp9'"),
    (["--layout", "hwc"], "invalid choice: 'hwc'"),
])
def test_bad_values_are_one_line_exit_2(tmp_path: Path, argv: list[str], fragment: str) -> None:
    report = tmp_path / "r.json"
    done = _run("simulate", EXAMPLES / "mlp.onnx", "--target", "reference", "--report", report, *argv)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and fragment in done.stderr, done.stderr
    assert not report.exists()


def test_dynamic_batch_names_the_fix(tmp_path: Path) -> None:
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [0.1] * 12)])
    model = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    done = _run("simulate", model, "--target", "reference")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "dynamic dimension 'N'" in done.stderr and "--batch B" in done.stderr
    fixed = _run("simulate", model, "--target", "reference", "--batch", "2", "--quiet")
    assert fixed.returncode == 0, fixed.stderr


@pytest.mark.parametrize(("text", "nbytes"), [("65536", 65536), ("2KB", 2048), ("2k", 2048), ("2 KiB", 2048),
                                              ("1.5M", 1536 * 1024), ("1mb", 1024 ** 2), ("3MiB", 3 * 1024 ** 2),
                                              ("0", 0), ("512b", 512)])
def test_sizes_take_bytes_and_binary_suffixes(text: str, nbytes: int) -> None:
    from tinyodl.cli import build_parser

    args = build_parser().parse_args(["simulate", "m.onnx", "--l1", text, "--l2", text])
    assert args.l1 == args.l2 == nbytes


@pytest.mark.parametrize(("argv", "expected"), [
    (["simulate", EXAMPLES / "mlp.onnx", "--l1", "2KX"],
     "tinyodl: error: --l1: invalid size '2KX': use bytes (65536), or a number with a suffix k, KB or KiB"),
    (["simulate", EXAMPLES / "mlp.onnx", "--l2", "0.3k"],
     "tinyodl: error: --l2: invalid size '0.3k': not a whole number of bytes"),
    (["simulate", EXAMPLES / "mlp.onnx", "--setps", "1"],
     "tinyodl: error: unknown option --setps (did you mean --steps?)"),
    (["bench", EXAMPLES / "mlp.onnx", "--basline-cores=2"],
     "tinyodl: error: unknown option --basline-cores=2 (did you mean --baseline-cores?)"),
    (["eval", EXAMPLES / "mlp.onnx"], "tinyodl: error: the following arguments are required: --data"),
    (["simulate", EXAMPLES / "mlp.onnx", "--cores", "many"], "tinyodl: error: --cores: invalid int value: 'many'"),
    (["simulate", EXAMPLES / "mlp.onnx", "--cores", "0"], "tinyodl: error: --cores must be between 1 and 8, got 0"),
])
def test_every_error_has_one_prefix_and_names_the_option(argv: list[str | Path], expected: str) -> None:
    done = _run(*argv)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(expected) and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.count("error:") == 1, done.stderr

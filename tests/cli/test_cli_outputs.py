"""The command line's outputs: DOT text, files given by the user, option checks (run in-process)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinyodl.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOT_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # Graphviz: a backslash escapes the next character


def _backslash_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w\\"], ["y\\"], name="fc\\", transB=1),
             helper.make_node("Relu", ["y\\"], ["out"], name="r\\")]
    graph = helper.make_graph(nodes, "g\\", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4])],
                              [numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w\\")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_dot_escapes_backslashes_in_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ir", str(_backslash_model(tmp_path / "m.onnx")), "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    for line in dot.splitlines():
        assert '"' not in DOT_STRING.sub("", line), line
    assert 'label="relu\\nr\\\\"' in dot
    assert 'label="param w\\\\\\n4x3xf32"' in dot


def _one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_print_after_an_unknown_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ir", str(EXAMPLES / "mlp.onnx"), "--print-after", "trainng"]) == 2
    _one_line_error(capsys, "trainng", "canonicalize")
    assert main(["ir", str(EXAMPLES / "mlp.onnx"), "--print-after", "import", "--print-after", "training"]) == 0
    out = capsys.readouterr().out
    assert "IR after import" in out and "IR after training" in out

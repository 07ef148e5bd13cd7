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
    assert 'label="tile_loop relu\\nr\\\\"' in dot  # a tiled kernel is labelled with what it computes
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


@pytest.mark.parametrize("option", ["--report", "--save-params"])
def test_output_file_that_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str) -> None:
    assert main(["simulate", str(EXAMPLES / "mlp.onnx"), "--target", "reference", option, str(tmp_path)]) == 2
    _one_line_error(capsys, str(tmp_path))
    assert main(["simulate", str(EXAMPLES / "mlp.onnx"), option, str(tmp_path)]) == 2  # before building anything
    _one_line_error(capsys, str(tmp_path))


def test_no_report_when_the_params_file_cannot_be_written(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("")
    report = tmp_path / "report.json"
    assert main(["simulate", str(EXAMPLES / "mlp.onnx"), "--target", "reference", "--report", str(report),
                 "--save-params", str(tmp_path / "afile" / "p.npz")]) == 2
    _one_line_error(capsys, "afile")
    assert not report.exists()


def test_unwritable_outputs_of_ir_compile_and_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("")
    model = str(EXAMPLES / "mlp.onnx")
    for argv in (["ir", model, "-o", str(tmp_path)], ["ir", model, "-o", str(tmp_path / "afile" / "x.txt")],
                 ["compile", model, "-o", str(tmp_path / "afile" / "build")],
                 ["bench", model, "--report", str(tmp_path)]):
        assert main(argv) == 2, argv
        _one_line_error(capsys, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_report_gets_the_usual_permissions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain"
    plain.write_text("")
    report = tmp_path / "r.json"
    assert main(["simulate", str(EXAMPLES / "mlp.onnx"), "--target", "reference", "--report", str(report)]) == 0
    assert report.stat().st_mode == plain.stat().st_mode


@pytest.mark.parametrize("argv", [["compile", "-o", "{tmp}/build", "--steps", "0"], ["bench", "--steps", "0"],
                                  ["bench", "--baseline-cores", "9"], ["bench", "--baseline-cores", "0"]])
def test_step_and_core_counts_of_compile_and_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    argv: list[str]) -> None:
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert main([argv[0], str(EXAMPLES / "mlp.onnx"), *argv[1:]]) == 2
    _one_line_error(capsys, argv[-2])
    assert not (tmp_path / "build").exists()


def _transposed_output_model(path: Path) -> Path:
    """An output whose first axis is not the batch: out [5, 3] = (x [3, 2] @ w [2, 5])^T."""
    rng = np.random.default_rng(1)
    node = helper.make_node("Gemm", ["w", "x"], ["out"], name="gemm_t", transA=1, transB=1)
    graph = helper.make_graph([node], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [5, 3])],
                              [numpy_helper.from_array(rng.standard_normal((2, 5)).astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_data_rows_per_step_follow_each_array_own_first_axis(tmp_path: Path) -> None:
    from tinyodl.driver.data import load_batches
    from tinyodl.driver.options import Options
    from tinyodl.driver.pipeline import build_training_graph

    graph = build_training_graph(_transposed_output_model(tmp_path / "t.onnx"), Options(loss="mse"))
    data = tmp_path / "d.npz"
    x, target = np.arange(12.0).reshape(6, 2), np.arange(30.0).reshape(10, 3)
    np.savez(data, x=x, target=target)
    steps = load_batches(graph, data, 2).steps
    x_name = graph.inputs[0].name
    target_name = next(v.name for v in graph.inputs if v.name != x_name)
    assert np.array_equal(steps[1][x_name], x[3:6]) and np.array_equal(steps[1][target_name], target[5:10])


def test_data_arrays_of_the_wrong_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.npz"
    for bad in (np.full((2, 64), "a"), np.zeros((2, 64), np.complex64)):
        np.savez(data, input=bad, target=np.zeros(2, np.int64))
        assert main(["simulate", str(EXAMPLES / "mlp.onnx"), "--target", "reference", "--data", str(data)]) == 2
        _one_line_error(capsys, "'input'", str(bad.dtype))


def test_float64_data_is_rounded_to_what_the_program_sees(tmp_path: Path) -> None:
    from tinyodl.driver.data import load_batches
    from tinyodl.driver.options import Options
    from tinyodl.driver.pipeline import build_training_graph

    graph = build_training_graph(EXAMPLES / "mlp.onnx", Options())
    data = tmp_path / "d.npz"
    np.savez(data, input=np.full((1, 64), 0.1), target=np.zeros(1, np.int64))
    feed = load_batches(graph, data, 1).steps[0]
    assert feed[graph.inputs[0].name].dtype == np.float32


@pytest.mark.parametrize("option", [["--lr", "nan"], ["--lr", "inf"], ["--momentum", "-0.5"],
                                    ["--weight-decay", "-1"], ["--eps=-1e-8"], ["--betas", "0.9,1.0"],
                                    ["--betas=-0.1,0.999"], ["--train", ""], ["--train", " , "]])
def test_out_of_range_training_options(capsys: pytest.CaptureFixture[str], option: list[str]) -> None:
    assert main(["ir", str(EXAMPLES / "mlp.onnx"), *option]) == 2
    _one_line_error(capsys, option[0].split("=")[0])


def _npz_with_patched_directory(path: Path, offset: int, value: int) -> Path:
    """A valid npz whose first central-directory entry has the little-endian uint16 at `offset` replaced."""
    np.savez(path, input=np.zeros((2, 64), np.float32), target=np.zeros(2, np.int64))
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")
    data[entry + offset:entry + offset + 2] = value.to_bytes(2, "little")
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("offset", "value"), [(6, 77), (8, 1), (10, 99)])  # version, encrypted, compression
def test_corrupt_npz_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str], offset: int, value: int) -> None:
    data = _npz_with_patched_directory(tmp_path / "d.npz", offset, value)
    assert main(["simulate", str(EXAMPLES / "mlp.onnx"), "--target", "reference", "--data", str(data)]) == 2
    _one_line_error(capsys, "d.npz")


def test_model_with_a_name_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = helper.make_node("Relu", ["x"], ["out"], name="relu_node")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    bad = tmp_path / "latin1.onnx"
    bad.write_bytes(model.replace(b"relu_node", b"relu\xd7node"))
    assert main(["ir", str(bad)]) == 2
    _one_line_error(capsys, "latin1.onnx")


def test_initializer_of_an_unknown_data_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = helper.make_node("Add", ["x", "b"], ["out"], name="add_b")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4])],
                              [numpy_helper.from_array(np.zeros(4, np.float32), "b")])
    graph.initializer[0].data_type = 67  # the checker lets it through, shape inference raises ValueError
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "dtype67.onnx")
    assert main(["ir", str(tmp_path / "dtype67.onnx")]) == 2
    _one_line_error(capsys, "dtype67.onnx")


@pytest.mark.parametrize("command", ["simulate", "bench"])
@pytest.mark.parametrize("timeout", ["nan", "0", "-1"])
def test_host_timeout_must_be_positive(capsys: pytest.CaptureFixture[str], command: str, timeout: str) -> None:
    assert main([command, str(EXAMPLES / "mlp.onnx"), f"--timeout={timeout}"]) == 2
    _one_line_error(capsys, "--timeout")


def test_compile_onto_a_directory_keeps_the_user_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, out = str(EXAMPLES / "mlp.onnx"), tmp_path / "mine"
    out.mkdir()
    (out / "notes.md").write_text("my notes\n")
    assert main(["compile", model, "-o", str(out)]) == 2
    _one_line_error(capsys, str(out), "not a tinyodl project", "--force")
    assert [p.name for p in out.iterdir()] == ["notes.md"]
    assert main(["compile", model, "-o", str(out), "--force"]) == 0
    (out / "src" / "my_main.c").write_text("/* mine */\n")
    assert main(["compile", model, "-o", str(out), "--steps", "2"]) == 0  # an earlier project: no --force needed
    assert (out / "notes.md").read_text() == "my notes\n" and (out / "src" / "my_main.c").is_file()
    assert "#define NETWORK_STEPS 2" in (out / "src" / "network.h").read_text()

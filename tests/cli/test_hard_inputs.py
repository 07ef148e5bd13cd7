"""Hard inputs: each ends in exactly one `tinyodl: error:` line naming the file or tensor, exit code 2, no
traceback, no numpy warnings and no output file."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MLP = EXAMPLES / "mlp.onnx"  # input 'input' [1, 64], 10 classes


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinyodl", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tinyodl: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _matmul_model(weight: onnx.TensorProto, input_shape: tuple[int, ...] = (2, 4)) -> onnx.ModelProto:
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (input_shape[0], 3))], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _weight(values: np.ndarray | None = None) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones((4, 3), np.float32) if values is None else values, "w")


def _external(tmp_path: Path, entries: dict[str, str]) -> Path:
    """A model whose weight lives in external data described by `entries` (w.bin holds 12 floats)."""
    (tmp_path / "w.bin").write_bytes(np.ones(12, np.float32).tobytes())
    weight = _weight()
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in entries.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    path = tmp_path / "ext.onnx"
    path.write_bytes(_matmul_model(weight).SerializeToString())
    return path


@pytest.mark.parametrize("entries, fragment", [
    ({"location": "missing.bin"}, "external tensor data"),
    ({"location": "../../etc/passwd"}, "outside"),
    ({"location": "w.bin", "offset": "4096"}, "offset"),
    ({"location": "w.bin", "length": "7"}, "stores 7 bytes"),
    ({"location": "w.bin", "offset": "abc"}, "not a non-negative integer"),
])
def test_external_data(tmp_path: Path, entries: dict[str, str], fragment: str) -> None:
    assert_refused(run("ir", _external(tmp_path, entries)), "ext.onnx", fragment)


def _save(tmp_path: Path, model: onnx.ModelProto, name: str = "bad.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())  # onnx.save would refuse some of these
    return path


def test_raw_data_shorter_than_dims(tmp_path: Path) -> None:
    weight = _weight()
    weight.raw_data = np.ones(10, np.float32).tobytes()
    assert_refused(run("ir", _save(tmp_path, _matmul_model(weight))), "bad.onnx", "'w'", "40 bytes", "48")


def test_typed_data_count_differs_from_dims(tmp_path: Path) -> None:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], list(range(12)))
    weight.float_data.extend([12.0, 13.0])
    assert_refused(run("ir", _save(tmp_path, _matmul_model(weight))), "'w'", "14 elements", "12")


def test_undefined_element_type(tmp_path: Path) -> None:
    weight = _weight()
    weight.data_type = 67
    assert_refused(run("ir", _save(tmp_path, _matmul_model(weight))), "'w'", "undefined element type", "67")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_initializer(tmp_path: Path, value: float) -> None:
    values = np.ones((4, 3), np.float32)
    values[1, 2] = value
    assert_refused(run("ir", _save(tmp_path, _matmul_model(_weight(values)))), "'w'", "NaN or infinity")


def test_huge_declared_input_refused_before_allocating(tmp_path: Path) -> None:
    model = _matmul_model(_weight(), input_shape=(100000, 100000, 1000, 4))
    assert_refused(run("ir", _save(tmp_path, model)), "'x'", "32-bit target")


def test_huge_initializer_dims_refused_before_reading(tmp_path: Path) -> None:
    weight = _weight()
    del weight.dims[:]
    weight.dims.extend([1 << 40, 3])
    assert_refused(run("ir", _save(tmp_path, _matmul_model(weight))), "'w'", "32-bit target")


def test_huge_batch_fails_fast(tmp_path: Path) -> None:
    result = run("compile", EXAMPLES / "lenet.onnx", "--batch", "20000", "-o", tmp_path / "out")
    assert_refused(result, "L2", "--batch")
    assert not (tmp_path / "out").exists()


def test_nothing_to_train(tmp_path: Path) -> None:
    model = _save(tmp_path, _matmul_model(_weight()))  # a MatMul has no bias
    assert_refused(run("simulate", model, "--target", "reference", "--train", "bias", "--report", tmp_path / "r.json"),
                   "nothing to train", "--train none")
    assert not (tmp_path / "r.json").exists()


def _simulate_data(tmp_path: Path, data: Path) -> subprocess.CompletedProcess[str]:
    return run("simulate", MLP, "--target", "reference", "--data", data, "--report", tmp_path / "r.json")


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def _good(rows: int = 4) -> dict[str, np.ndarray]:
    return {"input": np.ones((rows, 64), np.float32), "target": np.zeros(rows, np.int64)}


@pytest.mark.parametrize("arrays, fragments", [
    ({"input": np.ones((4, 64), np.int64), "target": np.zeros(4, np.int64)}, ("int64", "astype(np.float32)")),
    ({"input": np.ones((4, 64), np.float32), "target": np.int64(3)}, ("'target'", "0-d")),
    ({"input": np.full((4, 64), np.nan, np.float32), "target": np.zeros(4, np.int64)}, ("'input'", "NaN")),
    ({"input": np.full((4, 64), -np.inf, np.float32), "target": np.zeros(4, np.int64)}, ("'input'", "infinity")),
    ({"input": np.full((4, 64), 1e300), "target": np.zeros(4, np.int64)}, ("'input'", "float32's range")),
])
def test_bad_data_arrays(tmp_path: Path, arrays: dict[str, np.ndarray], fragments: tuple[str, ...]) -> None:
    assert_refused(_simulate_data(tmp_path, _npz(tmp_path, **arrays)), "data.npz", *fragments)
    assert not (tmp_path / "r.json").exists()


def test_plain_npy(tmp_path: Path) -> None:
    path = tmp_path / "data.npy"
    np.save(path, np.ones((4, 64), np.float32))
    assert_refused(_simulate_data(tmp_path, path), "data.npy", "plain .npy", "np.savez")


def test_npz_member_not_an_array(tmp_path: Path) -> None:
    path = _npz(tmp_path, **_good())
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("broken.npy", b"\x93NUMPY\x01\x00garbage")
    assert_refused(_simulate_data(tmp_path, path), "data.npz", "'broken'", "not a valid array")


def test_npz_header_too_large_refused_before_reading(tmp_path: Path) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (10**9, 64)})
    path = _npz(tmp_path, **_good())
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("input_huge.npy", header.getvalue() + b"\0" * 64)
    assert_refused(_simulate_data(tmp_path, path), "'input_huge'", "larger than tinyodl reads")


def test_unused_array_warns_once_and_trains(tmp_path: Path) -> None:
    result = _simulate_data(tmp_path, _npz(tmp_path, **_good(), extra=np.zeros(3)))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "'extra'" in warnings[0], result.stderr
    assert "RuntimeWarning" not in result.stderr


def test_diverging_run_is_one_line_without_numpy_warnings(tmp_path: Path) -> None:
    result = run("simulate", MLP, "--target", "reference", "--steps", "6", "--lr", "1e200", "--quiet")
    assert_refused(result, "diverged", "--lr")


def test_report_name_too_long(tmp_path: Path) -> None:
    result = run("simulate", MLP, "--target", "reference", "--report", tmp_path / ("r" * 300 + ".json"))
    assert_refused(result, "cannot write")


def test_file_where_a_folder_must_go(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file\n")
    result = run("compile", MLP, "-o", tmp_path / "plain" / "project")
    assert_refused(result, "plain")
    assert (tmp_path / "plain").read_text() == "a file\n"


def test_control_characters_in_a_file_name_stay_on_one_line(tmp_path: Path) -> None:
    line = assert_refused(run("ir", tmp_path / "evil\nname\x1b[31m.onnx"))
    assert "\\n" in line and "\\x1b" in line and "\x1b" not in line


def _relu_model() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 4))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2, 4))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_no_initializers_with_the_default_train_all(tmp_path: Path) -> None:
    model = _save(tmp_path, _relu_model())
    assert_refused(run("simulate", model, "--target", "reference", "--report", tmp_path / "r.json"),
                   "bad.onnx", "no initializers: nothing to train; use --train none to evaluate")
    assert not (tmp_path / "r.json").exists()
    result = run("simulate", model, "--target", "reference", "--train", "none", "--quiet")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("arrays, fragment", [
    ({**_good(1), "extra": np.zeros(3)}, "1 samples, 4 steps"),
    ({"input": np.ones((4, 64), np.float32), "extra": np.zeros(3)}, "no array 'target'"),
])
def test_an_error_after_a_warning_is_the_only_line(tmp_path: Path, arrays: dict[str, np.ndarray],
                                                   fragment: str) -> None:
    result = run("simulate", MLP, "--target", "reference", "--steps", "4", "--data", _npz(tmp_path, **arrays))
    assert_refused(result, fragment)


def test_warnings_of_the_eval_file_wait_for_the_training_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "test.npz", **_good(), extra=np.zeros(3))
    np.savez(tmp_path / "train.npz", input=np.ones((4, 64), np.float32), target=np.full(4, 99, np.int64))
    result = run("simulate", MLP, "--target", "reference", "--data", tmp_path / "train.npz", "--eval",
                 tmp_path / "test.npz")
    assert_refused(result, "train.npz", "labels")

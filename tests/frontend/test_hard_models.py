"""Models that are malformed in their tensors: each import ends in one FrontendError line that names the tensor,
before anything as large as the declared shapes is allocated (the CLI side is tests/cli/test_hard_inputs.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinyodl.frontend import FrontendError, import_onnx
from tinyodl.frontend.onnx_load import shown


def _model(weight: onnx.TensorProto, input_shape: tuple[int, ...] = (2, 4)) -> onnx.ModelProto:
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (*input_shape[:-1], 3))], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _weight() -> onnx.TensorProto:
    return numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")


def _short_raw(tensor: onnx.TensorProto) -> None:
    tensor.raw_data = tensor.raw_data[:40]


def _long_typed(tensor: onnx.TensorProto) -> None:
    tensor.ClearField("raw_data")
    tensor.float_data.extend(range(13))


def _undefined_type(tensor: onnx.TensorProto) -> None:
    tensor.data_type = 67


def _huge_dims(tensor: onnx.TensorProto) -> None:
    del tensor.dims[:]
    tensor.dims.extend([1 << 40, 3])


def _nan(tensor: onnx.TensorProto) -> None:
    values = numpy_helper.to_array(tensor).copy()
    values[2, 1] = np.nan
    tensor.CopyFrom(numpy_helper.from_array(values, "w"))


@pytest.mark.parametrize("damage, fragment", [
    (_short_raw, "stores 40 bytes, its shape [4, 3] needs 48"),
    (_long_typed, "stores 13 elements, its shape [4, 3] has 12"),
    (_undefined_type, "undefined element type (enum value 67)"),
    (_huge_dims, "larger than any tensor a 32-bit target can hold"),
    (_nan, "NaN or infinity (1 of 12 elements)"),
])
def test_damaged_initializer(tmp_path: Path, damage: Callable[[onnx.TensorProto], None], fragment: str) -> None:
    weight = _weight()
    damage(weight)
    path = tmp_path / "m.onnx"
    path.write_bytes(_model(weight).SerializeToString())
    with pytest.raises(FrontendError, match="'w'") as info:
        import_onnx(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_huge_declared_input() -> None:
    with pytest.raises(FrontendError, match="input 'x' has shape"):
        import_onnx(_model(_weight(), input_shape=(1 << 20, 1 << 20, 4)))


@pytest.mark.parametrize("entries, fragment", [
    ({"location": "missing.bin"}, "cannot read external tensor data"),
    ({"location": "../outside.bin"}, "outside"),
    ({"location": "w.bin", "offset": "1000"}, "offset"),
    ({"location": "w.bin", "length": "-4"}, "not a non-negative integer"),
])
def test_bad_external_data(tmp_path: Path, entries: dict[str, str], fragment: str) -> None:
    (tmp_path / "w.bin").write_bytes(np.ones(12, np.float32).tobytes())
    (tmp_path / "outside.bin").write_bytes(np.ones(12, np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(np.ones(12, np.float32).tobytes())
    weight = _weight()
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in entries.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    path = folder / "m.onnx"
    path.write_bytes(_model(weight).SerializeToString())
    with pytest.raises(FrontendError, match=fragment):
        import_onnx(path)


def test_shown_escapes_what_would_break_a_line() -> None:
    assert shown("a\nb\x1b[31m\tc é") == "a\\nb\\x1b[31m\\tc é"

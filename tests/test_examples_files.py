"""Checks on the committed example ONNX files (examples/*.onnx).

The onnx-only tests verify the files are well-formed inputs for the compiler (checker,
allowed op set, opset 17, static batch-1 shapes, ``input``/``logits`` names).  The torch
tests prove the files agree with the PyTorch definitions in ``examples/models.py``:
same initializer names and values, same outputs, and the export script reproduces the
committed bytes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = ["resnet8", "dscnn", "lenet", "mlp"]

ALLOWED_OPS = {
    "Conv", "Gemm", "MatMul", "Add", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip",
    "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape",
    "BatchNormalization", "Softmax", "Identity", "Dropout", "Constant",
}  # fmt: skip

INPUT_SHAPES = {
    "resnet8": [1, 3, 32, 32],
    "dscnn": [1, 1, 49, 10],
    "lenet": [1, 1, 28, 28],
    "mlp": [1, 64],
}
NUM_CLASSES = {"resnet8": 10, "dscnn": 12, "lenet": 10, "mlp": 10}


def _load_by_path(stem: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"tinyodl_examples_{stem}", EXAMPLES / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def models() -> ModuleType:
    pytest.importorskip("torch")
    return _load_by_path("models")


@pytest.fixture(scope="module")
def make_examples() -> ModuleType:
    pytest.importorskip("torch")
    return _load_by_path("make_examples")


def _load(name: str) -> onnx.ModelProto:
    return onnx.load(str(EXAMPLES / f"{name}.onnx"))


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]


# ------------------------------------------------------------------ onnx-only checks


@pytest.mark.parametrize("name", NAMES)
def test_file_is_valid_and_small(name: str) -> None:
    path = EXAMPLES / f"{name}.onnx"
    assert path.stat().st_size < 400_000
    model = _load(name)
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]


@pytest.mark.parametrize("name", NAMES)
def test_only_allowed_ops(name: str) -> None:
    ops = {n.op_type for n in _load(name).graph.node}
    assert ops <= ALLOWED_OPS, sorted(ops - ALLOWED_OPS)
    assert "Pad" not in ops


@pytest.mark.parametrize("name", NAMES)
def test_static_io_batch1(name: str) -> None:
    graph = _load(name).graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["logits"]
    assert _dims(graph.input[0]) == INPUT_SHAPES[name]
    assert _dims(graph.output[0]) == [1, NUM_CLASSES[name]]
    for vi in [*graph.input, *graph.output]:
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("name", NAMES)
def test_every_tensor_has_static_shape(name: str) -> None:
    model = onnx.shape_inference.infer_shapes(_load(name), strict_mode=True)
    graph = model.graph
    typed = {vi.name: vi for vi in [*graph.input, *graph.output, *graph.value_info]}
    for node in graph.node:
        for out in node.output:
            assert out in typed, f"{out} has no inferred type"
            dims = _dims(typed[out])
            assert all(isinstance(d, int) and d > 0 for d in dims), (out, dims)
    for init in graph.initializer:
        assert all(d > 0 for d in init.dims)


@pytest.mark.parametrize(("name", "bn_count"), [("resnet8", 7), ("dscnn", 9), ("lenet", 0), ("mlp", 0)])
def test_batchnorm_not_fused(name: str, bn_count: int) -> None:
    nodes = _load(name).graph.node
    assert sum(n.op_type == "BatchNormalization" for n in nodes) == bn_count
    assert sum(n.op_type == "Conv" for n in nodes) == {"resnet8": 9, "dscnn": 9, "lenet": 2, "mlp": 0}[name]


def test_dscnn_same_padding_folded_into_conv() -> None:
    first = _load("dscnn").graph.node[0]
    assert first.op_type == "Conv" and first.input[0] == "input"
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in first.attribute}
    assert attrs["pads"] == [4, 1, 5, 1]  # [top, left, bottom, right]
    assert attrs["kernel_shape"] == [10, 4] and attrs["strides"] == [2, 2]


def test_op_coverage() -> None:
    ops = {n.op_type for name in NAMES for n in _load(name).graph.node}
    expected = {"Conv", "BatchNormalization", "Relu", "Add", "GlobalAveragePool", "Flatten", "Gemm",
                "MaxPool", "AveragePool", "Sigmoid", "LeakyRelu", "Clip"}  # fmt: skip
    assert expected <= ops


# ------------------------------------------------------------------ agreement with torch


def test_model_list(models: ModuleType) -> None:
    assert list(models.MODEL_NAMES) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_initializers_are_state_dict(models: ModuleType, name: str) -> None:
    module, shapes = models.build(name)
    assert {k: list(v) for k, v in shapes.items()} == {"input": INPUT_SHAPES[name]}
    state = module.state_dict()
    inits = {t.name: numpy_helper.to_array(t) for t in _load(name).graph.initializer}
    # Same names, in state_dict order; only BN's training-only counter is absent.
    assert list(inits) == models.used_state_dict_keys(module)
    assert all(k.endswith("num_batches_tracked") for k in set(state) - set(inits))
    for key, value in inits.items():
        np.testing.assert_array_equal(value, state[key].numpy(), err_msg=key)


@pytest.mark.parametrize("name", NAMES)
def test_batchnorm_statistics_are_nontrivial(models: ModuleType, name: str) -> None:
    import torch

    module, _ = models.build(name)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            assert not torch.allclose(m.running_mean, torch.zeros_like(m.running_mean))
            assert not torch.allclose(m.running_var, torch.ones_like(m.running_var))
            assert not torch.allclose(m.weight, torch.ones_like(m.weight))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_torch_matches_reference_evaluator(models: ModuleType, name: str, seed: int) -> None:
    import torch

    module, shapes = models.build(name)
    x = np.random.default_rng(seed).standard_normal(shapes["input"]).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    (got,) = ReferenceEvaluator(_load(name)).run(None, {"input": x})
    got = np.asarray(got)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert np.ptp(expected) > 1e-3  # the logits actually depend on the weights/input


@pytest.mark.parametrize("name", NAMES)
def test_build_is_deterministic(models: ModuleType, name: str) -> None:
    import torch

    a, _ = models.build(name)
    b, _ = models.build(name)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        assert torch.equal(va, vb), ka


@pytest.mark.parametrize("name", NAMES)
def test_export_is_byte_deterministic_and_up_to_date(make_examples: ModuleType, name: str) -> None:
    import torch

    first = make_examples.serialize(make_examples.export_example(name))
    second = make_examples.serialize(make_examples.export_example(name))
    assert first == second
    committed = (EXAMPLES / f"{name}.onnx").read_bytes()
    if not torch.__version__.startswith("2.13."):
        pytest.skip(f"committed files were exported with torch 2.13, not {torch.__version__}")
    assert first == committed, f"examples/{name}.onnx is stale: rerun examples/make_examples.py"

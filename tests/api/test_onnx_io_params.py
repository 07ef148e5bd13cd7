"""Model out and in at the library level: the trained model as ONNX, saved parameters and optimizer state
read back, and every bad parameter file refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from tinyodl.driver.check import SimOutput, StepState
from tinyodl.driver.evaluate import forward_graph, loss_operands
from tinyodl.driver.onnx_io import (
    STATE_PREFIX,
    final_state,
    init_from,
    parameter_values,
    save_onnx,
    save_state,
)
from tinyodl.driver.options import Options, UserError
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.ir.executor import Executor
from tinyodl.ir.types import Role

EXAMPLES = Path(__file__).parents[2] / "examples"


def perturbed(graph, seed: int = 0) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """New values for the trainable parameters, as a training run would give (by initializer name)."""
    rng = np.random.default_rng(seed)
    return {value.origin: graph.initial[value.name] + rng.normal(0, 0.05, value.shape)
            for value in graph.trainable_params()}


def test_parameter_values_holds_every_parameter() -> None:
    graph = build_training_graph(EXAMPLES / "lenet.onnx", Options(train="last:1"))
    trained = perturbed(graph)
    values = parameter_values(graph, {name: array.reshape(-1) for name, array in trained.items()})
    assert set(values) == {value.origin for value in graph.params if value.role is Role.PARAM}
    assert len(values) > len(trained)
    for name, array in trained.items():
        np.testing.assert_array_equal(values[name], array)


@pytest.mark.parametrize("model", ["lenet", "dscnn"])
def test_saved_onnx_runs_in_onnx_reference_and_matches_our_forward(model: str, tmp_path: Path) -> None:
    path = EXAMPLES / f"{model}.onnx"
    graph = build_training_graph(path, Options(train="last:2"))
    trained = perturbed(graph)
    out = tmp_path / "trained.onnx"
    save_onnx(path, out, parameter_values(graph, trained))
    saved = onnx.load(str(out))
    onnx.checker.check_model(saved, full_check=True)
    original = onnx.load(str(path))
    assert [init.name for init in saved.graph.initializer] == [init.name for init in original.graph.initializer]
    assert [node.op_type for node in saved.graph.node] == [node.op_type for node in original.graph.node]

    forward = forward_graph(path, Options())
    init_from(forward, out, path, fold_bn=False)
    output, _ = loss_operands(forward)
    rng = np.random.default_rng(1)
    feed = {value.name: rng.standard_normal(value.shape).astype(np.float32) if value.dtype.is_float
            else np.zeros(value.shape, np.int64) for value in forward.inputs}
    ours = Executor(forward).run(feed)[output.name]
    (theirs,) = ReferenceEvaluator(saved).run(None, {forward.inputs[0].origin: feed[forward.inputs[0].name]})
    if saved.graph.node[-1].op_type == "Softmax":  # cross-entropy training strips the model's final softmax
        ours = np.exp(ours - ours.max(axis=1, keepdims=True))
        ours /= ours.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)
    # The trained values really are in the file (not the model's own).
    changed = next(iter(trained))
    stored = next(init for init in saved.graph.initializer if init.name == changed)
    np.testing.assert_allclose(onnx.numpy_helper.to_array(stored), trained[changed].astype(np.float32))


def test_state_file_restores_parameters_and_optimizer_state(tmp_path: Path) -> None:
    path = EXAMPLES / "mlp.onnx"
    options = Options(optimizer="adam")
    graph = build_training_graph(path, options)
    executor = Executor(graph)
    rng = np.random.default_rng(0)
    feed = {value.name: rng.standard_normal(value.shape) if value.dtype.is_float else np.zeros(value.shape, np.int64)
            for value in graph.inputs}
    executor.run(feed)
    params = {value.origin: executor.param(value.name) for value in graph.params if value.role is Role.PARAM}
    state = {value.name: executor.param(value.name) for value in graph.state}
    save_state(tmp_path / "s.npz", params, state)
    resumed = build_training_graph(path, options)
    init_from(resumed, tmp_path / "s.npz", path, fold_bn=False)
    for value in resumed.state:
        np.testing.assert_array_equal(resumed.initial[value.name], state[value.name])
    assert int(resumed.initial[next(v.name for v in resumed.state if v.name.endswith("step"))]) == 1


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: write_npz(d / "p.npz", **{"nope": np.zeros(3, np.float32)}), "'nope' is not a parameter"),
    (lambda d: write_npz(d / "p.npz", **{"evil\nname\x1b[2J": np.zeros(3, np.float32)}),
     "'evil\\nname\\x1b[2J' is not a parameter"),
    (lambda d: write_npz(d / "p.npz", **{"fc1.weight": np.zeros((2, 2), np.float32)}), "'fc1.weight' has shape [2, 2]"),
    (lambda d: write_npz(d / "p.npz", **{"fc1.bias": np.full(32, np.nan, np.float32)}), "NaN or infinite"),
    (lambda d: write_npz(d / "p.npz", **{"fc1.bias": np.zeros(32, np.int32)}), "expected floating-point"),
    (lambda d: write_npz(d / "p.npz", **{f"{STATE_PREFIX}fc1.weight.exp_avg": np.zeros(3)}), "no counterpart"),
    (lambda d: (np.save(d / "p.npy", np.zeros(3)), d / "p.npy")[1], "a single array"),
    (lambda d: (d / "p.npz").write_bytes(b"garbage") and d / "p.npz", "not a readable .npz"),
    (lambda d: d / "missing.npz", "no such parameter file"),
    (lambda d: (d / "p.onnx").write_bytes(b"garbage") and d / "p.onnx", "not an ONNX file"),
])
def test_bad_parameter_files_are_one_line_errors(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    path = EXAMPLES / "mlp.onnx"
    graph = build_training_graph(path, Options(momentum=0.9))
    source = make(tmp_path)
    with pytest.raises(UserError) as caught:
        init_from(graph, source, path, fold_bn=False)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_parameters_keep_the_model_values(tmp_path: Path) -> None:
    path = EXAMPLES / "mlp.onnx"
    graph = build_training_graph(path, Options())
    before = {name: array.copy() for name, array in graph.initial.items()}
    init_from(graph, write_npz(tmp_path / "p.npz", **{"fc1.bias": np.ones(32, np.float32)}), path, fold_bn=False)
    for name, array in graph.initial.items():
        if name == "fc1.bias":
            np.testing.assert_array_equal(array, np.ones(32))
        else:
            np.testing.assert_array_equal(array, before[name])


def test_onnx_sources_with_fold_bn_are_refused(tmp_path: Path) -> None:
    path = EXAMPLES / "dscnn.onnx"
    graph = build_training_graph(path, Options(fold_bn=True))
    with pytest.raises(UserError, match="fold-bn"):
        init_from(graph, path, path, fold_bn=True)


def test_final_state_reads_the_words_the_program_printed_last() -> None:
    graph = build_training_graph(EXAMPLES / "mlp.onnx", Options(optimizer="adam"))
    shapes = {value.name: value.shape for value in graph.state}
    words = {name: np.arange(int(np.prod(shape)), dtype=np.float32).view(np.uint32) for name, shape in shapes.items()}
    words["optimizer.step"] = np.array([7], np.uint32)
    earlier = {name: np.zeros_like(array) for name, array in words.items()}
    simulated = SimOutput([], {}, states={0: StepState(state=earlier), 4: StepState(state=words)})
    state = final_state(graph, simulated)
    assert set(state) == set(shapes)
    assert state["optimizer.step"].dtype == np.int32 and int(state["optimizer.step"]) == 7
    momentum = state["fc1.weight.exp_avg"]
    assert momentum.dtype == np.float32 and momentum.shape == shapes["fc1.weight.exp_avg"]
    np.testing.assert_array_equal(momentum.reshape(-1), np.arange(momentum.size))

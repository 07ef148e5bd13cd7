"""Evaluation on the reference: forward only over every row of a data file, the last partial batch padded
and discarded; metrics against a direct computation; bad data files refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyodl.driver.evaluate import (
    compare_outputs,
    evaluate_graph,
    forward_graph,
    load_eval_data,
    metrics,
    parse_outputs,
)
from tinyodl.driver.options import Options, UserError
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.ir.executor import Executor
from tinyodl.ir.types import Phase

EXAMPLES = Path(__file__).parents[2] / "examples"


def dataset(path: Path, rows: int, seed: int = 0, model: str = "mlp", **changes: np.ndarray) -> Path:
    graph = forward_graph(EXAMPLES / f"{model}.onnx", Options())
    rng = np.random.default_rng(seed)
    arrays = {value.origin: rng.standard_normal((rows, *value.shape[1:])).astype(np.float32)
              for value in graph.inputs if value.dtype.is_float}
    logits = next(op.inputs[0] for op in graph.ops if op.phase is Phase.LOSS)
    arrays["target"] = rng.integers(0, logits.shape[1], rows)
    arrays.update(changes)
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_forward_graph_has_no_backward_or_update() -> None:
    graph = forward_graph(EXAMPLES / "lenet.onnx", Options(optimizer="adam", train="all"))
    assert {op.phase for op in graph.ops} == {Phase.FORWARD, Phase.LOSS}
    assert not graph.trainable_params() and not graph.state


def test_whole_batches_give_the_mean_of_the_graph_losses(tmp_path: Path) -> None:
    options = Options(batch=4)
    graph = forward_graph(EXAMPLES / "mlp.onnx", options)
    data = load_eval_data(graph, dataset(tmp_path / "d.npz", 12))
    assert len(data.feeds) == 3
    executor = Executor(graph)
    losses = [float(executor.run(feed)[graph.outputs[0].name]) for feed in data.feeds]
    evaluation = evaluate_graph(graph, data, "cross_entropy")
    assert evaluation.loss == pytest.approx(np.mean(losses), rel=1e-12)
    assert evaluation.samples == 12


def test_a_partial_last_batch_counts_only_real_rows(tmp_path: Path) -> None:
    """13 rows in batches of 4 (the last one padded) equal 13 batches of 1."""
    path = dataset(tmp_path / "d.npz", 13)
    by_four = forward_graph(EXAMPLES / "mlp.onnx", Options(batch=4))
    by_one = forward_graph(EXAMPLES / "mlp.onnx", Options(batch=1))
    four = evaluate_graph(by_four, load_eval_data(by_four, path), "cross_entropy")
    one = evaluate_graph(by_one, load_eval_data(by_one, path), "cross_entropy")
    assert len(load_eval_data(by_four, path).feeds) == 4
    assert four.samples == one.samples == 13
    assert four.loss == pytest.approx(one.loss, rel=1e-12)
    np.testing.assert_allclose(four.outputs, one.outputs, rtol=1e-12)
    assert four.confusion == one.confusion


def test_metrics_of_known_logits() -> None:
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    labels = np.array([0, 1, 1, 2])
    evaluation = metrics(logits, labels, "cross_entropy")
    assert evaluation.accuracy == 0.5
    assert evaluation.confusion == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]
    assert evaluation.predictions.tolist() == [0, 1, 2, 0]
    assert evaluation.per_class[1] == {"class": 1, "support": 2, "correct": 1, "recall": 0.5, "precision": 1.0}
    assert evaluation.per_class[2]["precision"] == 0.0
    expected = np.mean([-np.log(np.exp(row[label]) / np.exp(row).sum()) for row, label in zip(logits, labels, strict=True)])
    assert evaluation.loss == pytest.approx(expected, rel=1e-12)
    summary = evaluation.to_json()
    assert set(summary) == {"loss", "samples", "accuracy", "confusion", "per_class"}


def test_mse_predictions_are_the_raw_outputs() -> None:
    outputs = np.array([[1.0, 2.0], [3.0, 5.0]])
    targets = np.array([[1.0, 1.0], [3.0, 3.0]])
    evaluation = metrics(outputs, targets, "mse")
    assert evaluation.loss == pytest.approx((0 + 1 + 0 + 4) / 4)
    assert evaluation.accuracy is None and evaluation.confusion is None
    np.testing.assert_array_equal(evaluation.predictions, outputs)
    assert set(evaluation.to_json()) == {"loss", "samples"}


def test_a_training_graph_evaluates_its_forward_only_and_changes_nothing(tmp_path: Path) -> None:
    path = dataset(tmp_path / "d.npz", 5)
    training = build_training_graph(EXAMPLES / "mlp.onnx", Options(momentum=0.9))
    before = {name: array.copy() for name, array in training.initial.items()}
    forward = forward_graph(EXAMPLES / "mlp.onnx", Options())
    ours = evaluate_graph(training, load_eval_data(training, path), "cross_entropy")
    theirs = evaluate_graph(forward, load_eval_data(forward, path), "cross_entropy")
    assert ours.loss == theirs.loss
    for name, array in training.initial.items():
        np.testing.assert_array_equal(array, before[name])


def test_parse_outputs_reads_out_blocks_and_ignores_the_rest() -> None:
    text = "LOSS 0 1.0\nOUT 0 3\n1.5 -2.0 0.100000001\nEND\nDMA 0 0 0\n"
    printed = parse_outputs(text)
    np.testing.assert_array_equal(printed[0], np.array([1.5, -2.0, 0.1], np.float32))
    with pytest.raises(ValueError, match="2 values printed, 3 expected"):
        parse_outputs("OUT 0 3\n1.0 1.0\nEND\n")


def test_compare_outputs_catches_a_wrong_value() -> None:
    expected = np.linspace(-1, 1, 20).reshape(4, 5)
    assert compare_outputs(expected, expected.astype(np.float32).astype(np.float64))["ok"]
    wrong = expected.copy()
    wrong[2, 3] += 1e-3
    assert not compare_outputs(expected, wrong)["ok"]
    assert not compare_outputs(expected, np.full_like(expected, np.nan))["ok"]


@pytest.mark.parametrize("changes, message", [
    ({"target": np.array([0, 1, 99])}, "labels must lie in [0, 10)"),
    ({"target": np.array([0.0, 1.0, 2.0])}, "integer class labels"),
    ({"target": np.array([0, 1])}, "'target' has 2 rows, the other arrays 3"),
    ({"input": np.zeros((3, 7), np.float32)}, "sample shape [7]"),
    ({"input": np.zeros((3, 64), np.int64)}, "astype(np.float32)"),
    ({"input": np.full((3, 64), np.inf, np.float32)}, "NaN or infinity"),
    ({"input": np.full((3, 64), 1e300)}, "beyond float32's range"),
    ({"target": np.int64(3)}, "sample shape"),
])
def test_bad_data_is_a_one_line_error(tmp_path: Path, changes: dict[str, np.ndarray], message: str) -> None:
    graph = forward_graph(EXAMPLES / "mlp.onnx", Options())
    path = dataset(tmp_path / "d.npz", 3, **changes)
    with pytest.raises(UserError) as caught:
        load_eval_data(graph, path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unreadable_data_files(tmp_path: Path) -> None:
    graph = forward_graph(EXAMPLES / "mlp.onnx", Options())
    np.save(tmp_path / "plain.npy", np.zeros(3))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "empty.npz", input=np.zeros((0, 64), np.float32), target=np.zeros(0, np.int64))
    for name, message in (("plain.npy", "a plain .npy array"), ("junk.npz", "not a readable .npz"),
                          ("missing.npz", "no such data file"), ("empty.npz", "no samples")):
        with pytest.raises(UserError, match=message):
            load_eval_data(graph, tmp_path / name)


def test_arrays_the_model_does_not_read_are_named_in_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = forward_graph(EXAMPLES / "mlp.onnx", Options())
    data = load_eval_data(graph, dataset(tmp_path / "d.npz", 3, extra=np.zeros(3)))
    assert data.samples == 3
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and "warning" in warning and "'extra'" in warning

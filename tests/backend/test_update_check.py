"""The simulator check compares each parameter's update and last gradient, not only its final value."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyodl.driver.check import SimOutput, compare
from tinyodl.driver.data import load_batches
from tinyodl.driver.options import Options
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.driver.reference import ReferenceRun, run_reference

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _reference(optimizer: str = "sgd") -> ReferenceRun:
    graph = build_training_graph(EXAMPLES / "dscnn.onnx", Options(lr=0.01, optimizer=optimizer))
    return run_reference(graph, load_batches(graph, None, 1))


def _rounded(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: value.astype(np.float32) for name, value in arrays.items()}


def test_float32_rounding_of_the_exact_result_passes() -> None:
    reference = _reference()
    losses = [float(np.float32(x)) for x in reference.losses]
    check = compare(reference, SimOutput(losses, _rounded(reference.params), _rounded(reference.grads)), 1)
    assert check["ok"], check


def test_a_lost_update_fails_even_when_final_values_are_close() -> None:
    reference = _reference()
    no_update = _rounded(reference.initial)
    check = compare(reference, SimOutput(list(reference.losses), no_update, _rounded(reference.grads)), 1)
    assert not check["ok"]
    assert check["worst"]["tensor"].startswith("update of ")


def test_a_wrong_gradient_fails_under_adam() -> None:
    reference = _reference("adam")
    grads = _rounded(reference.grads)
    grads["blocks.0.dw.weight"] = grads["blocks.0.dw.weight"] * np.float32(1.01)
    check = compare(reference, SimOutput(list(reference.losses), _rounded(reference.params), grads), 1)
    assert not check["ok"]
    assert check["worst"]["tensor"] == "gradient of blocks.0.dw.weight"


def test_a_missing_gradient_fails() -> None:
    reference = _reference()
    grads = _rounded(reference.grads)
    del grads["fc.bias"]
    check = compare(reference, SimOutput(list(reference.losses), _rounded(reference.params), grads), 1)
    assert not check["ok"] and check["worst"]["tensor"] == "gradient of fc.bias"

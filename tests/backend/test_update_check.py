"""The simulator check compares every parameter's update, not only its final value."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyodl.driver import TrainingOptions, build_training_graph
from tinyodl.qemu_sim import SimOutput, compare
from tinyodl.simulate import load_batches, run_reference

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _reference():  # type: ignore[no-untyped-def]
    graph = build_training_graph(EXAMPLES / "dscnn.onnx", TrainingOptions(lr=0.01))
    return run_reference(graph, load_batches(graph, None, 1))


def test_a_lost_update_fails_even_when_final_values_are_close() -> None:
    reference = _reference()
    no_update = {name: init.astype(np.float32) for name, init in reference.initial.items()}
    check = compare(reference, SimOutput(list(reference.losses), no_update), 1)
    assert not check["ok"]
    assert check["worst"]["tensor"].startswith("update of ")


def test_float32_rounding_of_the_exact_result_passes() -> None:
    reference = _reference()
    rounded = {name: value.astype(np.float32) for name, value in reference.params.items()}
    check = compare(reference, SimOutput([float(np.float32(x)) for x in reference.losses], rounded), 1)
    assert check["ok"], check

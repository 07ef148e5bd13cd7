"""The step-local check (driver/check.py) on simulated outputs made on the host: the exact results rounded to
float32 pass, and a lost update, a wrong gradient element or a wrong loss fail, naming the tensor and step."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyodl.driver.bounds import run_step
from tinyodl.driver.check import SimOutput, StepState, check_steps
from tinyodl.driver.data import load_batches
from tinyodl.driver.options import Options
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.ir.graph import Graph
from tinyodl.ir.types import Phase

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STEPS = 3


def _words(array: np.ndarray, is_float: bool) -> np.ndarray:
    return np.asarray(array, np.float32 if is_float else np.int32).reshape(-1).view(np.uint32)


def _simulate(optimizer: str) -> tuple[Graph, list, SimOutput]:
    """What a correct float32 program prints: every step from its own rounded state, every state printed."""
    graph = build_training_graph(EXAMPLES / "dscnn.onnx", Options(lr=0.01, optimizer=optimizer, momentum=0.0))
    feeds = load_batches(graph, None, STEPS).steps
    trainable = {v.name: v.origin or v.name for v in graph.trainable_params()}
    grad_of = {op.inputs[0].name: op.inputs[1].name for op in graph.ops
               if op.phase is Phase.UPDATE and len(op.inputs) > 1}
    state = {v.name: np.asarray(graph.initial[v.name]) for v in graph.params + graph.state}
    output = SimOutput([], {})
    for step in range(STEPS):
        run = run_step(graph, state, feeds[step])
        output.losses.append(float(np.float32(run.values[graph.outputs[0].name])))
        for name, array in run.state_after.items():
            state[name] = np.asarray(array, np.float32 if array.dtype.kind == "f" else np.int32)
        output.states[step] = StepState(
            params={onnx: state[ir].reshape(-1).astype(np.float32) for ir, onnx in trainable.items()},
            grads={onnx: run.values[grad_of[ir]].reshape(-1).astype(np.float32) for ir, onnx in trainable.items()
                   if ir in grad_of},
            state={v.name: _words(state[v.name], v.dtype.is_float) for v in graph.state})
    return graph, feeds, output


def test_float32_rounding_of_the_exact_results_passes() -> None:
    for optimizer in ("sgd", "adam"):
        graph, feeds, output = _simulate(optimizer)
        check = check_steps(graph, feeds, output)
        assert check["ok"], check
        assert check["checked_steps"] == list(range(STEPS))


def test_a_lost_update_fails() -> None:
    graph, feeds, output = _simulate("sgd")
    output.states[2].params["blocks.0.dw.weight"] = output.states[1].params["blocks.0.dw.weight"].copy()
    check = check_steps(graph, feeds, output)
    assert not check["ok"]
    assert check["worst"]["tensor"] == "blocks.0.dw.weight [after step 2]", check


def test_one_wrong_gradient_element_fails_under_adam() -> None:
    graph, feeds, output = _simulate("adam")
    grads = output.states[2].grads["blocks.0.dw.weight"]
    grads[5] *= np.float32(1.001)
    check = check_steps(graph, feeds, output)
    assert not check["ok"]
    # the printed gradient, and the update the reference re-runs on it, disagree with the state printed
    assert "blocks.0.dw.weight" in check["worst"]["tensor"] and "step 2" in check["worst"]["tensor"], check


def test_a_wrong_loss_fails_and_a_non_finite_one_is_named() -> None:
    graph, feeds, output = _simulate("sgd")
    output.losses[1] *= 1.0001
    assert check_steps(graph, feeds, output)["worst"]["tensor"] == "loss[step 1]"
    output.losses[1] = float("nan")
    check = check_steps(graph, feeds, output)
    assert not check["ok"] and "step 1" in check["reason"], check


def test_states_not_printed_fail() -> None:
    graph, feeds, output = _simulate("sgd")
    output.states = {}
    assert not check_steps(graph, feeds, output)["ok"]

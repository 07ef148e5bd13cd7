"""The simulator against the reference, step-locally: the reference re-runs each checkpoint step from the
simulator's own state before it.

Training can be chaotic (a ReLU that flips on a difference of 1e-6 sends two trajectories apart), so a long
run is not compared with a reference trajectory. Instead, at every checkpoint step k the program printed its
full state after step k-1 (or k = 0 starts from the initial values) and after step k; the float64 reference
runs step k from the first and must reproduce, within float32 error bounds (driver/bounds.py):
- the loss of step k and every parameter gradient of step k (bounds from the magnitudes involved);
- the parameters and optimizer state after step k, with the update re-run on the program's own gradients so
  that only the update's few roundings remain: UPDATE_ROUNDINGS * (eps32 * (|before| + |after| + A |change|)
  + 2^-149) element by element (2^-149: subnormals round absolutely; A grows the change's rounding where the
  update amplifies it, see `_amplification`); integer state (the step counter) exactly.
Every loss the program printed must also be finite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl.driver.bounds import F32_EPS, F32_SUBNORMAL, run_step
from tinyodl.ir.graph import Graph
from tinyodl.ir.registry import kernel_of, lookup
from tinyodl.ir.types import Phase

UPDATE_ROUNDINGS = 16.0  # an optimizer update is a handful of float32 operations per element


@dataclass
class StepState:
    """The program's full state after one step, as it printed it (raw float32 / int32 words)."""

    params: dict[str, np.ndarray] = field(default_factory=dict)  # trainable parameters by ONNX name
    grads: dict[str, np.ndarray] = field(default_factory=dict)   # their gradients in this step
    state: dict[str, np.ndarray] = field(default_factory=dict)   # optimizer state by IR name, as uint32 words


@dataclass
class SimOutput:
    losses: list[float]
    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray] = field(default_factory=dict)  # of the last step
    dma: tuple[int, int, int] = (0, 0, 0)  # bytes, transfers, modelled cycles
    states: dict[int, StepState] = field(default_factory=dict)  # after the steps around each checkpoint


def check_steps(graph: Graph, feeds: Sequence[Mapping[str, np.ndarray]], simulated: SimOutput) -> dict[str, Any]:
    """Check every checkpoint step the program printed states around; report the worst tensor."""
    if len(simulated.losses) != len(feeds):
        return _failed("loss", f"the program printed {len(simulated.losses)} of {len(feeds)} losses")
    bad = [step for step, loss in enumerate(simulated.losses) if not np.isfinite(loss)]
    if bad:
        return _failed(f"loss[step {bad[0]}]", f"the loss of step {bad[0]} is {simulated.losses[bad[0]]}")
    grad_of = {op.inputs[0].name: op.inputs[1].name for op in graph.ops
               if op.phase is Phase.UPDATE and len(op.inputs) > 1}
    # a checkpoint step: the state before it was printed, and so were its gradients (a state printed only
    # as "the step before a checkpoint" has none, even when the step before it happens to be printed too)
    steps = [step for step in sorted(simulated.states) if (step == 0 or step - 1 in simulated.states)
             and (simulated.states[step].grads or not grad_of)]
    if not steps:
        return _failed("state", "the program printed no checkpoint states")
    trainable = {v.origin or v.name: v for v in graph.trainable_params()}
    worst: dict[str, Any] = {"tensor": "", "rel_err": 0.0, "tolerance_ratio": -1.0}
    for step in steps:
        before = _state_before(graph, simulated, step, trainable)
        after = simulated.states[step]
        sim_grads = {grad_of[trainable[name].name]: flat for name, flat in after.grads.items()
                     if trainable[name].name in grad_of}
        run = run_step(graph, before, feeds[step], updates=sim_grads)
        found = [_compare(f"loss[step {step}]", np.array([simulated.losses[step]]),
                          run.values[graph.outputs[0].name], run.bounds[graph.outputs[0].name])]
        for name, value in trainable.items():
            grad = grad_of.get(value.name)
            if grad is not None:
                found.append(_compare(f"gradient of {name} [step {step}]", after.grads.get(name),
                                      run.values[grad], run.bounds[grad]))
            if value.name in run.state_after:
                found.append(_compare_update(f"{name} [after step {step}]", after.params.get(name),
                                             before[value.name], run.state_after[value.name],
                                             _amplification(graph, value.name, run.state_after)))
        for value in graph.state:
            words = after.state.get(value.name)
            actual = None if words is None else words.view(np.float32 if value.dtype.is_float else np.int32)
            found.append(_compare_update(f"{value.name} [after step {step}]", actual, before[value.name],
                                         run.state_after.get(value.name, before[value.name])))
        for tensor, ratio, rel in found:
            if ratio > worst["tolerance_ratio"]:
                worst = {"tensor": tensor, "rel_err": rel, "tolerance_ratio": ratio}
    return {"ok": bool(worst["tolerance_ratio"] <= 1.0), "worst": worst, "checked_steps": steps,
            "method": "step-local: each checked step re-run in float64 from the program's own state, float32 "
                      "error bounds from the magnitudes involved (driver/bounds.py, driver/check.py)"}


def _failed(tensor: str, reason: str) -> dict[str, Any]:
    return {"ok": False, "worst": {"tensor": tensor, "rel_err": float("inf"), "tolerance_ratio": float("inf")},
            "reason": reason}


def _state_before(graph: Graph, simulated: SimOutput, step: int, trainable: Mapping[str, Any]
                  ) -> dict[str, np.ndarray]:
    """Every parameter and optimizer state before `step`: the initial values, or the program's after step-1."""
    state = {value.name: np.asarray(graph.initial[value.name]) for value in graph.params + graph.state}
    if step == 0:
        return state
    printed = simulated.states[step - 1]
    for name, value in trainable.items():
        if name in printed.params:
            state[value.name] = printed.params[name].reshape(value.shape)
    for value in graph.state:
        if value.name in printed.state:
            words = printed.state[value.name]
            state[value.name] = words.view(np.float32 if value.dtype.is_float else np.int32).reshape(value.shape)
    return state


def _compare(tensor: str, actual: np.ndarray | None, expected: np.ndarray, bound: np.ndarray
             ) -> tuple[str, float, float]:
    """(tensor, worst error / bound, normwise relative error)."""
    if actual is None:
        return tensor, float("inf"), float("inf")
    expected = np.asarray(expected, np.float64).reshape(-1)
    error = np.abs(np.asarray(actual, np.float64).reshape(-1) - expected)
    if not np.all(np.isfinite(error)):
        return tensor, float("inf"), float("inf")
    bound = np.broadcast_to(np.asarray(bound, np.float64).reshape(-1), error.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(error > 0, error / bound, 0.0)
    scale = float(np.max(np.abs(expected), initial=0.0))
    return tensor, float(np.max(ratios, initial=0.0)), float(np.max(error, initial=0.0)) / (scale or 1.0)


def _amplification(graph: Graph, param: str, state_after: Mapping[str, np.ndarray]) -> float:
    """How much an update's own rounding grows beyond a few eps32: Adam's bias corrections 1 - beta^t are
    computed in float32 from beta^t by ~2 log2(t) multiplies, and the subtraction from 1 multiplies that
    rounding by beta^t / (1 - beta^t) (about 50 for beta2 = 0.999 at t = 20); the second correction enters
    under a square root."""
    for op in graph.ops:
        kernel, attrs = kernel_of(op.type, op.attrs)
        if op.phase is not Phase.UPDATE or kernel != "adam_update" or op.inputs[0].name != param:
            continue
        t = int(np.asarray(state_after.get(op.inputs[4].name, 1)).reshape(-1)[0])
        defaults = lookup(kernel).with_defaults(attrs)
        beta1, beta2 = float(np.float32(defaults["beta1"])), float(np.float32(defaults["beta2"]))
        powers = 2.0 * np.log2(t + 1) + 1.0
        return 1.0 + powers * (beta1**t / (1.0 - beta1**t) + 0.5 * beta2**t / (1.0 - beta2**t))
    return 1.0


def _compare_update(tensor: str, actual: np.ndarray | None, before: np.ndarray, expected: np.ndarray,
                    amplification: float = 1.0) -> tuple[str, float, float]:
    if np.issubdtype(np.asarray(expected).dtype, np.integer):
        same = actual is not None and np.array_equal(np.asarray(actual).reshape(-1), np.asarray(expected).reshape(-1))
        return tensor, 0.0 if same else float("inf"), 0.0 if same else float("inf")
    before = np.asarray(before, np.float64).reshape(-1)
    after = np.asarray(expected, np.float64).reshape(-1)
    change = amplification * np.abs(after - before)
    bound = UPDATE_ROUNDINGS * (F32_EPS * (np.abs(before) + np.abs(after) + change) + F32_SUBNORMAL)
    return _compare(tensor, actual, after, bound)

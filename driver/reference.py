"""The numpy reference: the same training graph run in float64, the golden numbers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tinyodl.driver.data import Batches
from tinyodl.driver.options import UserError
from tinyodl.driver.precision import loss_scaling_values
from tinyodl.ir.executor import Executor
from tinyodl.ir.graph import Graph
from tinyodl.ir.types import Phase


@dataclass
class ReferenceRun:
    losses: list[float]
    params: dict[str, np.ndarray]        # by ONNX initializer name, after the last step
    executor: Executor
    initial: dict[str, np.ndarray] = field(default_factory=dict)  # by ONNX initializer name, before step 0
    grads: dict[str, np.ndarray] = field(default_factory=dict)    # by ONNX initializer name, of the last step
    linear_updates: set[str] = field(default_factory=set)         # parameters whose update is plain SGD
    # With loss scaling: the scale each step used, and whether its update was skipped (gradients overflowed).
    loss_scales: list[float] = field(default_factory=list)
    skipped: list[bool] = field(default_factory=list)


def run_reference(graph: Graph, batches: Batches,
                  on_step: Callable[[int, float], None] | None = None) -> ReferenceRun:
    """Every step in float64; `on_step(step, loss)` after each (progress)."""
    executor = Executor(graph)
    trainable = graph.trainable_params()
    initial = {v.origin or v.name: executor.param(v.name).copy() for v in trainable}
    updates = {op.inputs[0]: op for op in graph.ops if op.phase is Phase.UPDATE and len(op.inputs) > 1}
    loss_value = graph.outputs[0]
    scaling = loss_scaling_values(graph)
    losses, scales, skipped = [], [], []
    env: dict[str, np.ndarray] = {}
    for step, feed in enumerate(batches.steps):
        if scaling is not None:
            scales.append(float(executor.param(scaling[0].name)))
        with np.errstate(all="ignore"):  # a diverging run is reported below, once, not as numpy warnings
            env = executor.run(feed)
        if scaling is not None:
            skipped.append(bool(env[scaling[1].name]))
        losses.append(float(env[loss_value.name]))
        if not np.isfinite(losses[-1]):
            raise UserError(f"training diverged: the reference loss of step {step} is {losses[-1]} (try a "
                            "smaller --lr)")
        if on_step is not None:
            on_step(step, losses[-1])
    params = {v.origin or v.name: executor.param(v.name) for v in trainable}
    grads = {v.origin or v.name: env[updates[v].inputs[1].name] for v in trainable if v in updates}
    linear = {v.origin or v.name for v in trainable if v in updates and updates[v].type == "sgd_update"}
    return ReferenceRun(losses, params, executor, initial=initial, grads=grads,
                        linear_updates=linear, loss_scales=scales, skipped=skipped)

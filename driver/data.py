"""`tinyodl simulate`: data loading, training steps on a target, checks against the reference, the report."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyodl.driver import UserError
from tinyodl.ir.executor import Executor
from tinyodl.ir.graph import Graph, Value
from tinyodl.ir.types import Phase


def loss_op_target(graph: Graph) -> Value:
    for op in graph.ops:
        if op.phase is Phase.LOSS:
            return op.inputs[1]
    raise UserError("the graph has no loss")


@dataclass
class Batches:
    """Per-step feeds: input name -> array for that step."""

    steps: list[dict[str, np.ndarray]]


def load_batches(graph: Graph, data: Path | None, steps: int) -> Batches:
    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    target = loss_op_target(graph)
    inputs = [v for v in graph.inputs if v is not target]
    if data is None:
        return Batches([_random_feed(graph, inputs, target, step) for step in range(steps)])
    try:
        with np.load(data, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise UserError(f"{data}: no such data file") from None
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile) as exc:  # zipfile: RuntimeError for
        # an encrypted member, NotImplementedError (a RuntimeError) for an unknown version or compression
        raise UserError(f"{data}: not a readable .npz file ({exc})") from None
    feeds: list[dict[str, np.ndarray]] = [{} for _ in range(steps)]
    for value, key in [(v, v.origin or v.name) for v in inputs] + [(target, "target")]:
        if key not in arrays:
            raise UserError(f"{data}: no array '{key}' (the model's inputs are "
                            f"{', '.join(v.origin or v.name for v in inputs)}, plus 'target')")
        array = arrays[key]
        if array.shape[1:] != value.shape[1:]:
            raise UserError(f"{data}: '{key}' has sample shape {list(array.shape[1:])}, the model needs "
                            f"{list(value.shape[1:])}")
        rows = value.shape[0]  # the batch for inputs; an mse target has the output's first axis
        if array.shape[0] < steps * rows:
            raise UserError(f"{data}: '{key}' has {array.shape[0]} samples, {steps} steps of batch {rows} need "
                            f"{steps * rows}")
        array = _check_target(data, array, graph, target) if value is target else _check_input(data, key, array)
        array = array.astype(value.dtype.numpy)  # the reference sees exactly what the program is given
        for step in range(steps):
            feeds[step][value.name] = array[step * rows:(step + 1) * rows]
    return Batches(feeds)


def _check_input(data: Path, key: str, array: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise UserError(f"{data}: '{key}' must hold real numbers, got {array.dtype}")
    return array


def _check_target(data: Path, array: np.ndarray, graph: Graph, target: Value) -> np.ndarray:
    if target.dtype.is_float:
        if not np.issubdtype(array.dtype, np.floating):
            raise UserError(f"{data}: 'target' must hold floats for the mse loss, got {array.dtype}")
        return array
    if not np.issubdtype(array.dtype, np.integer):
        raise UserError(f"{data}: 'target' must hold integer class labels for cross-entropy, got {array.dtype}")
    logits = next(op.inputs[0] for op in graph.ops if op.phase is Phase.LOSS)
    classes = logits.shape[1]
    if array.size and (array.min() < 0 or array.max() >= classes):
        raise UserError(f"{data}: 'target' labels must lie in [0, {classes}), found {array.min()}..{array.max()}")
    return array


def _random_feed(graph: Graph, inputs: list[Value], target: Value, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1000 + step)
    feed = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in inputs}
    if target.dtype.is_float:
        feed[target.name] = rng.standard_normal(target.shape).astype(np.float32)
    else:
        logits = next(op.inputs[0] for op in graph.ops if op.phase is Phase.LOSS)
        feed[target.name] = rng.integers(0, logits.shape[1], size=target.shape).astype(np.int64)
    return feed


@dataclass
class ReferenceRun:
    losses: list[float]
    params: dict[str, np.ndarray]        # by ONNX initializer name, after the last step
    executor: Executor
    initial: dict[str, np.ndarray] = field(default_factory=dict)  # by ONNX initializer name, before step 0
    grads: dict[str, np.ndarray] = field(default_factory=dict)    # by ONNX initializer name, of the last step
    linear_updates: set[str] = field(default_factory=set)         # parameters whose update is plain SGD


def run_reference(graph: Graph, batches: Batches) -> ReferenceRun:
    executor = Executor(graph)
    trainable = graph.trainable_params()
    initial = {v.origin or v.name: executor.param(v.name).copy() for v in trainable}
    updates = {op.inputs[0]: op for op in graph.ops if op.phase is Phase.UPDATE and len(op.inputs) > 1}
    loss_value = graph.outputs[0]
    losses = []
    env: dict[str, np.ndarray] = {}
    for feed in batches.steps:
        env = executor.run(feed)
        losses.append(float(env[loss_value.name]))
    params = {v.origin or v.name: executor.param(v.name) for v in trainable}
    grads = {v.origin or v.name: env[updates[v].inputs[1].name] for v in trainable if v in updates}
    linear = {v.origin or v.name for v in trainable if v in updates and updates[v].type == "sgd_update"}
    return ReferenceRun(losses, params, executor, initial=initial, grads=grads,
                        linear_updates=linear)


def check_writable(*paths: Path | None) -> None:
    """Fail before any work when an output file cannot go where the user asked (so none is half-written)."""
    for path in (Path(p) for p in paths if p is not None):
        if path.is_dir():
            raise UserError(f"{path}: is a directory, expected a file name")
        ancestor = path.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise UserError(f"{path}: {ancestor} is not a directory")
        if not os.access(ancestor, os.W_OK):
            raise UserError(f"{path}: cannot write into {ancestor}")


def write_atomic(path: Path, write: Any) -> None:
    """Write a file through a temporary sibling so that no half-written file is left on failure."""
    path = Path(path)
    check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from None
    os.close(handle)
    try:
        write(Path(temp))
        Path(temp).chmod(0o666 & ~_umask())  # mkstemp's 0600 would make the result private
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def save_params(path: Path, params: dict[str, np.ndarray]) -> None:
    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:
            np.savez(handle, **{name: np.asarray(array, np.float32) for name, array in params.items()})
    write_atomic(path, write)


def save_report(path: Path, report: dict[str, Any]) -> None:
    write_atomic(path, lambda temp: temp.write_text(json.dumps(report, indent=2) + "\n"))

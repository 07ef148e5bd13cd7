"""Data files to per-step batches: one feed (input name -> array) per training step."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyodl.driver.options import UserError
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

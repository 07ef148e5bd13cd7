"""Data files to per-step batches: one feed (input name -> array) per training step."""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from tinyodl.driver.notices import warn
from tinyodl.driver.options import UserError
from tinyodl.frontend.onnx_load import shown
from tinyodl.ir.graph import Graph, Value
from tinyodl.ir.types import Phase


def loss_op_target(graph: Graph) -> Value:
    for op in graph.ops:
        if op.phase is Phase.LOSS:
            return op.inputs[1]
    raise UserError("the graph has no loss")


@dataclass
class Dataset:
    """One array per data input (IR name -> rows x sample) and, per input, the rows of each step (steps x rows
    per step)."""

    arrays: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]


class StepFeeds(list[dict[str, np.ndarray]]):
    """Per-step feeds that also carry the dataset they index, so a C program can embed every row once."""

    dataset: Dataset | None = None


@dataclass
class Batches:
    """Per-step feeds: input name -> array for that step."""

    steps: list[dict[str, np.ndarray]]


# Larger data arrays are refused from their .npy header, before anything is allocated.
MAX_ARRAY_BYTES = 2**31 - 1


def load_batches(graph: Graph, data: Path | None, steps: int, *, epochs: int | None = None,
                 shuffle: int | None = None) -> Batches:
    """The feeds of every step. Step s of a data file takes the s-th batch of consecutive rows; an epoch is
    floor(rows / batch) batches (the last partial batch is dropped), `epochs` sets the number of steps to
    epochs x batches per epoch (otherwise `steps` runs as many epochs as it needs), and `shuffle` draws a new
    order of the rows for every epoch from that seed."""
    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    target = loss_op_target(graph)
    inputs = [v for v in graph.inputs if v is not target]
    if data is None:
        if epochs is not None or shuffle is not None:
            raise UserError("--epochs and --shuffle need a data file (--data)")
        return Batches([_random_feed(graph, inputs, target, step) for step in range(steps)])
    where, wanted, checked = read_model_arrays(graph, data, inputs, target)
    per_step = {value.name: value.shape[0] for value, _ in wanted}  # an mse target has the output's first axis
    keys = {value.name: key for value, key in wanted}
    rows = _step_rows(where, checked, per_step, keys, steps, epochs, shuffle)
    feeds = StepFeeds({name: array[rows[name][step]] for name, array in checked.items()}
                      for step in range(len(rows[wanted[0][0].name])))
    feeds.dataset = Dataset(checked, rows)
    return Batches(feeds)


def read_model_arrays(graph: Graph, data: Path, inputs: list[Value], target: Value
                      ) -> tuple[str, list[tuple[Value, str]], dict[str, np.ndarray]]:
    """The data file's array for every model input and the target, checked and converted to the model's
    dtypes (by IR value name); a warning names the arrays the model does not read. Returns the file's name
    as shown in messages, the (value, array name) pairs, and the arrays."""
    where = shown(str(data))
    arrays = _read_npz(Path(data), where)
    wanted = [(v, v.origin or v.name) for v in inputs] + [(target, "target")]
    unused = sorted(set(arrays) - {key for _, key in wanted})
    if unused:
        warn(f"{where}: array(s) {', '.join(repr(shown(k)) for k in unused)} not used by the model (it reads "
             f"{', '.join(repr(key) for _, key in wanted)})")
    checked: dict[str, np.ndarray] = {}
    for value, key in wanted:
        if key not in arrays:
            raise UserError(f"{where}: no array '{key}' (the model's inputs are "
                            f"{', '.join(v.origin or v.name for v in inputs)}, plus 'target')")
        array = arrays[key]
        if array.ndim == 0:
            raise UserError(f"{where}: '{key}' is a 0-d array without a sample shape; it needs one row per "
                            "sample")
        if array.shape[1:] != value.shape[1:]:
            raise UserError(f"{where}: '{key}' has sample shape {list(array.shape[1:])}, the model needs "
                            f"{list(value.shape[1:])}")
        array = _check_target(where, array, graph, target) if value is target else _check_input(where, key, array)
        checked[value.name] = array.astype(value.dtype.numpy)  # the reference sees exactly what the program gets
    return where, wanted, checked


def _read_npz(data: Path, where: str) -> dict[str, np.ndarray]:
    """Every member of an .npz, each checked from its header before it is read."""
    try:
        with open(data, "rb") as handle:
            magic = handle.read(6)
    except FileNotFoundError:
        raise UserError(f"{where}: no such data file") from None
    except OSError as exc:
        raise UserError(f"{where}: cannot read ({exc.strerror or exc})") from None
    if magic == b"\x93NUMPY":
        raise UserError(f"{where}: a plain .npy array; tinyodl needs an .npz with one array per model input plus "
                        "'target' (np.savez(path, x=..., target=...))")
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(data) as archive:
            for member in archive.namelist():
                key = member.removesuffix(".npy")
                with archive.open(member) as handle:
                    arrays[key] = _read_member(handle, where, key)
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile) as exc:  # zipfile: RuntimeError for
        # an encrypted member, NotImplementedError (a RuntimeError) for an unknown version or compression
        raise UserError(f"{where}: not a readable .npz file ({shown(str(exc))})") from None
    return arrays


def _read_member(handle: IO[bytes], where: str, key: str) -> np.ndarray:
    try:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise UserError(f"{where}: member '{shown(key)}' is not a valid array ({shown(str(exc))})") from None
    if dtype.hasobject:
        raise UserError(f"{where}: member '{shown(key)}' holds Python objects; tinyodl reads numeric arrays only")
    if math.prod(shape) * dtype.itemsize > MAX_ARRAY_BYTES:
        raise UserError(f"{where}: member '{shown(key)}' declares shape {list(shape)} of {dtype}, larger than "
                        "tinyodl reads")
    handle.seek(0)
    try:
        return np.asarray(np.lib.format.read_array(handle, allow_pickle=False))
    except (ValueError, EOFError) as exc:
        raise UserError(f"{where}: member '{shown(key)}' is not a valid array ({shown(str(exc))})") from None


def _step_rows(where: str, arrays: dict[str, np.ndarray], per_step: dict[str, int], keys: dict[str, str],
               steps: int, epochs: int | None, shuffle: int | None) -> dict[str, np.ndarray]:
    """The rows of every step (steps x rows per step) of each array: epoch after epoch, each in file order or
    shuffled (arrays of the same length get the same order, so samples stay paired)."""
    per_epoch = min(len(arrays[name]) // count for name, count in per_step.items())
    if epochs is None and shuffle is None:  # one pass: the file must hold every step
        for name, count in per_step.items():
            if len(arrays[name]) < steps * count:
                raise UserError(f"{where}: '{keys[name]}' has {len(arrays[name])} samples, {steps} steps of batch "
                                f"{count} need {steps * count} (--epochs or --shuffle run passes over the file)")
    if per_epoch == 0:
        name = min(per_step, key=lambda n: len(arrays[n]) // per_step[n])
        raise UserError(f"{where}: '{keys[name]}' has {len(arrays[name])} samples, fewer than one batch of "
                        f"{per_step[name]}")
    total = epochs * per_epoch if epochs is not None else steps
    passes = -(-total // per_epoch)
    tables = {}
    for name, count in per_step.items():
        length = len(arrays[name])
        orders = [np.random.default_rng([shuffle, epoch]).permutation(length) if shuffle is not None
                  else np.arange(length) for epoch in range(passes)]
        used = np.concatenate([order[:per_epoch * count] for order in orders])
        tables[name] = used[:total * count].reshape(total, count)
    return tables


def _check_input(where: str, key: str, array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        raise UserError(f"{where}: '{key}' holds {array.dtype}, the model's input is float32 (convert it with "
                        f"{key}.astype(np.float32))")
    if not np.issubdtype(array.dtype, np.floating):
        raise UserError(f"{where}: '{key}' must hold real numbers, got {array.dtype}")
    return _check_finite(where, key, array)


def _check_finite(where: str, key: str, array: np.ndarray) -> np.ndarray:
    """Refuse NaN, infinities and values that float32 cannot hold: training on them gives no useful number."""
    bad = ~np.isfinite(array)
    if np.any(bad):
        raise UserError(f"{where}: '{key}' holds NaN or infinity ({int(np.count_nonzero(bad))} elements, the first "
                        f"at row {int(np.argwhere(bad)[0][0])}); tinyodl does not train on non-finite data")
    too_large = np.abs(array) > np.finfo(np.float32).max
    if np.any(too_large):
        raise UserError(f"{where}: '{key}' holds values beyond float32's range ({int(np.count_nonzero(too_large))} "
                        f"elements, the first at row {int(np.argwhere(too_large)[0][0])})")
    return array


def _check_target(where: str, array: np.ndarray, graph: Graph, target: Value) -> np.ndarray:
    if target.dtype.is_float:
        if not np.issubdtype(array.dtype, np.floating):
            raise UserError(f"{where}: 'target' must hold floats for the mse loss, got {array.dtype}")
        return _check_finite(where, "target", array)
    if not np.issubdtype(array.dtype, np.integer):
        raise UserError(f"{where}: 'target' must hold integer class labels for cross-entropy, got {array.dtype}")
    logits = next(op.inputs[0] for op in graph.ops if op.phase is Phase.LOSS)
    classes = logits.shape[1]
    if array.size and (array.min() < 0 or array.max() >= classes):
        raise UserError(f"{where}: 'target' labels must lie in [0, {classes}), found {array.min()}..{array.max()}")
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

"""The data a generated program trains on: every row of the dataset once, and a table of the rows of each step.

A long run over a small dataset (epochs, shuffling) would otherwise embed one copy of every batch per step.
Rows are the first axis of every data input; all inputs of a step take the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tinyodl.backend_c.names import c_float_exact
from tinyodl.backend_c.program import Buffer
from tinyodl.driver.data import Dataset


def dataset_of(steps: Sequence[Mapping[str, np.ndarray]]) -> Dataset:
    """The dataset behind per-step feeds: the one the data loader attached, or every step's rows in turn."""
    attached = getattr(steps, "dataset", None)
    if isinstance(attached, Dataset):
        return attached
    names = list(steps[0]) if steps else []
    arrays = {name: np.concatenate([np.asarray(feed[name]) for feed in steps]) for name in names}
    return Dataset(arrays, {name: np.arange(len(arrays[name])).reshape(len(steps), -1) for name in names})


def dataset_context(steps: Sequence[Mapping[str, np.ndarray]], inputs: Sequence[Buffer]) -> dict[str, Any]:
    """What data.h.j2 renders, per input: its rows as a C initializer and its step x row table."""
    dataset = dataset_of(steps)
    tables = []
    for buffer in inputs:
        array = dataset.arrays[buffer.value_name]
        rows = dataset.rows[buffer.value_name]
        flat = array.astype(np.int32 if buffer.ctype == "int" else np.float32).reshape(-1)
        index_type = "uint16_t" if rows.size == 0 or int(rows.max()) < 2**16 else "uint32_t"
        tables.append({"buffer": buffer, "rows": len(array), "row_numel": buffer.numel // max(rows.shape[1], 1),
                       "per_step": rows.shape[1], "init": _initializer(flat), "index_type": index_type,
                       "step_rows": _initializer(rows.reshape(-1))})
    return {"datasets": tables}


def _initializer(flat: np.ndarray) -> str:
    if np.issubdtype(flat.dtype, np.integer):
        words = [str(int(v)) for v in flat]
    else:
        words = [c_float_exact(float(v)) for v in flat]
    return ",\n    ".join(", ".join(words[i:i + 8]) for i in range(0, len(words), 8))

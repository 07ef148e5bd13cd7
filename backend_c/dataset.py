"""The data a generated program trains on: every row of the dataset once, and a table of the rows of each step.

A long run over a small dataset (epochs, shuffling) would otherwise embed one copy of every batch per step.
Rows are the first axis of every data input; all inputs of a step take the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyodl.backend_c.names import c_float_exact
from tinyodl.backend_c.program import Buffer


@dataclass
class TrainingData:
    """What a program trains on: per data input (IR name), its rows (rows x sample) and the rows each of the
    `steps` steps takes (steps x rows per step)."""

    steps: int
    arrays: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]

    @classmethod
    def from_steps(cls, feeds: Sequence[Mapping[str, np.ndarray]]) -> TrainingData:
        """The data of per-step feeds (input name -> that step's batch): every step's rows in turn."""
        names = list(feeds[0]) if feeds else []
        arrays = {name: np.concatenate([np.asarray(feed[name]) for feed in feeds]) for name in names}
        return cls(len(feeds), arrays,
                   {name: np.arange(len(arrays[name])).reshape(len(feeds), -1) for name in names})


def dataset_context(dataset: TrainingData, inputs: Sequence[Buffer]) -> dict[str, Any]:
    """What data.h.j2 renders, per input: its rows as a C initializer and its step x row table."""
    tables = []
    for buffer in inputs:
        array = dataset.arrays[buffer.value_name]
        rows = dataset.rows[buffer.value_name]
        flat = array.astype(np.int32 if buffer.ctype == "int" else np.float32).reshape(-1)
        index_type = "uint16_t" if rows.size == 0 or int(rows.max()) < 2**16 else "uint32_t"
        tables.append({"buffer": buffer, "rows": len(array), "row_numel": buffer.numel // max(rows.shape[1], 1),
                       "per_step": rows.shape[1], "init": _initializer(flat), "index_type": index_type,
                       "step_rows": ",\n    ".join("{ " + _initializer(step) + " }" for step in rows)})
    return {"datasets": tables}


def _initializer(flat: np.ndarray) -> str:
    if np.issubdtype(flat.dtype, np.integer):
        words = [str(int(v)) for v in flat]
    else:
        words = [c_float_exact(float(v)) for v in flat]
    return ",\n    ".join(", ".join(words[i:i + 8]) for i in range(0, len(words), 8))

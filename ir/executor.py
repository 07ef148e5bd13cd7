"""The numpy reference executor: runs the IR at any stage and gives the golden numbers.

fp32 graphs run in float64; fp16 values are rounded to float16 after every op that produces them.
Parameters and optimizer state persist in the executor across steps; ops that mutate write them back.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tinyodl.ir.graph import Graph, Value
from tinyodl.ir.registry import kernel_of, lookup
from tinyodl.ir.types import DType
from tinyodl.ir.verify import describe


def _host_dtype(dtype: DType) -> np.dtype:
    return np.dtype(np.float64) if dtype.is_float else dtype.numpy


def _store(value: Value, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if value.dtype is DType.F16:
        array = array.astype(np.float16).astype(np.float64)
    return array.astype(_host_dtype(value.dtype), copy=False).reshape(value.shape)


class Executor:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.persistent: dict[str, np.ndarray] = {}
        for value in graph.params + graph.state:
            if value.name not in graph.initial:
                raise KeyError(f"no initial contents for %{value.name}")
            self.persistent[value.name] = _store(value, graph.initial[value.name])

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One pass over the graph. Returns every value computed (by name), graph outputs included."""
        env: dict[Value, np.ndarray] = {}
        for value in self.graph.inputs:
            if value.name not in feeds:
                raise KeyError(f"missing input {value.name}")
            env[value] = _store(value, feeds[value.name])
        for value in self.graph.params + self.graph.state:
            env[value] = self.persistent[value.name]
        for index, op in enumerate(self.graph.ops):
            kernel, attrs = kernel_of(op.type, op.attrs)  # a tile loop computes what its kernel does
            opdef = lookup(kernel)
            try:
                results = opdef.reference([env[v] for v in op.inputs], opdef.with_defaults(attrs))
            except Exception as exc:
                raise RuntimeError(f"{describe(op, index)}: {exc}") from exc
            if opdef.mutates:
                written = [op.inputs[p] for p in opdef.mutates if p < len(op.inputs)]
                for value, array in zip(written, results, strict=False):
                    env[value] = _store(value, array)
                    self.persistent[value.name] = env[value]
            else:
                for value, array in zip(op.outputs, results, strict=False):
                    env[value] = _store(value, array)
        return {value.name: array for value, array in env.items()}

    def param(self, name: str) -> np.ndarray:
        return self.persistent[name]

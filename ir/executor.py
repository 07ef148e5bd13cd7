"""The numpy reference executor: runs the IR at any stage and gives the golden numbers.

Values are held in float64. The rounding points, which the C kernels follow:
- every op computes from its operands' exact values (float64 here; float32 on the target, accumulations of
  convolutions, matrix products and reductions included) and rounds each result once, to the result's
  dtype: fp16 and bf16 results through float32 (ir/rounding.py); fp32 results are not rounded, as in the
  fp32 golden run, whose tolerances cover the target's float32 arithmetic;
- graph inputs, parameters and optimizer state are rounded to their dtype when they enter the executor,
  and in-place updates round what they write;
- a cast rounds (its reference is the identity), so each dtype boundary is one rounding;
- a single fp16 operation (add, multiply, fused multiply-add aside) computed in float32 and rounded to
  fp16 equals the Zfh instruction's result (float32's 24 bits are at least 2 x 11 + 2), so kernels may use
  Zfh for element-wise work and still match; an element-wise op made of several operations (sigmoid, an
  optimizer update) is evaluated in float32 and rounded once.
Parameters and optimizer state persist in the executor across steps; ops that mutate write them back. A
guarded op (the optimizer step under dynamic loss scaling) leaves them as they are while its flag is set.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tinyodl.ir.graph import Graph, Value
from tinyodl.ir.registry import evaluate, kernel_of, mutated_operands
from tinyodl.ir.rounding import round_to
from tinyodl.ir.types import DType
from tinyodl.ir.verify import describe


def _host_dtype(dtype: DType) -> np.dtype:
    return np.dtype(np.float64) if dtype.is_float else dtype.numpy


def _store(value: Value, array: np.ndarray) -> np.ndarray:
    array = round_to(np.asarray(array), value.dtype)
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
            try:
                results = evaluate(kernel, [env[v] for v in op.inputs], attrs)
            except Exception as exc:
                raise RuntimeError(f"{describe(op, index)}: {exc}") from exc
            written = [op.inputs[p] for p in mutated_operands(op)]
            if written:
                for value, array in zip(written, results, strict=False):
                    env[value] = _store(value, array)
                    self.persistent[value.name] = env[value]
            else:
                for value, array in zip(op.outputs, results, strict=False):
                    env[value] = _store(value, array)
        return {value.name: array for value, array in env.items()}

    def param(self, name: str) -> np.ndarray:
        return self.persistent[name]

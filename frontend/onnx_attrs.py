"""The domain of every attribute the converters read, as one table: a model whose attribute lies outside it
(a non-finite alpha, an axis beyond the rank, a zero stride) is refused when it is read, naming the node,
the attribute and the value, before shape inference or a converter can make something of it.

Rules that depend on the rank of the node's first input are checked once shape inference has given it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from tinyodl.frontend.errors import FrontendError

A = onnx.AttributeProto
LARGEST = 2**31 - 1  # no size, stride or pad of a 32-bit target's tensor is larger


@dataclass(frozen=True)
class Rule:
    kind: int                                   # the AttributeProto type the value must have
    problem: Callable[[Any, int], str | None]   # (value, rank of input 0) -> what is wrong, None if fine
    needs_rank: bool = False


def _finite(value: float, rank: int) -> str | None:
    return None if math.isfinite(value) else "is not finite"


def _positive_finite(value: float, rank: int) -> str | None:
    return None if math.isfinite(value) and value > 0 else "must be finite and > 0"


def _flag(value: int, rank: int) -> str | None:
    return None if value in (0, 1) else "must be 0 or 1"


def _each(low: int, high: int = LARGEST) -> Callable[[Any, int], str | None]:
    def problem(values: Any, rank: int) -> str | None:
        items = list(values) if isinstance(values, list | tuple) else [values]
        return None if all(low <= v <= high for v in items) else f"must hold values in [{low}, {high}]"
    return problem


def _axis(past_last: bool) -> Callable[[Any, int], str | None]:
    """An axis of the input, negative counting from the end; `past_last` allows rank itself (Flatten)."""
    def problem(values: Any, rank: int) -> str | None:
        high = rank if past_last else rank - 1
        items = list(values) if isinstance(values, list | tuple) else [values]
        return None if all(-rank <= v <= high for v in items) else \
            f"is out of range [{-rank}, {high}] for a rank-{rank} input"
    return problem


def _choice(*allowed: str) -> Callable[[Any, int], str | None]:
    def problem(value: Any, rank: int) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(allowed)}"
    return problem


_WINDOW = {
    "auto_pad": Rule(A.STRING, _choice("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")),
    "dilations": Rule(A.INTS, _each(1)), "kernel_shape": Rule(A.INTS, _each(1)),
    "pads": Rule(A.INTS, _each(0)), "strides": Rule(A.INTS, _each(1)),
}
RULES: dict[str, dict[str, Rule]] = {
    "Conv": {**_WINDOW, "group": Rule(A.INT, _each(1))},
    "MaxPool": {**_WINDOW, "ceil_mode": Rule(A.INT, _flag), "storage_order": Rule(A.INT, _flag)},
    "AveragePool": {**_WINDOW, "ceil_mode": Rule(A.INT, _flag), "count_include_pad": Rule(A.INT, _flag)},
    "Gemm": {"alpha": Rule(A.FLOAT, _finite), "beta": Rule(A.FLOAT, _finite),
             "transA": Rule(A.INT, _flag), "transB": Rule(A.INT, _flag)},
    "LeakyRelu": {"alpha": Rule(A.FLOAT, _finite)},
    "BatchNormalization": {"epsilon": Rule(A.FLOAT, _positive_finite), "training_mode": Rule(A.INT, _flag)},
    "Flatten": {"axis": Rule(A.INT, _axis(past_last=True), needs_rank=True)},
    "Softmax": {"axis": Rule(A.INT, _axis(past_last=False), needs_rank=True)},
    "Reshape": {"allowzero": Rule(A.INT, _flag)},
    "ReduceMean": {"axes": Rule(A.INTS, _axis(past_last=False), needs_rank=True),
                   "keepdims": Rule(A.INT, _flag), "noop_with_empty_axes": Rule(A.INT, _flag)},
}


def check_attributes(graph: onnx.GraphProto, where: str, shapes: Mapping[str, tuple[int, ...]] | None) -> None:
    """Refuse the first attribute outside its domain. Without `shapes` (before shape inference) only the
    rules that need no rank are checked; with them, only those that do."""
    for index, node in enumerate(graph.node):
        rules = RULES.get(node.op_type, {}) if node.domain in ("", "ai.onnx") else {}
        for attr in node.attribute:
            rule = rules.get(attr.name)
            if rule is None or rule.needs_rank != (shapes is not None):
                continue
            if shapes is not None and (not node.input or node.input[0] not in shapes):
                continue  # no static input shape: the import refuses the node later, with that reason
            rank = len(shapes[node.input[0]]) if shapes is not None else 0
            value = onnx.helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                value = value.decode(errors="replace")
            problem = _type_problem(attr, rule) or rule.problem(value, rank)
            if problem is not None:
                shown_value = list(value) if isinstance(value, list | tuple) else value
                if isinstance(value, float):  # stored as float32: show what the file holds, e.g. 1e-05
                    shown_value = _Float32(value)
                label = node.name or f"{node.op_type}_{index}"
                raise FrontendError(f"{where}: node '{label}' ({node.op_type}): attribute {attr.name} = "
                                    f"{shown_value!r} {problem}")


class _Float32(float):
    def __repr__(self) -> str:
        return str(np.float32(self))


def _type_problem(attr: onnx.AttributeProto, rule: Rule) -> str | None:
    if attr.type == rule.kind:
        return None
    return f"has type {A.AttributeType.Name(attr.type)}, expected {A.AttributeType.Name(rule.kind)}"

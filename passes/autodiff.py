"""Reverse-mode automatic differentiation over the training IR.

Only values on a path from a trainable parameter to the loss get a gradient, so frozen layers and
everything below the earliest trainable layer emit no backward ops. Gradients of a value used several
times are summed with `add` ops once all its uses have been differentiated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from tinyodl.ir.graph import AttrValue, Graph, Op, Value
from tinyodl.ir.registry import IRError, infer_types, lookup
from tinyodl.ir.types import Phase, Role


class _Builder:
    """Emits the backward ops of one forward op (the GradBuilder protocol of the registry)."""

    def __init__(self, graph: Graph, forward: Op) -> None:
        self.graph = graph
        self.forward = forward
        self.emitted: list[Value] = []

    def emit(self, op_type: str, inputs: Sequence[Value], attrs: Mapping[str, AttrValue] | None = None,
             name: str = "", role: Role = Role.GRAD) -> list[Value]:
        full = lookup(op_type).with_defaults(attrs)
        types = infer_types(op_type, [v.type for v in inputs], full)
        base = name or f"{self.forward.outputs[0].name if self.forward.outputs else self.forward.type}.{op_type}"
        outputs = [self.graph.new_value(base, t, role) for t in types]
        self.graph.append(Op(op_type, list(inputs), outputs, full, Phase.BACKWARD, self.forward.node))
        self.emitted.extend(outputs)
        return outputs


def values_needing_grad(graph: Graph, loss: Value) -> set[Value]:
    """Values that depend on a trainable parameter and that the loss depends on."""
    depends: set[Value] = set(graph.trainable_params())
    for op in graph.ops:
        if any(v in depends for v in op.inputs):
            depends.update(op.outputs)
    needed: set[Value] = {loss} if loss in depends else set()
    for op in reversed(graph.ops):
        if any(v in needed for v in op.outputs):
            needed.update(v for v in op.inputs if v in depends)
    return needed


def differentiate(graph: Graph, loss: Value) -> dict[Value, Value]:
    """Append the backward ops for `loss`; return the gradient of every trainable parameter."""
    needed = values_needing_grad(graph, loss)
    contributions: dict[Value, list[Value]] = {}
    forward_ops = [op for op in graph.ops if op.phase in (Phase.FORWARD, Phase.LOSS)]
    for op in reversed(forward_ops):
        if not any(v in needed for v in op.outputs):
            continue
        wants = [v in needed for v in op.inputs]
        if not any(wants):
            continue
        rule = lookup(op.type).gradient
        if rule is None:
            raise IRError(f"op {op.type} (node {op.node!r}) has no gradient rule")
        if op.phase is Phase.LOSS:
            out_grads: list[Value | None] = [None]
        else:
            out_grads = [_total(graph, v, contributions, op) if v in needed else None for v in op.outputs]
            if all(g is None for g in out_grads):
                continue
        builder = _Builder(graph, op)
        # Rules read attributes by key; an op may leave defaulted attributes out, so fill them in.
        complete = dataclasses.replace(op, attrs=lookup(op.type).with_defaults(op.attrs))
        grads = rule(builder, complete, out_grads, wants)
        for value, grad, want in zip(op.inputs, grads, wants, strict=False):
            if want and grad is not None:
                if grad in builder.emitted and grad.name.startswith(builder.forward.outputs[0].name + "."):
                    graph.rename(grad, graph.unique_name(f"{value.name}.grad"))
                contributions.setdefault(value, []).append(grad)
    return {p: _total(graph, p, contributions, None) for p in graph.trainable_params() if p in contributions}


def _total(graph: Graph, value: Value, contributions: dict[Value, list[Value]], forward: Op | None) -> Value:
    parts = contributions.get(value, [])
    if not parts:
        raise IRError(f"no gradient reaches %{value.name}")
    if len(parts) > 1:
        # `%x.grad` names the full gradient: the partial contributions give the name up to the sum.
        for index, part in enumerate(parts):
            if part.name == f"{value.name}.grad":
                graph.rename(part, graph.unique_name(f"{value.name}.grad.part{index}"))
    total = parts[0]
    for index, part in enumerate(parts[1:], 1):
        name = f"{value.name}.grad" if index == len(parts) - 1 else f"{value.name}.grad.partial"
        out = graph.new_value(graph.unique_name(name), total.type, Role.GRAD)
        node = forward.node if forward is not None else (value.producer.node if value.producer else value.name)
        graph.append(Op("add", [total, part], [out], {}, Phase.BACKWARD, node))
        total = out
    contributions[value] = [total]
    return total

"""Graphviz DOT rendering of the training graph: ops as boxes coloured by phase, values as edges."""

from __future__ import annotations

import json

from tinyodl.ir.graph import Graph, Value
from tinyodl.ir.registry import kernel_of
from tinyodl.ir.types import Phase

_PHASE_COLOURS = {Phase.FORWARD: "#cfe2ff", Phase.LOSS: "#ffe5b4", Phase.BACKWARD: "#f8d7da",
                  Phase.UPDATE: "#d1e7dd"}


def _quote(text: str) -> str:
    return json.dumps(text)


def _label(*lines: str) -> str:
    """A quoted label of several lines: each escaped on its own, joined by DOT's line break."""
    return '"' + "\\n".join(_quote(line)[1:-1] for line in lines) + '"'


def to_dot(graph: Graph) -> str:
    lines = [f"digraph {_quote(graph.name)} {{", "  rankdir=TB;", '  node [shape=box, style=filled, fontsize=10];']
    producers: dict[Value, str] = {}
    for value in graph.graph_values():
        node_id = f"v_{len(producers)}"
        producers[value] = node_id
        label = _label(f"{value.role.value} {value.name}", str(value.type))
        lines.append(f"  {node_id} [label={label}, shape=ellipse, fillcolor=\"#eeeeee\"];")
    for index, op in enumerate(graph.ops):
        node_id = f"op_{index}"
        kernel, _ = kernel_of(op.type, op.attrs)
        kind = op.type if kernel == op.type else f"{op.type} {kernel}"  # a tile loop: what it computes
        lines.append(f"  {node_id} [label={_label(kind, op.node)}, fillcolor=\"{_PHASE_COLOURS[op.phase]}\"];")
        for value in op.inputs:
            source = producers.get(value)
            if source is not None:
                lines.append(f"  {source} -> {node_id} [label={_quote(str(value.type))}, fontsize=8];")
        for value in op.outputs:
            producers[value] = node_id
    lines.append("}")
    return "\n".join(lines) + "\n"

"""canonicalize: fold constants, fold batch norm into the preceding conv, drop a final softmax, remove dead ops."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyodl.ir.graph import Graph, Op
from tinyodl.ir.registry import lookup
from tinyodl.ir.types import Phase, Role
from tinyodl.passes.manager import Pass, PassError, register_pass


@register_pass
@dataclass(frozen=True)
class Canonicalize(Pass):
    name = "canonicalize"
    fold_bn: bool = False        # fold inference batch norm into the conv before it (its gamma/beta stop learning)
    strip_softmax: bool = False  # a softmax producing the model output is dropped (cross-entropy includes it)

    def requires(self, graph: Graph) -> None:
        if any(op.phase is not Phase.FORWARD for op in graph.ops):
            raise PassError("canonicalize runs on the forward graph, before training")

    def run(self, graph: Graph) -> bool:
        changed = fold_constants(graph)
        if self.strip_softmax:
            changed |= strip_output_softmax(graph)
        if self.fold_bn:
            changed |= fold_batchnorm(graph)
        changed |= remove_dead_ops(graph)
        return changed


def fold_constants(graph: Graph) -> bool:
    changed = False
    for op in list(graph.ops):
        opdef = lookup(op.type)
        if opdef.mutates or not op.inputs or any(v.role is not Role.CONST for v in op.inputs):
            continue
        results = opdef.reference([graph.initial[v.name] for v in op.inputs], opdef.with_defaults(op.attrs))
        graph.remove(op)
        for value, array in zip(op.outputs, results, strict=False):
            const = graph.add_param(value.name, np.asarray(array, value.dtype.numpy), value.type, role=Role.CONST,
                                    origin=value.origin)
            graph.replace_uses(value, const)
        changed = True
    return changed


def strip_output_softmax(graph: Graph) -> bool:
    changed = False
    for index, out in enumerate(graph.outputs):
        op = out.producer
        if op is not None and op.type == "softmax" and op.attrs.get("axis", -1) in (-1, len(out.shape) - 1):
            graph.outputs[index] = op.inputs[0]
            changed = True
    return changed


def fold_batchnorm(graph: Graph) -> bool:
    uses = graph.uses()
    changed = False
    for bn in [op for op in graph.ops if op.type == "batchnorm"]:
        conv = bn.inputs[0].producer
        if conv is None or conv.type != "conv2d" or len(uses[bn.inputs[0]]) != 1:
            continue
        if bn.inputs[0] in graph.outputs or any(len(uses[v]) != 1 for v in conv.inputs[1:] + bn.inputs[1:]):
            continue
        if any(v.role is Role.INPUT for v in conv.inputs[1:] + bn.inputs[1:]):
            continue
        _fold_pair(graph, conv, bn)
        changed = True
    return changed


def _fold_pair(graph: Graph, conv: Op, bn: Op) -> None:
    gamma, beta, mean, var = (graph.initial[v.name].astype(np.float64) for v in bn.inputs[1:])
    scale = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    weight = conv.inputs[1]
    out_channels = weight.shape[0]
    bias = graph.initial[conv.inputs[2].name].astype(np.float64) if len(conv.inputs) == 3 else np.zeros(out_channels)
    folded_w = graph.initial[weight.name] * scale.reshape(-1, 1, 1, 1)
    folded_b = (bias - mean) * scale + beta
    graph.initial[weight.name] = folded_w.astype(weight.dtype.numpy)
    if len(conv.inputs) == 3:
        graph.initial[conv.inputs[2].name] = folded_b.astype(weight.dtype.numpy)
    else:
        bias_name = bn.inputs[2].origin or bn.inputs[2].name
        graph.drop_graph_value(bn.inputs[2])
        conv.inputs.append(graph.add_param(bias_name, folded_b.astype(weight.dtype.numpy),
                                           bn.inputs[2].type, origin=bias_name))
    graph.remove(bn)
    conv.node = f"{conv.node}+{bn.node}"
    graph.replace_uses(bn.outputs[0], conv.outputs[0])


def remove_dead_ops(graph: Graph) -> bool:
    live = set(graph.outputs)
    changed = False
    for op in reversed(list(graph.ops)):
        if lookup(op.type).mutates or any(v in live for v in op.outputs):
            live.update(op.inputs)
        else:
            graph.remove(op)
            changed = True
    used = live | {v for op in graph.ops for v in op.inputs}
    for value in list(graph.params):
        if value not in used:
            graph.drop_graph_value(value)
            changed = True
    return changed

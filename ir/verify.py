"""The IR verifier: every rule a well-formed training graph obeys, each failure naming the op."""

from __future__ import annotations

from tinyodl.ir.graph import Graph, Op
from tinyodl.ir.registry import IRError, infer_types, lookup, mutated_operands
from tinyodl.ir.types import Phase, Role

# Updates may interleave with the backward pass: the memory pass moves each one up to where its gradient is
# final, so the gradient's storage is free for the rest of the backward pass.
_PHASE_ORDER = {Phase.FORWARD: 0, Phase.LOSS: 1, Phase.BACKWARD: 2, Phase.UPDATE: 2}


def describe(op: Op, index: int) -> str:
    outs = ", ".join(f"%{v.name}" for v in op.outputs)
    where = f" (node {op.node!r})" if op.node else ""
    return f"op #{index} {op.type}{' -> ' + outs if outs else ''}{where}"


def verify_graph(graph: Graph) -> None:
    """Raise IRError on the first violation."""
    defined = set(graph.graph_values())
    names: set[str] = set()
    for value in graph.graph_values():
        if value.name in names:
            raise IRError(f"value %{value.name} defined twice")
        names.add(value.name)
        if value.producer is not None:
            raise IRError(f"graph-level value %{value.name} has a producer")
        if value.trainable and value.role is not Role.PARAM:
            raise IRError(f"%{value.name}: only parameters can be trainable")
    for value in graph.params + graph.state:
        if value.name in graph.initial and graph.initial[value.name].shape != value.shape:
            raise IRError(f"%{value.name}: initial value has shape {list(graph.initial[value.name].shape)}, "
                          f"declared {list(value.shape)}")
    phase_rank = 0
    for index, op in enumerate(graph.ops):
        where = describe(op, index)
        try:
            lookup(op.type)
        except IRError as exc:
            raise IRError(f"{where}: {exc}") from None
        rank = _PHASE_ORDER[op.phase]
        if rank < phase_rank:
            raise IRError(f"{where}: {op.phase.value} op after a later phase")
        phase_rank = rank
        for value in op.inputs:
            if value not in defined:
                raise IRError(f"{where}: operand %{value.name} is used before it is defined")
        try:
            expected = infer_types(op.type, [v.type for v in op.inputs], op.attrs)
        except IRError as exc:
            raise IRError(f"{where}: {exc}") from None
        if len(expected) != len(op.outputs):
            raise IRError(f"{where}: has {len(op.outputs)} results, {op.type} produces {len(expected)}")
        for value, want in zip(op.outputs, expected, strict=False):
            if (value.shape, value.dtype) != (want.shape, want.dtype):
                raise IRError(f"{where}: result %{value.name} declared {value.type}, inferred {want}")
            if value.name in names:
                raise IRError(f"{where}: value %{value.name} defined twice")
            if value.producer is not op:
                raise IRError(f"{where}: result %{value.name} does not record its producer")
            names.add(value.name)
            defined.add(value)
        if op.type == "reshape" and op.outputs and None not in (op.outputs[0].l2_offset, op.inputs[0].l2_offset) \
                and op.outputs[0].l2_offset != op.inputs[0].l2_offset:
            raise IRError(f"{where}: the reshaped view %{op.outputs[0].name} is at L2 offset "
                          f"{op.outputs[0].l2_offset}, its source at {op.inputs[0].l2_offset}")
        if op.body or op.type == "tile_loop":
            _verify_body(op, where, defined)
        for position in mutated_operands(op):
            if op.inputs[position].role not in (Role.PARAM, Role.STATE):
                raise IRError(f"{where}: writes operand %{op.inputs[position].name} in place, "
                              "which is neither a parameter nor optimizer state")
    for value in graph.outputs:
        if value not in defined:
            raise IRError(f"graph output %{value.name} is not defined")


def _verify_body(op: Op, where: str, defined: set) -> None:  # type: ignore[type-arg]
    """A tile loop's body: DMA and compute ops on L1 tiles of the loop's own operands and results."""
    if op.type != "tile_loop":
        raise IRError(f"{where}: only a tile_loop has a body")
    from tinyodl.ir.ops.tiling import check_body

    try:
        check_body(op, defined)
    except IRError as exc:
        raise IRError(f"{where}: {exc}") from None

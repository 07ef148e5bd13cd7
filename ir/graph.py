"""The training graph: values, ops and the graph that owns them in topological order."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from tinyodl.ir.types import DType, Layout, Phase, Role, TensorType

AttrValue = int | float | str | tuple[int, ...] | tuple[float, ...]


@dataclass(eq=False)
class Value:
    """An SSA tensor. `producer` is None for graph-level values (inputs, parameters, constants, state)."""

    name: str
    type: TensorType
    role: Role
    producer: Op | None = None
    trainable: bool = False
    # Where the value came from in the ONNX model (initializer or tensor name); used for reports and C names.
    origin: str = ""
    # Byte offset in the static L2 arena, set by the memory pass (a reshape view shares its source's).
    l2_offset: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def layout(self) -> Layout:
        return self.type.layout

    def __repr__(self) -> str:
        return f"Value(%{self.name}: {self.role.value}<{self.type}>)"


@dataclass(eq=False)
class Op:
    type: str
    inputs: list[Value]
    outputs: list[Value]
    attrs: dict[str, AttrValue] = field(default_factory=dict)
    phase: Phase = Phase.FORWARD
    # The ONNX node this op implements (or, for backward ops, the forward node they differentiate).
    node: str = ""
    # A tile loop's body: the DMA transfers and the kernel call of one tile, on L1 tile values.
    body: list[Op] = field(default_factory=list)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def __repr__(self) -> str:
        return f"Op({self.type} {self.phase.value} {self.node!r})"


@dataclass(frozen=True)
class PlannedTensor:
    """One value's place in the L2 arena: bytes reserved from `offset`, live from op `first` to op `last`
    (indices into Graph.ops; -1 .. len(ops) for values that persist across steps). `shares` names the value
    whose storage this one took over in place ("" when none)."""

    name: str
    offset: int
    size: int
    first: int
    last: int
    shares: str = ""


@dataclass(frozen=True)
class MemoryPlan:
    """The static L2 arena of one training step. `peak_bytes` is the arena size; `lower_bound_bytes` the
    largest total of simultaneously live bytes (no placement can do better for this op order);
    `naive_bytes` what one buffer per value would take; `peak_op` the op index where the peak is reached."""

    peak_bytes: int
    peak_op: int
    naive_bytes: int
    lower_bound_bytes: int
    tensors: tuple[PlannedTensor, ...]


class Graph:
    """Ops in topological order plus the graph-level values they read."""

    def __init__(self, name: str = "model") -> None:
        self.name = name
        self.ops: list[Op] = []
        self.inputs: list[Value] = []       # data inputs and training targets, in signature order
        self.params: list[Value] = []       # parameters (trainable or frozen) and constants
        self.state: list[Value] = []        # optimizer state (momentum, moments, step counter)
        self.outputs: list[Value] = []
        # Initial contents of parameters, constants and state, by value name.
        self.initial: dict[str, np.ndarray] = {}
        # The memory pass's summary of the L2 arena; None before that pass ran.
        self.memory_plan: MemoryPlan | None = None
        self._names: set[str] = set()

    # -- construction -------------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        if base not in self._names:
            return base
        for index in itertools.count(1):
            candidate = f"{base}.{index}"
            if candidate not in self._names:
                return candidate
        raise AssertionError("unreachable")

    def _claim(self, name: str) -> None:
        if name in self._names:
            raise ValueError(f"duplicate value name %{name}")
        self._names.add(name)

    def add_input(self, name: str, type_: TensorType, origin: str = "") -> Value:
        self._claim(name)
        value = Value(name, type_, Role.INPUT, origin=origin or name)
        self.inputs.append(value)
        return value

    def add_param(self, name: str, data: np.ndarray, type_: TensorType, *, role: Role = Role.PARAM,
                  trainable: bool = False, origin: str = "") -> Value:
        self._claim(name)
        value = Value(name, type_, role, trainable=trainable, origin=origin or name)
        self.params.append(value)
        self.initial[name] = np.asarray(data)
        return value

    def add_state(self, name: str, type_: TensorType, data: np.ndarray | None = None) -> Value:
        self._claim(name)
        value = Value(name, type_, Role.STATE, origin=name)
        self.state.append(value)
        self.initial[name] = np.zeros(type_.shape, type_.dtype.numpy) if data is None else np.asarray(data)
        return value

    def new_value(self, base: str, type_: TensorType, role: Role, origin: str = "") -> Value:
        name = self.unique_name(base)
        self._claim(name)
        return Value(name, type_, role, origin=origin)

    def append(self, op: Op) -> Op:
        for out in op.outputs:
            out.producer = op
        self.ops.append(op)
        return op

    def insert(self, index: int, op: Op) -> Op:
        for out in op.outputs:
            out.producer = op
        self.ops.insert(index, op)
        return op

    def remove(self, op: Op) -> None:
        self.ops.remove(op)
        for out in op.outputs:
            self._names.discard(out.name)
            out.producer = None

    def drop_graph_value(self, value: Value) -> None:
        for group in (self.inputs, self.params, self.state):
            if value in group:
                group.remove(value)
        self.initial.pop(value.name, None)
        self._names.discard(value.name)

    def rename(self, value: Value, new_name: str) -> None:
        self._names.discard(value.name)
        self._claim(new_name)
        if value.name in self.initial:
            self.initial[new_name] = self.initial.pop(value.name)
        value.name = new_name

    # -- queries ------------------------------------------------------------------------------
    def graph_values(self) -> Iterator[Value]:
        yield from self.inputs
        yield from self.params
        yield from self.state

    def all_values(self) -> Iterator[Value]:
        yield from self.graph_values()
        for op in self.ops:
            yield from op.outputs

    def uses(self) -> dict[Value, list[Op]]:
        table: dict[Value, list[Op]] = {value: [] for value in self.all_values()}
        for op in self.ops:
            for value in op.inputs:
                table.setdefault(value, []).append(op)
        return table

    def replace_uses(self, old: Value, new: Value, ops: Iterable[Op] | None = None) -> None:
        for op in self.ops if ops is None else ops:
            op.inputs = [new if value is old else value for value in op.inputs]
        self.outputs = [new if value is old else value for value in self.outputs]

    def trainable_params(self) -> list[Value]:
        return [value for value in self.params if value.trainable]

    def to_networkx(self) -> nx.DiGraph:
        """Dataflow graph over ops (nodes are op indices); edges carry the value that flows."""
        digraph = nx.DiGraph()
        producer_index: dict[Value, int] = {}
        for index, op in enumerate(self.ops):
            digraph.add_node(index, op=op)
            for value in op.inputs:
                if value in producer_index:
                    digraph.add_edge(producer_index[value], index, value=value)
            for value in op.outputs:
                producer_index[value] = index
        return digraph

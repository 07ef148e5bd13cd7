"""precision: give every value its dtype, cast at every dtype boundary, add dynamic loss scaling, fuse casts.

Policies (`dtype`): fp16 and bf16 store parameters, activations, gradients and optimizer state in that
dtype; mixed computes activations and gradients in fp16 but keeps fp32 master weights, optimizer state,
the loss and batch norm's statistics. `overrides` ("NODE=fp32,NODE2=bf16") set the dtype of one ONNX
node's forward and backward ops (and of its parameters, outside mixed's fp32 master weights). Every op
computes in one dtype; an operand of another dtype is cast just before its first use (the cast is shared
by later uses). Then, with loss scaling (on by default in mixed), the loss gradient is scaled, each
parameter gradient unscaled with a finite check before the updates, the updates guarded by the found-inf
flag, and the scale updated with GradScaler's rules. Last, a cast whose source is produced by a kernel
that can write another dtype (convolutions, matrix products, reductions) is fused into that kernel, and
a cast feeding only an unscale is fused into the unscale, so neither costs its own pass over memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyodl.ir.graph import Graph, Op, Value
from tinyodl.ir.registry import infer_types, lookup, mutated_operands
from tinyodl.ir.rounding import round_to
from tinyodl.ir.types import DType, Phase, Role, TensorType
from tinyodl.passes.manager import Pass, PassError, PassOptionError, register_pass

POLICIES = {"fp32": DType.F32, "fp16": DType.F16, "bf16": DType.BF16, "mixed": DType.F16}
LOSS_OPS = ("softmax_cross_entropy", "mse_loss", "softmax_cross_entropy_grad", "mse_loss_grad")
LOSS_GRAD_OPS = ("softmax_cross_entropy_grad", "mse_loss_grad")
VIEWS = ("reshape",)  # a view keeps its source's dtype
UPDATES_WITH_GRADIENT = ("sgd_update", "adam_update")


@register_pass
@dataclass(frozen=True)
class Precision(Pass):
    name = "precision"
    dtype: str = "fp16"              # fp32 | fp16 | bf16 | mixed
    overrides: str = ""              # NODE=DTYPE,... (the ONNX node names of the report)
    loss_scale: str = "default"      # default (dynamic in mixed, none else) | dynamic | none | a fixed scale
    init_scale: float = 65536.0      # GradScaler's defaults
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    fuse_casts: bool = True

    def requires(self, graph: Graph) -> None:
        if self.dtype not in POLICIES:
            raise PassOptionError(f"--dtype {self.dtype}: choose from {', '.join(POLICIES)}")
        parse_overrides(self.overrides, {op.node for op in graph.ops})
        scaling = loss_scaling(self)
        if scaling not in ("none", "dynamic") and not 0 < float(scaling) < np.inf:
            raise PassOptionError(f"--loss-scale {self.loss_scale}: a fixed scale must be a finite number > 0")
        if not (0 < self.init_scale < float(np.finfo(np.float32).max) and self.growth_factor > 1
                and 0 < self.backoff_factor < 1 and self.growth_interval >= 1):
            raise PassOptionError("loss scaling needs 0 < initial scale < float32 max, growth factor > 1, "
                                  "0 < backoff factor < 1 and growth interval >= 1")
        if any(op.type == "tile_loop" for op in graph.ops) or any(
                v.dtype.is_float and v.dtype is not DType.F32 for v in graph.all_values()):
            raise PassError("precision runs once, after training and before tiling, on an fp32 graph")
        if graph.memory_plan is not None:
            raise PassError("precision runs before the memory plan")

    def run(self, graph: Graph) -> bool:
        overrides = parse_overrides(self.overrides, {op.node for op in graph.ops})
        policy = Policy(POLICIES[self.dtype], self.dtype == "mixed", overrides)
        if policy.all_fp32(graph):
            return False
        assign_dtypes(graph, policy)
        scaling = loss_scaling(self)
        if scaling != "none":
            add_loss_scaling(graph, self, dynamic=scaling == "dynamic")
        if self.fuse_casts:
            fuse_casts(graph)
        return True


def loss_scaling(opts: Precision) -> str:
    """"none", "dynamic" or a fixed scale (as text) from the option and the policy's default."""
    if opts.loss_scale == "default":
        return "dynamic" if opts.dtype == "mixed" else "none"
    if opts.loss_scale in ("none", "dynamic"):
        return opts.loss_scale
    try:
        float(opts.loss_scale)
    except ValueError:
        raise PassOptionError(f"--loss-scale {opts.loss_scale}: expected dynamic, none or a number") from None
    return opts.loss_scale


def parse_overrides(text: str, nodes: set[str]) -> dict[str, DType]:
    overrides: dict[str, DType] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node, sep, name = item.rpartition("=")
        if not sep or not node:
            raise PassOptionError(f"--precision {item}: expected NODE=DTYPE (fp32, fp16 or bf16)")
        if name not in ("fp32", "fp16", "bf16"):
            raise PassOptionError(f"--precision {item}: the dtype must be fp32, fp16 or bf16, got {name!r}")
        if node not in nodes:
            raise PassOptionError(f"--precision {item}: the model has no node {node!r} (the node names are those "
                                  "of `tinyodl ir` and the report)")
        overrides[node] = DType.parse(name)
    return overrides


@dataclass(frozen=True)
class Policy:
    base: DType
    mixed: bool
    overrides: dict[str, DType]

    def all_fp32(self, graph: Graph) -> bool:
        nodes = {op.node for op in graph.ops}
        return self.base is DType.F32 and all(self.overrides.get(n, DType.F32) is DType.F32 for n in nodes)

    def compute(self, op: Op) -> DType | None:
        """The dtype the op computes in (None: it has no float operand or result)."""
        if not any(v.dtype.is_float for v in op.inputs + op.outputs):
            return None
        if mutated_operands(op):
            return op.inputs[0].dtype  # an update computes in its parameter's storage dtype
        if op.type in VIEWS:
            return op.inputs[0].dtype
        if op.node in self.overrides:
            return self.overrides[op.node]
        if self.mixed and op.type in LOSS_OPS:
            return DType.F32
        return self.base


# -- dtypes and casts ----------------------------------------------------------------------------------
def assign_dtypes(graph: Graph, policy: Policy) -> None:
    _store_graph_values(graph, policy)
    casts: dict[tuple[Value, DType], Value] = {}
    for op in list(graph.ops):
        dtype = policy.compute(op)
        if dtype is None:
            continue
        free = lookup(op.type).mixed_operands
        for position, value in enumerate(op.inputs):
            if value.dtype.is_float and position not in free and value.dtype is not dtype:
                op.inputs[position] = _cast(graph, value, dtype, op, casts)
        _retype_results(op)


def _store_graph_values(graph: Graph, policy: Policy) -> None:
    """Parameters, inputs and optimizer state in the dtype their first user computes in; mixed keeps the
    master weights, their optimizer state and values only used as mixed operands (statistics) in fp32."""
    users: dict[Value, list[tuple[Op, int]]] = {}
    for op in graph.ops:
        for position, value in enumerate(op.inputs):
            users.setdefault(value, []).append((op, position))
    for value in graph.inputs + graph.params:
        if not value.dtype.is_float or value not in users:
            continue
        uses = users[value]
        statistics = all(p in lookup(op.type).mixed_operands for op, p in uses)
        if policy.mixed and (value.trainable or statistics):
            dtype = DType.F32
        else:
            first = next((op for op, p in uses if not mutated_operands(op)), uses[0][0])
            dtype = policy.compute(first) or DType.F32
        _retype_graph_value(graph, value, dtype)
    for value in graph.state:
        owner = next((op for op, _ in users.get(value, []) if mutated_operands(op)), None)
        if value.dtype.is_float and owner is not None:
            _retype_graph_value(graph, value, owner.inputs[0].dtype)


def _retype_graph_value(graph: Graph, value: Value, dtype: DType) -> None:
    value.type = TensorType(value.shape, dtype, value.layout)
    if value.name in graph.initial:
        graph.initial[value.name] = round_to(graph.initial[value.name], dtype).astype(dtype.numpy)


def _retype_results(op: Op) -> None:
    for value, inferred in zip(op.outputs, infer_types(op.type, [v.type for v in op.inputs], op.attrs),
                               strict=True):
        value.type = TensorType(value.shape, inferred.dtype, value.layout)


def _cast(graph: Graph, value: Value, dtype: DType, user: Op, casts: dict[tuple[Value, DType], Value]) -> Value:
    """`value` in `dtype`, cast just before `user` unless an earlier user already cast it."""
    key = (value, dtype)
    if key not in casts:
        role = Role.GRAD if value.role is Role.GRAD else Role.ACT
        result = graph.new_value(f"{value.name}.{dtype.value}", TensorType(value.shape, dtype, value.layout), role)
        # The loss's operand in another dtype is still the model's output (what eval reads): a forward op.
        phase = Phase.FORWARD if user.phase is Phase.LOSS else user.phase
        graph.insert(graph.ops.index(user), Op("cast", [value], [result], {"to": dtype.value}, phase, user.node))
        casts[key] = result
    return casts[key]


# -- loss scaling ----------------------------------------------------------------------------------
def add_loss_scaling(graph: Graph, opts: Precision, *, dynamic: bool) -> None:
    """Scale the loss gradient, unscale and check every parameter gradient, guard the updates by the
    found-inf flag and (dynamic) update the scale. Nothing to do when nothing learns."""
    seeds = [op for op in graph.ops if op.type in LOSS_GRAD_OPS]
    updates = [op for op in graph.ops if op.phase is Phase.UPDATE and mutated_operands(op)]
    if not seeds or not updates:
        return
    scalar = TensorType((), DType.F32)
    initial = np.asarray(np.float32(opts.init_scale if dynamic else float(opts.loss_scale)))
    if dynamic:
        scale = graph.add_state(graph.unique_name("amp.scale"), scalar, initial)
    else:
        scale = graph.add_param(graph.unique_name("amp.scale"), initial, scalar, role=Role.CONST)
    for seed in seeds:
        grad = seed.outputs[0]
        scaled = graph.new_value(f"{grad.name}.scaled", grad.type, Role.GRAD)
        later = graph.ops[graph.ops.index(seed) + 1:]
        graph.replace_uses(grad, scaled, later)
        graph.insert(graph.ops.index(seed) + 1, Op("amp_scale", [grad, scale], [scaled], {}, seed.phase, seed.node))
    found: Value | None = None
    first_update = graph.ops.index(updates[0])
    for update in updates:
        if update.type not in UPDATES_WITH_GRADIENT:
            continue
        grad = update.inputs[1]
        unscaled = graph.new_value(f"{update.inputs[0].name}.grad.unscaled", grad.type, Role.GRAD)
        flag = graph.new_value("amp.found_inf", TensorType((), DType.I32), Role.GRAD)
        operands = [grad, scale] + ([found] if found is not None else [])
        graph.insert(first_update, Op("amp_unscale", operands, [unscaled, flag], {"to": grad.dtype.value},
                                      Phase.UPDATE, update.node))
        first_update += 1
        update.inputs[1] = unscaled
        found = flag
    if found is None:
        return
    for update in updates:
        update.inputs.append(found)
        update.attrs["guard"] = 1
    if dynamic:
        tracker = graph.add_state(graph.unique_name("amp.growth_tracker"), TensorType((), DType.I32))
        graph.append(Op("amp_update_scale", [scale, tracker, found], [],
                        {"growth_factor": float(opts.growth_factor), "backoff_factor": float(opts.backoff_factor),
                         "growth_interval": int(opts.growth_interval)}, Phase.UPDATE, "loss_scale"))


# -- cast fusion -----------------------------------------------------------------------------------
def fuse_casts(graph: Graph) -> bool:
    changed = False
    for cast in [op for op in graph.ops if op.type == "cast"]:
        if cast in graph.ops and (_fuse_into_producer(graph, cast) or _fuse_into_unscale(graph, cast)):
            changed = True
    return changed


def _sole_use(graph: Graph, value: Value, uses: dict[Value, list[Op]]) -> Op | None:
    users = uses.get(value, [])
    return users[0] if len(users) == 1 and value not in graph.outputs else None


def _fuse_into_producer(graph: Graph, cast: Op) -> bool:
    """producer -> cast, or producer -> view -> cast, becomes the producer writing the cast's dtype. Every
    float result of the producer must go to a cast to that dtype alone."""
    uses = graph.uses()
    producer, view = cast.inputs[0].producer, None
    if producer is not None and producer.type in VIEWS:
        view, producer = producer, producer.inputs[0].producer
        if _sole_use(graph, view.inputs[0], uses) is not view:
            return False
    if producer is None or not lookup(producer.type).casts_results or mutated_operands(producer):
        return False
    tails = [v for v in producer.outputs if v.dtype.is_float]
    if view is not None:
        if tails != [view.inputs[0]]:
            return False
        tails = [view.outputs[0]]
    casts = [_sole_use(graph, tail, uses) for tail in tails]
    if any(c is None or c.type != "cast" or c.attrs["to"] != cast.attrs["to"] for c in casts):
        return False
    producer.attrs["out_dtype"] = cast.attrs["to"]
    _retype_results(producer)
    if view is not None:
        _retype_results(view)
    for tail, fused in zip(tails, casts, strict=True):
        assert fused is not None
        graph.replace_uses(fused.outputs[0], tail)
        graph.remove(fused)
    return True


def _fuse_into_unscale(graph: Graph, cast: Op) -> bool:
    """cast -> amp_unscale becomes amp_unscale reading the cast's source (it converts as it unscales)."""
    user = _sole_use(graph, cast.outputs[0], graph.uses())
    if user is None or user.type != "amp_unscale" or user.inputs[0] is not cast.outputs[0]:
        return False
    user.inputs[0] = cast.inputs[0]
    graph.remove(cast)
    return True

"""training: choose what learns, append the loss, differentiate, and append the optimizer update."""

from __future__ import annotations

from dataclasses import dataclass

from tinyodl.ir.graph import Graph, Op, Value
from tinyodl.ir.registry import lookup
from tinyodl.ir.types import DType, Phase, Role, TensorType
from tinyodl.passes.autodiff import differentiate
from tinyodl.passes.manager import Pass, PassError, PassOptionError, register_pass

LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("sgd", "adam", "adamw")
BIAS_OPERANDS = {"conv2d": 2, "gemm": 2, "batchnorm": 2}


@register_pass
@dataclass(frozen=True)
class Training(Pass):
    name = "training"
    loss: str = "cross_entropy"
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    train: str = "all"   # all | none | last:N | bias | comma-separated initializer names

    def requires(self, graph: Graph) -> None:
        if self.loss not in LOSSES:
            raise PassOptionError(f"unknown loss '{self.loss}' (choose from {', '.join(LOSSES)})")
        if self.optimizer not in OPTIMIZERS:
            raise PassOptionError(f"unknown optimizer '{self.optimizer}' (choose from {', '.join(OPTIMIZERS)})")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise PassOptionError("--nesterov needs --optimizer sgd with --momentum > 0")
        if any(op.phase is not Phase.FORWARD for op in graph.ops):
            raise PassError("the graph already has training ops")
        if len(graph.outputs) != 1:
            raise PassError(f"training needs a model with one output, this one has {len(graph.outputs)}")

    def run(self, graph: Graph) -> bool:
        for param in select_trainable(graph, self.train):
            param.trainable = True
        loss = append_loss(graph, graph.outputs[0], self.loss)
        grads = differentiate(graph, loss)
        append_optimizer(graph, grads, self)
        graph.outputs = [loss]
        return True


def layers(graph: Graph) -> list[tuple[Op, list[Value]]]:
    """Forward ops that own learnable parameters, in order, with those parameters. A parameter that some op
    reads as a statistic (a batch norm's running mean or variance) is learnable nowhere, even where another
    op reads the same tensor as a weight: training it would move the statistic."""
    statistics = running_statistics(graph)
    found = []
    for op in graph.ops:
        params = [v for v in op.inputs
                  if v.role is Role.PARAM and v.dtype.is_float and v not in statistics]
        if params:
            found.append((op, params))
    return found


def running_statistics(graph: Graph) -> set[Value]:
    """Parameters read as frozen operands (statistics) by some op."""
    return {op.inputs[i] for op in graph.ops for i in lookup(op.type).frozen_operands if i < len(op.inputs)}


def select_trainable(graph: Graph, spec: str) -> list[Value]:
    chosen = _select(graph, spec.strip())
    # `all` is the default and asks for nothing in particular; a selection that finds nothing is a mistake
    if not chosen and spec.strip() not in ("all", "none"):
        raise PassOptionError(f"--train {spec.strip()}: the model has nothing to train (no learnable parameter "
                              "matches); use --train none to run the forward pass and the loss only")
    return chosen


def _select(graph: Graph, spec: str) -> list[Value]:
    candidates = layers(graph)
    learnable = list(dict.fromkeys(v for _, params in candidates for v in params))
    if spec == "all":
        return learnable
    if spec == "none":
        return []
    if spec == "bias":
        return list(dict.fromkeys(op.inputs[BIAS_OPERANDS[op.type]] for op, params in candidates
                                  if op.type in BIAS_OPERANDS and len(op.inputs) > BIAS_OPERANDS[op.type]
                                  and op.inputs[BIAS_OPERANDS[op.type]] in params))
    if spec.startswith("last:"):
        try:
            count = int(spec[5:])
        except ValueError:
            count = -1
        if count < 1:
            raise PassOptionError(f"--train {spec}: expected last:N with N >= 1")
        if count > len(candidates):
            raise PassOptionError(f"--train {spec}: the model has only {len(candidates)} parametrised layers")
        return list(dict.fromkeys(v for _, params in candidates[-count:] for v in params))
    by_name = {v.origin or v.name: v for v in learnable} | {v.name: v for v in learnable}
    chosen = []
    for name in filter(None, (part.strip() for part in spec.split(","))):
        if name not in by_name:
            frozen_stat = any(v.name == name or v.origin == name for v in graph.params)
            why = "is not a learnable parameter" if frozen_stat else "is not an initializer of the model"
            raise PassOptionError(f"--train: '{name}' {why}")
        chosen.append(by_name[name])
    return list(dict.fromkeys(chosen))


def append_loss(graph: Graph, output: Value, kind: str) -> Value:
    node = f"{kind}_loss"
    if kind == "cross_entropy":
        if len(output.shape) != 2:
            raise PassError(f"cross-entropy needs [batch, classes] logits, the model output %{output.name} "
                            f"is {list(output.shape)}")
        target = graph.add_input(graph.unique_name("target"), TensorType((output.shape[0],), DType.I64))
        op_type = "softmax_cross_entropy"
    else:
        target = graph.add_input(graph.unique_name("target"), TensorType(output.shape, output.dtype))
        op_type = "mse_loss"
    loss = graph.new_value(graph.unique_name("loss"), TensorType((), output.dtype), Role.LOSS)
    graph.append(Op(op_type, [output, target], [loss], {}, Phase.LOSS, node))
    return loss


def append_optimizer(graph: Graph, grads: dict[Value, Value], opts: Training) -> None:
    step: Value | None = None
    # Each update is tagged with the layer that owns the parameter, so per-layer reports group them.
    owner = {v: op.node for op in reversed(graph.ops) if op.phase is Phase.FORWARD for v in op.inputs}
    if opts.optimizer in ("adam", "adamw") and grads:
        step = graph.add_state(graph.unique_name("optimizer.step"), TensorType((), DType.I32))
        graph.append(Op("step_increment", [step], [], {}, Phase.UPDATE, "optimizer"))
    for param in graph.trainable_params():
        grad = grads.get(param)
        if grad is None:
            continue  # a trainable parameter the loss does not depend on
        node = owner.get(param, param.origin or param.name)
        if opts.optimizer == "sgd":
            attrs = {"lr": opts.lr, "momentum": opts.momentum, "weight_decay": opts.weight_decay,
                     "nesterov": int(opts.nesterov)}
            operands = [param, grad]
            if opts.momentum != 0.0:
                operands.append(graph.add_state(graph.unique_name(f"{param.name}.momentum"), param.type))
            graph.append(Op("sgd_update", operands, [], attrs, Phase.UPDATE, node))
        else:
            assert step is not None
            m = graph.add_state(graph.unique_name(f"{param.name}.exp_avg"), param.type)
            v = graph.add_state(graph.unique_name(f"{param.name}.exp_avg_sq"), param.type)
            attrs = {"lr": opts.lr, "beta1": opts.beta1, "beta2": opts.beta2, "eps": opts.eps,
                     "weight_decay": opts.weight_decay, "decoupled": int(opts.optimizer == "adamw")}
            graph.append(Op("adam_update", [param, grad, m, v, step], [], attrs, Phase.UPDATE, node))

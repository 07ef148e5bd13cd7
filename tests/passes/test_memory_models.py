"""memory on the bundled models: the issue's evidence for ResNet8 (peak <= 0.5x naive, <= 1.05x the lower
bound), updates scheduled early and only where legal (same numbers as the unscheduled step), and the
over-budget error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyodl.frontend import import_onnx
from tinyodl.ir.executor import Executor
from tinyodl.ir.graph import Graph, Op
from tinyodl.ir.types import Phase, Role
from tinyodl.passes.manager import PassError, PassManager, parse_pipeline
from tinyodl.passes.memory import IN_PLACE_SAFE, schedule_updates, written_operands

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TRAINING = "canonicalize{strip_softmax=1},training{optimizer=OPT;momentum=MOM}"


def training_graph(model: str, optimizer: str = "sgd", momentum: float = 0.0) -> Graph:
    graph = import_onnx(EXAMPLES / f"{model}.onnx")
    pipeline = TRAINING.replace("OPT", optimizer).replace("MOM", str(momentum))
    return PassManager(parse_pipeline(pipeline)).run(graph)


def planned(model: str, options: str = "", **training: object) -> Graph:
    graph = training_graph(model, **training)  # type: ignore[arg-type]
    return PassManager(parse_pipeline("memory" + (f"{{{options}}}" if options else ""))).run(graph)


@pytest.mark.parametrize("model", ["resnet8", "dscnn"])
def test_plan_is_near_the_lower_bound(model: str) -> None:
    plan = planned(model).memory_plan
    assert plan is not None
    print(f"{model}: L2 peak {plan.peak_bytes} B, lower bound {plan.lower_bound_bytes} B, naive "
          f"{plan.naive_bytes} B (peak/naive {plan.peak_bytes / plan.naive_bytes:.3f}, "
          f"peak/bound {plan.peak_bytes / plan.lower_bound_bytes:.3f})")
    assert plan.lower_bound_bytes <= plan.peak_bytes <= 1.05 * plan.lower_bound_bytes
    if model == "resnet8":
        assert plan.peak_bytes <= 0.5 * plan.naive_bytes


def test_every_value_is_placed_without_overlapping_a_live_one() -> None:
    graph = planned("resnet8", optimizer="adam")
    plan = graph.memory_plan
    assert plan is not None
    tensors = sorted(plan.tensors, key=lambda t: t.offset)
    owners = [t for t in tensors if not t.shares]
    for index, a in enumerate(owners):
        assert a.offset % 8 == 0 and a.offset + a.size <= plan.peak_bytes
        for b in owners[index + 1:]:
            if b.offset >= a.offset + a.size:
                break
            assert a.last < b.first or b.last < a.first, (a, b)
    assert {t.name for t in plan.tensors} == {v.name for v in graph.all_values() if v.producer is None
                                              or v.producer.type != "reshape"}


def test_updates_follow_their_gradient_and_every_reader_of_their_parameter() -> None:
    graph = planned("resnet8", optimizer="adam")
    position = {id(op): index for index, op in enumerate(graph.ops)}
    first_backward = min(i for i, op in enumerate(graph.ops) if op.phase is Phase.BACKWARD)
    for index, op in enumerate(graph.ops):
        if op.phase is not Phase.UPDATE:
            continue
        assert index > first_backward or op.type == "step_increment"
        for value in op.inputs:
            if value.producer is not None:
                assert position[id(value.producer)] < index
        for value in written_operands(op):
            readers = [i for i, other in enumerate(graph.ops) if other is not op and value in other.inputs
                       and other.phase is not Phase.UPDATE]
            assert all(i < index for i in readers), (op, value.name)


def test_the_last_layers_update_comes_before_the_first_layers_backward() -> None:
    graph = planned("resnet8")
    fc_update = next(i for i, op in enumerate(graph.ops) if op.type == "sgd_update" and op.inputs[0].name == "fc.weight")
    conv1_backward = min(i for i, op in enumerate(graph.ops) if op.phase is Phase.BACKWARD and op.node == "/conv1/Conv")
    last_backward = max(i for i, op in enumerate(graph.ops) if op.phase is Phase.BACKWARD)
    assert fc_update < conv1_backward < last_backward
    # The parameter's gradient is dead right after its update, long before the end of the step.
    plan = graph.memory_plan
    assert plan is not None
    grad = next(t for t in plan.tensors if t.name == "fc.weight.grad")
    assert grad.last == fc_update


def _initialise(graph: Graph) -> None:
    rng = np.random.default_rng(7)
    for value in graph.params:
        data = rng.standard_normal(value.shape) * 0.1
        graph.initial[value.name] = np.abs(data) + 1.0 if "running_var" in value.name else data


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.9), ("adamw", 0.0)])
def test_scheduled_steps_compute_the_same_numbers(optimizer: str, momentum: float) -> None:
    original = training_graph("resnet8", optimizer, momentum)
    moved = training_graph("resnet8", optimizer, momentum)
    moved.ops = schedule_updates(moved.ops)
    assert [op.type for op in moved.ops] != [op.type for op in original.ops]
    feeds = {"input": np.random.default_rng(3).standard_normal((1, 3, 32, 32)), "target": np.array([3])}
    results = []
    for graph in (original, moved):
        _initialise(graph)
        executor = Executor(graph)
        losses = [float(executor.run(feeds)["loss"]) for _ in range(2)]
        results.append((losses, [executor.param(v.name) for v in graph.trainable_params()]))
    assert results[0][0] == results[1][0]
    for before, after in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_array_equal(before, after)


def test_in_place_shares_are_legal_on_resnet8() -> None:
    graph = planned("resnet8")
    plan = graph.memory_plan
    assert plan is not None
    values = {v.name: v for v in graph.all_values()}
    lifetime = {t.name: (t.first, t.last) for t in plan.tensors}
    shares = [t for t in plan.tensors if t.shares]
    assert shares  # ResNet8's gradient accumulations and batch-norm input gradients reuse storage
    for tensor in shares:
        op = values[tensor.name].producer
        assert isinstance(op, Op) and op.type in IN_PLACE_SAFE
        index = graph.ops.index(op)
        owner = values[tensor.shares]
        assert owner.role not in (Role.PARAM, Role.CONST, Role.STATE)
        # Some operand of the op lives in that block and dies at this very op.
        donors = [v for v in op.inputs if v.l2_offset == owner.l2_offset and v.type.nbytes == values[tensor.name].type.nbytes]
        assert donors and all(lifetime.get(v.name, (0, index))[1] == index for v in donors if v.name in lifetime)


def test_a_plan_over_the_budget_is_one_line_naming_the_peak_op() -> None:
    graph = training_graph("resnet8")
    with pytest.raises(PassError) as info:
        PassManager(parse_pipeline("memory{l2_bytes=1000000}")).run(graph)
    message = str(info.value)
    assert "\n" not in message
    peak = planned("resnet8").memory_plan
    assert peak is not None
    assert message == (f"pass 'memory' failed: the L2 plan needs {peak.peak_bytes} bytes at op #{peak.peak_op} "
                       "conv2d_grad_weight (node '/stack3/conv2/Conv'), more than the L2 budget of 1000000 bytes")

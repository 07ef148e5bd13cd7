"""Every op's numpy reference against PyTorch (float64), and every gradient rule against torch autograd
and central finite differences of the reference. Backward ops are checked through the rules that emit them.

Asymmetric pads, which PyTorch's conv/pool `padding` cannot express, are applied with F.pad first
(-inf for max pooling), so torch stays the independent side of every comparison.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinyodl.ir.executor import Executor
from tinyodl.ir.graph import AttrValue, Graph, Op, Value
from tinyodl.ir.registry import infer_types, lookup, op_macs, registered
from tinyodl.ir.types import DType, Phase, Role, TensorType
from tinyodl.ir.verify import verify_graph

RTOL = 1e-7
ATOL = 1e-10
FD_RTOL = 1e-5
FD_ATOL = 1e-7
FD_STEP = 1e-6

OPTIMIZER_OPS = {"sgd_update", "adam_update", "step_increment"}
# Loss scaling (GradScaler's steps) has no gradient; tests/ir/test_precision_reference.py checks it against torch.
LOSS_SCALING_OPS = {"amp_scale", "amp_unscale", "amp_update_scale"}
LOSS_OPS = {"softmax_cross_entropy", "mse_loss"}


def is_backward_op(name: str) -> bool:
    return "_grad" in name


# Tile loops and their DMA ops move data and run other ops' references; tests/passes/test_tiling.py covers them.
TILING_OPS = ("tile_loop", "dma_in", "dma_wait", "dma_out", "tile_accumulate")
FORWARD_OPS = sorted(name for name in registered()
                     if not is_backward_op(name) and name not in OPTIMIZER_OPS | LOSS_SCALING_OPS
                     and name not in TILING_OPS)


@dataclass
class Case:
    op: str
    id: str
    inputs: list[np.ndarray]
    attrs: dict[str, AttrValue]
    torch_fn: Callable[..., torch.Tensor]
    # Inputs the gradient rule must differentiate; None = every float input.
    grad_inputs: tuple[int, ...] | None = None

    @property
    def differentiable(self) -> tuple[int, ...]:
        if self.grad_inputs is not None:
            return self.grad_inputs
        return tuple(i for i, a in enumerate(self.inputs) if a.dtype.kind == "f")


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(sum(ord(c) * (i + 1) for i, c in enumerate(name)))


def away_from(values: np.ndarray, points: Sequence[float], margin: float = 0.02) -> np.ndarray:
    """Push entries closer than `margin` to any of `points` out of that band."""
    out = values.copy()
    for point in points:
        near = np.abs(out - point) < margin
        out[near] = point + np.where(out[near] >= point, margin, -margin)
    return out


def distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values at least 0.01 apart, so maxima are unique and finite differences never switch them."""
    count = int(np.prod(shape))
    return (rng.permutation(count) * 0.01 - count * 0.005 + 0.003).reshape(shape)


def torch_pad(pads: Sequence[int], value: float = 0.0) -> Callable[[torch.Tensor], torch.Tensor]:
    top, left, bottom, right = pads
    return lambda x: F.pad(x, (left, right, top, bottom), value=value)


# -- cases -----------------------------------------------------------------------------------------
def conv_case(id_: str, x_shape: tuple[int, ...], k: int, kernel: tuple[int, int], strides: tuple[int, int],
              pads: tuple[int, int, int, int], group: int, bias: bool) -> Case:
    rng = rng_for(id_)
    c = x_shape[1]
    inputs = [rng.standard_normal(x_shape), rng.standard_normal((k, c // group, *kernel))]
    if bias:
        inputs.append(rng.standard_normal(k))
    pad = torch_pad(pads)

    def torch_fn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return F.conv2d(pad(x), w, b, stride=strides, groups=group)

    return Case("conv2d", id_, inputs, {"strides": strides, "pads": pads, "group": group}, torch_fn)


CONV_CASES = [
    conv_case("dense3x3_s1_p1_bias", (2, 3, 6, 5), 4, (3, 3), (1, 1), (1, 1, 1, 1), 1, True),
    conv_case("dense3x3_s2_asym_nobias", (2, 3, 7, 6), 4, (3, 3), (2, 2), (0, 1, 2, 1), 1, False),
    conv_case("dense1x1_s1_bias", (2, 5, 4, 3), 3, (1, 1), (1, 1), (0, 0, 0, 0), 1, True),
    conv_case("dense1x1_s2_asym", (1, 3, 5, 5), 2, (1, 1), (2, 2), (1, 0, 0, 1), 1, False),
    conv_case("dense10x4_s21_asym_bias", (1, 2, 12, 7), 3, (10, 4), (2, 1), (1, 0, 2, 3), 1, True),
    conv_case("dense3x3_s12_nobias", (2, 2, 5, 8), 3, (3, 3), (1, 2), (2, 1, 0, 1), 1, False),
    conv_case("depthwise3x3_s1_p1_bias", (2, 4, 5, 5), 4, (3, 3), (1, 1), (1, 1, 1, 1), 4, True),
    conv_case("depthwise3x3_s2_asym", (2, 3, 7, 6), 3, (3, 3), (2, 2), (1, 0, 0, 2), 3, False),
    conv_case("depthwise_mult2_3x3_bias", (1, 3, 6, 6), 6, (3, 3), (1, 1), (2, 1, 0, 1), 3, True),
    conv_case("depthwise_mult3_1x1_s2", (2, 2, 5, 4), 6, (1, 1), (2, 2), (0, 0, 1, 0), 2, False),
    conv_case("depthwise10x4_s2_bias", (1, 2, 13, 9), 4, (10, 4), (2, 2), (1, 2, 0, 1), 2, True),
]


def gemm_case(trans_a: int, trans_b: int, alpha: float, beta: float, c_shape: tuple[int, ...] | None) -> Case:
    m, k, n = 4, 5, 3
    id_ = f"ta{trans_a}_tb{trans_b}_alpha{alpha}_beta{beta}_C{'none' if c_shape is None else list(c_shape)}"
    rng = rng_for(id_)
    inputs = [rng.standard_normal((k, m) if trans_a else (m, k)), rng.standard_normal((n, k) if trans_b else (k, n))]
    if c_shape is not None:
        inputs.append(np.asarray(rng.standard_normal(c_shape)))

    def torch_fn(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        a = a.T if trans_a else a
        b = b.T if trans_b else b
        if c is None:
            return alpha * torch.mm(a, b)
        return torch.addmm(c, a, b, beta=beta, alpha=alpha)

    attrs = {"trans_a": trans_a, "trans_b": trans_b, "alpha": alpha, "beta": beta}
    return Case("gemm", id_, inputs, attrs, torch_fn)


GEMM_CASES = [gemm_case(ta, tb, 0.7, 1.3, (3,)) for ta, tb in itertools.product((0, 1), repeat=2)]
GEMM_CASES += [gemm_case(ta, tb, 1.0, 1.0, None) for ta, tb in itertools.product((0, 1), repeat=2)]
GEMM_CASES += [gemm_case(1, 0, -0.5, 2.0, shape) for shape in [(3,), (1, 3), (4, 1), (4, 3), ()]]
GEMM_CASES += [gemm_case(0, 1, 1.0, 1.0, (4, 3)), gemm_case(0, 0, 1.0, 0.0, (1, 3))]


def add_case(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> Case:
    id_ = f"{list(a_shape)}+{list(b_shape)}"
    rng = rng_for(id_)
    return Case("add", id_, [np.asarray(rng.standard_normal(a_shape)), np.asarray(rng.standard_normal(b_shape))],
                {}, torch.add)


ADD_CASES = [add_case(a, b) for a, b in [((2, 3), (2, 3)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 1)),
                                         ((1, 3, 1), (2, 1, 4)), ((), (2, 3)), ((4, 1, 5), (1, 6, 1)),
                                         ((2, 3, 4, 5), (1, 3, 1, 1))]]


def unary_case(op: str, id_: str, x: np.ndarray, attrs: dict[str, AttrValue],
               torch_fn: Callable[[torch.Tensor], torch.Tensor]) -> Case:
    return Case(op, id_, [x], attrs, torch_fn)


def activation_cases() -> list[Case]:
    rng = rng_for("activations")
    x = away_from(rng.standard_normal((3, 4, 5)) * 2, [0.0])
    wide = np.concatenate([x.ravel(), [-40.0, -30.0, 25.0, 40.0]])
    clip_x = away_from(rng.standard_normal((4, 6)), [-0.5, 0.7])
    return [
        unary_case("relu", "3d", x, {}, torch.relu),
        unary_case("leaky_relu", "default_alpha", x, {}, F.leaky_relu),
        unary_case("leaky_relu", "alpha0.2", x, {"alpha": 0.2}, lambda t: F.leaky_relu(t, 0.2)),
        unary_case("sigmoid", "3d", x, {}, torch.sigmoid),
        unary_case("sigmoid", "saturating", wide, {}, torch.sigmoid),
        unary_case("tanh", "3d", x, {}, torch.tanh),
        unary_case("tanh", "saturating", wide, {}, torch.tanh),
        unary_case("clip", "min-0.5_max0.7", clip_x, {"min": -0.5, "max": 0.7}, lambda t: torch.clamp(t, -0.5, 0.7)),
        unary_case("clip", "relu6", clip_x * 5, {"min": 0.0, "max": 6.0}, lambda t: torch.clamp(t, 0.0, 6.0)),
    ]


def softmax_cases() -> list[Case]:
    rng = rng_for("softmax")
    x = rng.standard_normal((2, 3, 4)) * 3
    cases = [unary_case("softmax", f"axis{axis}", x, {"axis": axis}, lambda t, a=axis: torch.softmax(t, a))
             for axis in (-1, 0, 1, 2, -2)]
    cases.append(unary_case("softmax", "2d_large", rng.standard_normal((3, 5)) * 50, {},
                            lambda t: torch.softmax(t, -1)))
    return cases


def maxpool_case(id_: str, x_shape: tuple[int, ...], kernel: tuple[int, int], strides: tuple[int, int],
                 pads: tuple[int, int, int, int]) -> Case:
    top, left, bottom, right = pads
    if top == bottom and left == right and 2 * top <= kernel[0] and 2 * left <= kernel[1]:
        def torch_fn(x: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(x, kernel, strides, padding=(top, left))
    else:
        pad = torch_pad(pads, -float("inf"))

        def torch_fn(x: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(pad(x), kernel, strides)
    attrs = {"kernel": kernel, "strides": strides, "pads": pads}
    return Case("maxpool2d", id_, [distinct(rng_for(id_), x_shape)], attrs, torch_fn)


MAXPOOL_CASES = [
    maxpool_case("2x2_s2", (2, 3, 6, 6), (2, 2), (2, 2), (0, 0, 0, 0)),
    maxpool_case("3x3_s1_p1", (1, 2, 5, 6), (3, 3), (1, 1), (1, 1, 1, 1)),
    maxpool_case("3x3_s2_asym", (2, 2, 7, 6), (3, 3), (2, 2), (0, 1, 2, 1)),
    maxpool_case("3x2_s21_asym", (1, 3, 6, 5), (3, 2), (2, 1), (2, 0, 1, 1)),
    maxpool_case("2x2_s1_odd", (1, 1, 5, 5), (2, 2), (1, 1), (0, 0, 0, 0)),
]


def avgpool_case(id_: str, x_shape: tuple[int, ...], kernel: tuple[int, int], strides: tuple[int, int],
                 pads: tuple[int, int, int, int], count_include_pad: int) -> Case:
    top, left, bottom, right = pads
    sums = float(kernel[0] * kernel[1])
    if top == bottom and left == right and 2 * top <= kernel[0] and 2 * left <= kernel[1]:
        def torch_fn(x: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(x, kernel, strides, padding=(top, left), count_include_pad=bool(count_include_pad))
    elif count_include_pad:
        pad = torch_pad(pads)

        def torch_fn(x: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(pad(x), kernel, strides)
    else:
        pad = torch_pad(pads)

        def torch_fn(x: torch.Tensor) -> torch.Tensor:
            total = F.avg_pool2d(pad(x), kernel, strides) * sums
            count = F.avg_pool2d(pad(torch.ones_like(x)), kernel, strides) * sums
            return total / count
    attrs = {"kernel": kernel, "strides": strides, "pads": pads, "count_include_pad": count_include_pad}
    return Case("avgpool2d", id_, [rng_for(id_).standard_normal(x_shape)], attrs, torch_fn)


AVGPOOL_CASES = [
    avgpool_case(f"{name}_cip{cip}", shape, kernel, strides, pads, cip)
    for cip in (0, 1)
    for name, shape, kernel, strides, pads in [
        ("2x2_s2", (2, 3, 6, 6), (2, 2), (2, 2), (0, 0, 0, 0)),
        ("3x3_s1_p1", (1, 2, 5, 6), (3, 3), (1, 1), (1, 1, 1, 1)),
        ("3x3_s2_asym", (2, 2, 7, 6), (3, 3), (2, 2), (0, 1, 2, 1)),
        ("4x3_s13_asym", (1, 2, 7, 8), (4, 3), (1, 3), (3, 2, 1, 0)),
    ]
]


def misc_cases() -> list[Case]:
    rng = rng_for("misc")
    x4 = rng.standard_normal((2, 3, 4, 5))
    x3 = rng.standard_normal((2, 3, 7))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    mean, var = rng.standard_normal(3), rng.uniform(0.2, 2.0, 3)
    x2 = rng.standard_normal((4, 3))

    def bn(eps: float) -> Callable[..., torch.Tensor]:
        def torch_fn(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor, m: torch.Tensor,
                     v: torch.Tensor) -> torch.Tensor:
            return F.batch_norm(x, m, v, g, b, training=False, eps=eps)
        return torch_fn

    logits = rng.standard_normal((5, 7)) * 2
    labels = np.array([0, 6, 3, 3, 1], dtype=np.int64)
    pred4 = rng.standard_normal((2, 3, 2, 2))
    return [
        unary_case("global_avgpool", "4d", x4, {}, lambda t: F.adaptive_avg_pool2d(t, 1)),
        unary_case("global_avgpool", "3d", x3, {}, lambda t: F.adaptive_avg_pool1d(t, 1)),
        unary_case("reshape", "flatten", x4, {"shape": (2, 60)}, lambda t: t.reshape(2, 60)),
        # In float64 a cast is the identity; the executor's rounding is tested with the reduced dtypes.
        unary_case("cast", "to_f32", x3, {"to": "f32"}, lambda t: t.clone()),
        unary_case("reshape", "split", x3, {"shape": (6, 1, 7)}, lambda t: t.reshape(6, 1, 7)),
        unary_case("reduce_sum", "axes02", x4, {"axes": (0, 2)}, lambda t: torch.sum(t, (0, 2))),
        unary_case("reduce_sum", "axes13_keep_scaled", x4, {"axes": (1, 3), "keepdims": 1, "scale": 0.5},
                   lambda t: 0.5 * torch.sum(t, (1, 3), keepdim=True)),
        unary_case("reduce_sum", "all", x3, {"axes": (0, 1, 2), "scale": -2.0}, lambda t: -2.0 * torch.sum(t)),
        unary_case("reduce_sum", "no_axes_keep", x3, {"axes": (), "keepdims": 1, "scale": 3.0}, lambda t: 3.0 * t),
        unary_case("broadcast", "middle", rng.standard_normal((3, 1, 4)), {"shape": (3, 5, 4), "scale": 2.0},
                   lambda t: 2.0 * t.expand(3, 5, 4)),
        unary_case("broadcast", "gap_grad", rng.standard_normal((2, 3, 1, 1)), {"shape": (2, 3, 4, 5)},
                   lambda t: t.expand(2, 3, 4, 5)),
        Case("batchnorm", "4d", [x4, gamma, beta, mean, var], {}, bn(1e-5), grad_inputs=(0, 1, 2)),
        Case("batchnorm", "2d_eps1e-3", [x2, gamma, beta, mean, var], {"epsilon": 1e-3}, bn(1e-3),
             grad_inputs=(0, 1, 2)),
        Case("batchnorm", "3d", [x3, gamma, beta, mean, var], {}, bn(1e-5), grad_inputs=(0, 1, 2)),
        Case("softmax_cross_entropy", "5x7", [logits, labels], {}, F.cross_entropy),
        Case("softmax_cross_entropy", "large_logits", [logits * 40, labels], {}, F.cross_entropy),
        # The target is data: the loss rules differentiate the prediction only.
        Case("mse_loss", "2d", [x2, rng.standard_normal((4, 3))], {}, F.mse_loss, grad_inputs=(0,)),
        Case("mse_loss", "4d", [pred4, rng.standard_normal((2, 3, 2, 2))], {}, F.mse_loss, grad_inputs=(0,)),
    ]


CASES = (CONV_CASES + GEMM_CASES + ADD_CASES + activation_cases() + softmax_cases() + MAXPOOL_CASES
         + AVGPOOL_CASES + misc_cases())
GRAD_CASES = [case for case in CASES if lookup(case.op).gradient is not None]


def case_params(cases: list[Case]) -> list[Any]:
    return [pytest.param(case, id=f"{case.op}-{case.id}") for case in cases]


# -- helpers ---------------------------------------------------------------------------------------
def reference(op_type: str, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
    opdef = lookup(op_type)
    return opdef.reference([np.array(a, copy=True) for a in inputs], opdef.with_defaults(attrs))


def tensor_type(array: np.ndarray) -> TensorType:
    return TensorType(array.shape, DType.I64 if array.dtype.kind == "i" else DType.F32)


def torch_inputs(case: Case, grads: bool) -> list[torch.Tensor]:
    tensors = []
    for index, array in enumerate(case.inputs):
        tensor = torch.from_numpy(np.array(array, copy=True))
        if grads and index in case.differentiable:
            tensor.requires_grad_(True)
        tensors.append(tensor)
    return tensors


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str, rtol: float = RTOL,
                 atol: float = ATOL) -> None:
    assert np.shape(actual) == np.shape(expected), f"{what}: shape {np.shape(actual)} != {np.shape(expected)}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


class TestBuilder:
    """The GradBuilder protocol, appending the emitted backward ops to a one-op graph."""

    __test__ = False

    def __init__(self, graph: Graph, forward: Op) -> None:
        self.graph = graph
        self.forward = forward
        self.emitted_ops: list[Op] = []

    def emit(self, op_type: str, inputs: Sequence[Value], attrs: Mapping[str, AttrValue] | None = None,
             name: str = "", role: Role = Role.GRAD) -> list[Value]:
        full = lookup(op_type).with_defaults(attrs)
        types = infer_types(op_type, [v.type for v in inputs], full)
        outputs = [self.graph.new_value(name or op_type, t, role) for t in types]
        op = Op(op_type, list(inputs), outputs, full, Phase.BACKWARD, self.forward.node)
        self.graph.append(op)
        self.emitted_ops.append(op)
        return outputs


@dataclass
class VJP:
    grads: list[np.ndarray | None]
    emitted: list[str]


def rule_vjp(case: Case, cotangent: np.ndarray | None, wants: Sequence[bool] | None = None) -> VJP:
    """Run the op's gradient rule in a one-op graph through the executor; None cotangent = loss seed 1."""
    opdef = lookup(case.op)
    assert opdef.gradient is not None
    graph = Graph("vjp")
    operands = [graph.add_input(f"x{i}", tensor_type(a)) for i, a in enumerate(case.inputs)]
    attrs = opdef.with_defaults(case.attrs)
    out_types = infer_types(case.op, [v.type for v in operands], attrs)
    result = graph.new_value("y", out_types[0], Role.LOSS if case.op in LOSS_OPS else Role.ACT)
    phase = Phase.LOSS if case.op in LOSS_OPS else Phase.FORWARD
    forward = graph.append(Op(case.op, operands, [result], attrs, phase, "node"))
    feeds = {f"x{i}": a for i, a in enumerate(case.inputs)}
    dys: list[Value | None] = [None]
    if cotangent is not None:
        dys = [graph.add_input("dy", result.type)]
        feeds["dy"] = cotangent
    if wants is None:
        wants = [i in case.differentiable for i in range(len(operands))]
    builder = TestBuilder(graph, forward)
    grad_values = list(opdef.gradient(builder, forward, dys, wants))
    assert len(grad_values) == len(operands)
    graph.outputs = [g for g in grad_values if g is not None]
    verify_graph(graph)
    env = Executor(graph).run(feeds)
    grads = [None if g is None else env[g.name] for g in grad_values]
    return VJP(grads, [op.type for op in builder.emitted_ops])


def finite_difference(fn: Callable[[list[np.ndarray]], float], inputs: list[np.ndarray], index: int) -> np.ndarray:
    work = [np.array(a, copy=True) for a in inputs]
    target = work[index]
    grad = np.zeros_like(target)
    for position in np.ndindex(target.shape):
        original = target[position]
        target[position] = original + FD_STEP
        up = fn(work)
        target[position] = original - FD_STEP
        down = fn(work)
        target[position] = original
        grad[position] = (up - down) / (2 * FD_STEP)
    return grad


def scalar_objective(case: Case, cotangent: np.ndarray | None) -> Callable[[list[np.ndarray]], float]:
    def objective(inputs: list[np.ndarray]) -> float:
        y = reference(case.op, inputs, case.attrs)[0]
        return float(y) if cotangent is None else float(np.sum(y * cotangent))
    return objective


def cotangent_for(case: Case) -> np.ndarray | None:
    if case.op in LOSS_OPS:
        return None
    out = reference(case.op, case.inputs, case.attrs)[0]
    return rng_for("cotangent" + case.id).standard_normal(out.shape)


# -- forward references ----------------------------------------------------------------------------
def test_every_forward_op_has_cases() -> None:
    assert sorted({case.op for case in CASES}) == FORWARD_OPS


def test_every_gradient_rule_and_backward_op_is_exercised() -> None:
    with_rules = sorted(name for name, opdef in registered().items() if opdef.gradient is not None)
    assert sorted({case.op for case in GRAD_CASES}) == with_rules
    emitted: set[str] = set()
    for case in GRAD_CASES:
        emitted.update(rule_vjp(case, cotangent_for(case)).emitted)
    backward_ops = {name for name in registered() if is_backward_op(name)}
    assert backward_ops <= emitted, f"never emitted by a gradient rule: {sorted(backward_ops - emitted)}"


@pytest.mark.parametrize("case", case_params(CASES))
def test_reference_matches_torch(case: Case) -> None:
    expected = case.torch_fn(*torch_inputs(case, grads=False)).numpy()
    actual = reference(case.op, case.inputs, case.attrs)
    assert len(actual) == 1
    assert_close(actual[0], expected, f"{case.op} {case.id}")
    inferred = infer_types(case.op, [tensor_type(a) for a in case.inputs], case.attrs)
    assert [t.shape for t in inferred] == [np.shape(actual[0])]


# -- gradients -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", case_params(GRAD_CASES))
def test_gradient_matches_torch_autograd(case: Case) -> None:
    cotangent = cotangent_for(case)
    tensors = torch_inputs(case, grads=True)
    out = case.torch_fn(*tensors)
    if cotangent is None:
        out.backward()
    else:
        out.backward(torch.from_numpy(cotangent))
    vjp = rule_vjp(case, cotangent)
    for index, tensor in enumerate(tensors):
        if index in case.differentiable:
            assert vjp.grads[index] is not None, f"input {index} got no gradient"
            assert tensor.grad is not None
            assert_close(vjp.grads[index], tensor.grad.numpy(), f"d{case.op}/d input {index}")
        else:
            assert vjp.grads[index] is None


@pytest.mark.parametrize("case", case_params(GRAD_CASES))
def test_gradient_matches_finite_differences(case: Case) -> None:
    cotangent = cotangent_for(case)
    vjp = rule_vjp(case, cotangent)
    objective = scalar_objective(case, cotangent)
    for index in case.differentiable:
        numeric = finite_difference(objective, case.inputs, index)
        assert_close(vjp.grads[index], numeric, f"d{case.op}/d input {index} vs finite differences",
                     rtol=FD_RTOL, atol=FD_ATOL)


def test_gradient_rules_emit_only_what_is_wanted() -> None:
    conv = CONV_CASES[0]
    cotangent = cotangent_for(conv)
    only_weight = rule_vjp(conv, cotangent, wants=[False, True, False])
    assert only_weight.emitted == ["conv2d_grad_weight"]
    assert only_weight.grads[0] is None and only_weight.grads[2] is None
    only_input = rule_vjp(conv, cotangent, wants=[True, False, False])
    assert only_input.emitted == ["conv2d_grad_input"]
    gemm = GEMM_CASES[0]
    only_c = rule_vjp(gemm, cotangent_for(gemm), wants=[False, False, True])
    assert only_c.emitted == ["reduce_sum", "reshape"]
    bn = next(case for case in CASES if case.op == "batchnorm")
    only_x = rule_vjp(bn, cotangent_for(bn), wants=[True, False, False, False, False])
    assert only_x.emitted == ["batchnorm_grad_input"]


# -- max pooling ties ------------------------------------------------------------------------------
@pytest.mark.parametrize("strides,pads", [((1, 1), (0, 0, 0, 0)), ((2, 2), (1, 1, 1, 1)), ((1, 2), (0, 1, 2, 0))])
def test_maxpool_ties_route_to_the_first_maximum_like_torch(strides: tuple[int, int],
                                                            pads: tuple[int, int, int, int]) -> None:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, size=(2, 2, 6, 7)).astype(np.float64)
    x[0, 0] = 1.0  # a whole plane of ties
    case = maxpool_case("ties", x.shape, (3, 3), strides, pads)
    case.inputs = [x]
    cotangent = rng.standard_normal(reference("maxpool2d", [x], case.attrs)[0].shape)
    tensor = torch.from_numpy(x.copy()).requires_grad_(True)
    out = case.torch_fn(tensor)
    out.backward(torch.from_numpy(cotangent))
    assert_close(reference("maxpool2d", [x], case.attrs)[0], out.detach().numpy(), "maxpool forward")
    grad = rule_vjp(case, cotangent).grads[0]
    assert tensor.grad is not None
    # Overlapping windows sum in a different order, so equal up to rounding; a misrouted tie is off by O(1).
    assert_close(grad, tensor.grad.numpy(), "maxpool gradient with ties", rtol=1e-12, atol=1e-15)
    # On a plane of equal values, each window's gradient lands on its top-left position.
    single = maxpool_case("single", x.shape, (3, 3), (1, 1), (0, 0, 0, 0))
    dy = np.zeros((2, 2, 4, 5))
    dy[0, 0, 1, 2] = 1.0
    dx = reference("maxpool2d_grad", [dy, x], single.attrs)[0]
    expected = np.zeros_like(x)
    expected[0, 0, 1, 2] = 1.0
    np.testing.assert_array_equal(dx, expected)


# -- optimizers ------------------------------------------------------------------------------------
def optimizer_graph(op_type: str, attrs: dict[str, AttrValue], shape: tuple[int, ...],
                    w0: np.ndarray) -> tuple[Graph, dict[str, Value]]:
    graph = Graph("opt")
    param_type = TensorType(shape)
    values = {"w": graph.add_param("w", w0, param_type, trainable=True),
              "g": graph.add_input("g", param_type)}
    if op_type == "sgd_update":
        operands = [values["w"], values["g"]]
        if attrs.get("momentum", 0.0):
            values["buf"] = graph.add_state("buf", param_type)
            operands.append(values["buf"])
        graph.append(Op("sgd_update", operands, [], attrs, Phase.UPDATE, "w"))
    else:
        values["step"] = graph.add_state("step", TensorType((), DType.I32))
        values["m"] = graph.add_state("m", param_type)
        values["v"] = graph.add_state("v", param_type)
        graph.append(Op("step_increment", [values["step"]], [], {}, Phase.UPDATE, "optimizer"))
        graph.append(Op("adam_update", [values["w"], values["g"], values["m"], values["v"], values["step"]], [],
                        attrs, Phase.UPDATE, "w"))
    verify_graph(graph)
    return graph, values


SGD_SETTINGS = [
    {"lr": 0.1},
    {"lr": 0.05, "weight_decay": 0.01},
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.003},
    {"lr": 0.02, "momentum": 0.9, "nesterov": 1},
    {"lr": 0.02, "momentum": 0.5, "nesterov": 1, "weight_decay": 0.1},
]


@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_sgd_update_matches_torch_sgd(settings: dict[str, AttrValue]) -> None:
    rng = np.random.default_rng(1)
    shape = (3, 4)
    w0 = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) for _ in range(3)]
    graph, _ = optimizer_graph("sgd_update", dict(settings), shape, w0)
    executor = Executor(graph)
    param = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    optimizer = torch.optim.SGD([param], lr=settings["lr"], momentum=settings.get("momentum", 0.0),
                                weight_decay=settings.get("weight_decay", 0.0),
                                nesterov=bool(settings.get("nesterov", 0)))
    for step, grad in enumerate(grads, 1):
        executor.run({"g": grad})
        param.grad = torch.from_numpy(grad.copy())
        optimizer.step()
        assert_close(executor.param("w"), param.detach().numpy(), f"w after step {step}", rtol=1e-10, atol=0)
        if "momentum" in settings:
            buffer = optimizer.state[param]["momentum_buffer"].numpy()
            assert_close(executor.param("buf"), buffer, f"momentum after step {step}", rtol=1e-10, atol=0)


ADAM_SETTINGS = [
    {"lr": 0.01, "decoupled": 0},
    {"lr": 0.01, "decoupled": 0, "weight_decay": 0.1},
    {"lr": 0.003, "decoupled": 0, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6},
    {"lr": 0.01, "decoupled": 1, "weight_decay": 0.01},
    {"lr": 0.02, "decoupled": 1, "weight_decay": 0.3, "beta1": 0.5, "beta2": 0.9},
]


@pytest.mark.parametrize("settings", ADAM_SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_adam_update_matches_torch_adam_and_adamw(settings: dict[str, AttrValue]) -> None:
    rng = np.random.default_rng(2)
    shape = (2, 5)
    w0 = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) for _ in range(3)]
    graph, _ = optimizer_graph("adam_update", dict(settings), shape, w0)
    executor = Executor(graph)
    param = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    kind = torch.optim.AdamW if settings["decoupled"] else torch.optim.Adam
    optimizer = kind([param], lr=settings["lr"], betas=(settings.get("beta1", 0.9), settings.get("beta2", 0.999)),
                     eps=settings.get("eps", 1e-8), weight_decay=settings.get("weight_decay", 0.0))
    for step, grad in enumerate(grads, 1):
        executor.run({"g": grad})
        param.grad = torch.from_numpy(grad.copy())
        optimizer.step()
        state = optimizer.state[param]
        assert int(executor.param("step")) == step == int(state["step"])
        assert_close(executor.param("w"), param.detach().numpy(), f"w after step {step}", rtol=1e-10, atol=0)
        assert_close(executor.param("m"), state["exp_avg"].numpy(), f"exp_avg after step {step}",
                     rtol=1e-10, atol=0)
        assert_close(executor.param("v"), state["exp_avg_sq"].numpy(), f"exp_avg_sq after step {step}",
                     rtol=1e-10, atol=0)


# -- MAC counts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", case_params(CONV_CASES + GEMM_CASES))
def test_macs_of_conv_and_gemm_and_their_gradients(case: Case) -> None:
    graph = Graph("macs")
    operands = [graph.add_input(f"x{i}", tensor_type(a)) for i, a in enumerate(case.inputs)]
    attrs = lookup(case.op).with_defaults(case.attrs)
    result = graph.new_value("y", infer_types(case.op, [v.type for v in operands], attrs)[0], Role.ACT)
    forward = Op(case.op, operands, [result], attrs)
    if case.op == "conv2d":
        weight = case.inputs[1].shape
        expected = int(np.prod(result.shape)) * weight[1] * weight[2] * weight[3]
    else:
        a = case.inputs[0].shape
        expected = result.shape[0] * result.shape[1] * (a[0] if attrs["trans_a"] else a[1])
    assert op_macs(forward) == expected
    builder = TestBuilder(graph, forward)
    dy = graph.add_input("dy", result.type)
    grad_values = lookup(case.op).gradient(builder, forward, [dy], [True, True, False])  # type: ignore[misc]
    assert [op_macs(op) for op in builder.emitted_ops] == [expected, expected]
    assert all(g is not None for g in grad_values[:2])

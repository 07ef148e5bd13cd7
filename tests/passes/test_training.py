"""training: IR text in -> IR text out for losses, optimizers and `train=` selections, the gradient of a
residual fan-out, the rule that nothing is differentiated below the earliest trainable layer, and the
numbers of a few training steps against PyTorch."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinyodl.ir.executor import Executor
from tinyodl.ir.graph import Graph
from tinyodl.ir.text import parse_graph, print_graph
from tinyodl.ir.types import Phase
from tinyodl.passes.manager import PassError, PassManager, PassOptionError, parse_pipeline


def ir(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def load(text: str, seed: int = 0) -> Graph:
    graph = parse_graph(ir(text))
    rng = np.random.default_rng(seed)
    for value in graph.params:
        data = rng.uniform(0.5, 2.0, value.shape) if "var" in value.name else rng.standard_normal(value.shape)
        graph.initial[value.name] = data
    return graph


def run(pipeline: str, graph: Graph) -> str:
    PassManager(parse_pipeline(pipeline)).run(graph)
    return print_graph(graph)


def backward_ops(graph: Graph) -> list[str]:
    return [f"{op.type} {op.node}" for op in graph.ops if op.phase is Phase.BACKWARD]


def update_ops(graph: Graph) -> list[tuple[str, str, str]]:
    """(op type, parameter, gradient value) of every update."""
    return [(op.type, op.inputs[0].name, op.inputs[1].name) for op in graph.ops
            if op.phase is Phase.UPDATE and op.type != "step_increment"]


MLP = """
    graph @"mlp" {
      input %x : 4x6xf32
      param %fc1_w : 5x6xf32 from "fc1.weight"
      param %fc1_b : 5xf32 from "fc1.bias"
      param %fc2_w : 3x5xf32 from "fc2.weight"
      param %fc2_b : 3xf32 from "fc2.bias"
      %h = gemm(%x, %fc1_w, %fc1_b) {trans_b = 1} : act<4x5xf32> forward "Gemm_1"
      %a = tanh(%h) : act<4x5xf32> forward "Tanh_1"
      %y = gemm(%a, %fc2_w, %fc2_b) {trans_b = 1} : act<4x3xf32> forward "Gemm_2"
      return %y
    }
"""
def test_cross_entropy_with_plain_sgd() -> None:
    assert run("training", load(MLP)) == ir("""
        graph @"mlp" {
          input %x : 4x6xf32
          input %target : 4xi64
          param %fc1_w : 5x6xf32 trainable from "fc1.weight"
          param %fc1_b : 5xf32 trainable from "fc1.bias"
          param %fc2_w : 3x5xf32 trainable from "fc2.weight"
          param %fc2_b : 3xf32 trainable from "fc2.bias"
          %h = gemm(%x, %fc1_w, %fc1_b) {trans_b = 1} : act<4x5xf32> forward "Gemm_1"
          %a = tanh(%h) : act<4x5xf32> forward "Tanh_1"
          %y = gemm(%a, %fc2_w, %fc2_b) {trans_b = 1} : act<4x3xf32> forward "Gemm_2"
          %loss = softmax_cross_entropy(%y, %target) : loss<f32> loss "cross_entropy_loss"
          %y.grad = softmax_cross_entropy_grad(%y, %target) : grad<4x3xf32> backward "cross_entropy_loss"
          %a.grad = gemm(%y.grad, %fc2_w) {alpha = 1.0, beta = 0.0, trans_a = 0, trans_b = 0} : grad<4x5xf32> backward "Gemm_2"
          %fc2_w.grad = gemm(%y.grad, %a) {alpha = 1.0, beta = 0.0, trans_a = 1, trans_b = 0} : grad<3x5xf32> backward "Gemm_2"
          %y.reduce_sum = reduce_sum(%y.grad) {axes = [0], keepdims = 1, scale = 1.0} : grad<1x3xf32> backward "Gemm_2"
          %fc2_b.grad = reshape(%y.reduce_sum) {shape = [3]} : grad<3xf32> backward "Gemm_2"
          %h.grad = tanh_grad(%a.grad, %a) : grad<4x5xf32> backward "Tanh_1"
          %fc1_w.grad = gemm(%h.grad, %x) {alpha = 1.0, beta = 0.0, trans_a = 1, trans_b = 0} : grad<5x6xf32> backward "Gemm_1"
          %h.reduce_sum = reduce_sum(%h.grad) {axes = [0], keepdims = 1, scale = 1.0} : grad<1x5xf32> backward "Gemm_1"
          %fc1_b.grad = reshape(%h.reduce_sum) {shape = [5]} : grad<5xf32> backward "Gemm_1"
          sgd_update(%fc1_w, %fc1_w.grad) {lr = 0.01, momentum = 0.0, nesterov = 0, weight_decay = 0.0} update "Gemm_1"
          sgd_update(%fc1_b, %fc1_b.grad) {lr = 0.01, momentum = 0.0, nesterov = 0, weight_decay = 0.0} update "Gemm_1"
          sgd_update(%fc2_w, %fc2_w.grad) {lr = 0.01, momentum = 0.0, nesterov = 0, weight_decay = 0.0} update "Gemm_2"
          sgd_update(%fc2_b, %fc2_b.grad) {lr = 0.01, momentum = 0.0, nesterov = 0, weight_decay = 0.0} update "Gemm_2"
          return %loss
        }
    """)


def test_mse_with_nesterov_momentum_declares_zeroed_momentum_state() -> None:
    graph = load(MLP)
    text = run("training{loss=mse;momentum=0.9;nesterov=1;weight_decay=0.0001;lr=0.05}", graph)
    assert text == ir("""
        graph @"mlp" {
          input %x : 4x6xf32
          input %target : 4x3xf32
          param %fc1_w : 5x6xf32 trainable from "fc1.weight"
          param %fc1_b : 5xf32 trainable from "fc1.bias"
          param %fc2_w : 3x5xf32 trainable from "fc2.weight"
          param %fc2_b : 3xf32 trainable from "fc2.bias"
          state %fc1_w.momentum : 5x6xf32
          state %fc1_b.momentum : 5xf32
          state %fc2_w.momentum : 3x5xf32
          state %fc2_b.momentum : 3xf32
          %h = gemm(%x, %fc1_w, %fc1_b) {trans_b = 1} : act<4x5xf32> forward "Gemm_1"
          %a = tanh(%h) : act<4x5xf32> forward "Tanh_1"
          %y = gemm(%a, %fc2_w, %fc2_b) {trans_b = 1} : act<4x3xf32> forward "Gemm_2"
          %loss = mse_loss(%y, %target) : loss<f32> loss "mse_loss"
          %y.grad = mse_loss_grad(%y, %target) : grad<4x3xf32> backward "mse_loss"
          %a.grad = gemm(%y.grad, %fc2_w) {alpha = 1.0, beta = 0.0, trans_a = 0, trans_b = 0} : grad<4x5xf32> backward "Gemm_2"
          %fc2_w.grad = gemm(%y.grad, %a) {alpha = 1.0, beta = 0.0, trans_a = 1, trans_b = 0} : grad<3x5xf32> backward "Gemm_2"
          %y.reduce_sum = reduce_sum(%y.grad) {axes = [0], keepdims = 1, scale = 1.0} : grad<1x3xf32> backward "Gemm_2"
          %fc2_b.grad = reshape(%y.reduce_sum) {shape = [3]} : grad<3xf32> backward "Gemm_2"
          %h.grad = tanh_grad(%a.grad, %a) : grad<4x5xf32> backward "Tanh_1"
          %fc1_w.grad = gemm(%h.grad, %x) {alpha = 1.0, beta = 0.0, trans_a = 1, trans_b = 0} : grad<5x6xf32> backward "Gemm_1"
          %h.reduce_sum = reduce_sum(%h.grad) {axes = [0], keepdims = 1, scale = 1.0} : grad<1x5xf32> backward "Gemm_1"
          %fc1_b.grad = reshape(%h.reduce_sum) {shape = [5]} : grad<5xf32> backward "Gemm_1"
          sgd_update(%fc1_w, %fc1_w.grad, %fc1_w.momentum) {lr = 0.05, momentum = 0.9, nesterov = 1, weight_decay = 0.0001} update "Gemm_1"
          sgd_update(%fc1_b, %fc1_b.grad, %fc1_b.momentum) {lr = 0.05, momentum = 0.9, nesterov = 1, weight_decay = 0.0001} update "Gemm_1"
          sgd_update(%fc2_w, %fc2_w.grad, %fc2_w.momentum) {lr = 0.05, momentum = 0.9, nesterov = 1, weight_decay = 0.0001} update "Gemm_2"
          sgd_update(%fc2_b, %fc2_b.grad, %fc2_b.momentum) {lr = 0.05, momentum = 0.9, nesterov = 1, weight_decay = 0.0001} update "Gemm_2"
          return %loss
        }
    """)
    for value in graph.state:
        np.testing.assert_array_equal(graph.initial[value.name], np.zeros(value.shape, np.float32))


ADAM_LAST_1 = """
    graph @"mlp" {
      input %x : 4x6xf32
      input %target : 4xi64
      param %fc1_w : 5x6xf32 from "fc1.weight"
      param %fc1_b : 5xf32 from "fc1.bias"
      param %fc2_w : 3x5xf32 trainable from "fc2.weight"
      param %fc2_b : 3xf32 trainable from "fc2.bias"
      state %optimizer.step : i32
      state %fc2_w.exp_avg : 3x5xf32
      state %fc2_w.exp_avg_sq : 3x5xf32
      state %fc2_b.exp_avg : 3xf32
      state %fc2_b.exp_avg_sq : 3xf32
      %h = gemm(%x, %fc1_w, %fc1_b) {trans_b = 1} : act<4x5xf32> forward "Gemm_1"
      %a = tanh(%h) : act<4x5xf32> forward "Tanh_1"
      %y = gemm(%a, %fc2_w, %fc2_b) {trans_b = 1} : act<4x3xf32> forward "Gemm_2"
      %loss = softmax_cross_entropy(%y, %target) : loss<f32> loss "cross_entropy_loss"
      %y.grad = softmax_cross_entropy_grad(%y, %target) : grad<4x3xf32> backward "cross_entropy_loss"
      %fc2_w.grad = gemm(%y.grad, %a) {alpha = 1.0, beta = 0.0, trans_a = 1, trans_b = 0} : grad<3x5xf32> backward "Gemm_2"
      %y.reduce_sum = reduce_sum(%y.grad) {axes = [0], keepdims = 1, scale = 1.0} : grad<1x3xf32> backward "Gemm_2"
      %fc2_b.grad = reshape(%y.reduce_sum) {shape = [3]} : grad<3xf32> backward "Gemm_2"
      step_increment(%optimizer.step) update "optimizer"
      adam_update(%fc2_w, %fc2_w.grad, %fc2_w.exp_avg, %fc2_w.exp_avg_sq, %optimizer.step) {ATTRS} update "Gemm_2"
      adam_update(%fc2_b, %fc2_b.grad, %fc2_b.exp_avg, %fc2_b.exp_avg_sq, %optimizer.step) {ATTRS} update "Gemm_2"
      return %loss
    }
"""


@pytest.mark.parametrize("pipeline,attrs", [
    ("training{optimizer=adam;train=last:1}",
     "beta1 = 0.9, beta2 = 0.999, decoupled = 0, eps = 1e-08, lr = 0.01, weight_decay = 0.0"),
    ("training{optimizer=adamw;train=last:1;weight_decay=0.01;beta1=0.8;beta2=0.99;eps=1e-06;lr=0.001}",
     "beta1 = 0.8, beta2 = 0.99, decoupled = 1, eps = 1e-06, lr = 0.001, weight_decay = 0.01"),
])
def test_adam_and_adamw_share_one_step_counter_with_train_last_1(pipeline: str, attrs: str) -> None:
    graph = load(MLP)
    assert run(pipeline, graph) == ir(ADAM_LAST_1.replace("ATTRS", attrs))
    assert graph.initial["optimizer.step"].dtype == np.int32 and graph.initial["optimizer.step"].shape == ()
    executor = Executor(graph)
    feeds = {"x": np.ones((4, 6)), "target": np.array([0, 1, 2, 1])}
    for step in range(1, 4):
        executor.run(feeds)
        assert int(executor.param("optimizer.step")) == step


# -- what learns -----------------------------------------------------------------------------------
def test_train_bias_differentiates_through_frozen_weights() -> None:
    graph = load(MLP)
    run("training{train=bias}", graph)
    assert [v.name for v in graph.trainable_params()] == ["fc1_b", "fc2_b"]
    assert backward_ops(graph) == [
        "softmax_cross_entropy_grad cross_entropy_loss",
        "gemm Gemm_2",            # only dA: the frozen weight gets no gradient
        "reduce_sum Gemm_2", "reshape Gemm_2",
        "tanh_grad Tanh_1",
        "reduce_sum Gemm_1", "reshape Gemm_1",
    ]
    assert update_ops(graph) == [("sgd_update", "fc1_b", "fc1_b.grad"), ("sgd_update", "fc2_b", "fc2_b.grad")]


@pytest.mark.parametrize("spec,expected", [
    ("fc1.weight", ["fc1_w"]),                   # by ONNX initializer name (origin)
    ("fc2_b", ["fc2_b"]),                        # by IR value name
    ("fc2.bias,fc1.weight", ["fc1_w", "fc2_b"]),
    ("fc1.weight, fc1.weight", ["fc1_w"]),
])
def test_train_named_initializers(spec: str, expected: list[str]) -> None:
    graph = load(MLP)
    run(f"training{{train={spec};lr=0.1}}", graph)
    assert [v.name for v in graph.trainable_params()] == expected
    assert [param for _, param, _ in update_ops(graph)] == expected


def test_train_fc1_weight_exact_text() -> None:
    assert run("training{train=fc1.weight}", load(MLP)) == ir("""
        graph @"mlp" {
          input %x : 4x6xf32
          input %target : 4xi64
          param %fc1_w : 5x6xf32 trainable from "fc1.weight"
          param %fc1_b : 5xf32 from "fc1.bias"
          param %fc2_w : 3x5xf32 from "fc2.weight"
          param %fc2_b : 3xf32 from "fc2.bias"
          %h = gemm(%x, %fc1_w, %fc1_b) {trans_b = 1} : act<4x5xf32> forward "Gemm_1"
          %a = tanh(%h) : act<4x5xf32> forward "Tanh_1"
          %y = gemm(%a, %fc2_w, %fc2_b) {trans_b = 1} : act<4x3xf32> forward "Gemm_2"
          %loss = softmax_cross_entropy(%y, %target) : loss<f32> loss "cross_entropy_loss"
          %y.grad = softmax_cross_entropy_grad(%y, %target) : grad<4x3xf32> backward "cross_entropy_loss"
          %a.grad = gemm(%y.grad, %fc2_w) {alpha = 1.0, beta = 0.0, trans_a = 0, trans_b = 0} : grad<4x5xf32> backward "Gemm_2"
          %h.grad = tanh_grad(%a.grad, %a) : grad<4x5xf32> backward "Tanh_1"
          %fc1_w.grad = gemm(%h.grad, %x) {alpha = 1.0, beta = 0.0, trans_a = 1, trans_b = 0} : grad<5x6xf32> backward "Gemm_1"
          sgd_update(%fc1_w, %fc1_w.grad) {lr = 0.01, momentum = 0.0, nesterov = 0, weight_decay = 0.0} update "Gemm_1"
          return %loss
        }
    """)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_train_none_appends_only_the_loss(optimizer: str) -> None:
    graph = load(MLP)
    assert run(f"training{{train=none;optimizer={optimizer}}}", graph) == ir("""
        graph @"mlp" {
          input %x : 4x6xf32
          input %target : 4xi64
          param %fc1_w : 5x6xf32 from "fc1.weight"
          param %fc1_b : 5xf32 from "fc1.bias"
          param %fc2_w : 3x5xf32 from "fc2.weight"
          param %fc2_b : 3xf32 from "fc2.bias"
          %h = gemm(%x, %fc1_w, %fc1_b) {trans_b = 1} : act<4x5xf32> forward "Gemm_1"
          %a = tanh(%h) : act<4x5xf32> forward "Tanh_1"
          %y = gemm(%a, %fc2_w, %fc2_b) {trans_b = 1} : act<4x3xf32> forward "Gemm_2"
          %loss = softmax_cross_entropy(%y, %target) : loss<f32> loss "cross_entropy_loss"
          return %loss
        }
    """)
    assert graph.state == []


# -- a residual network ----------------------------------------------------------------------------
RESNET = """
    graph @"res" {
      input %x : 2x3x5x5xf32
      param %w1 : 3x3x3x3xf32
      param %b1 : 3xf32
      param %w2 : 3x3x3x3xf32
      param %w3 : 4x3xf32
      param %b3 : 4xf32
      %c1 = conv2d(%x, %w1, %b1) {pads = [1, 1, 1, 1]} : act<2x3x5x5xf32> forward "Conv_1"
      %r1 = relu(%c1) : act<2x3x5x5xf32> forward "Relu_1"
      %c2 = conv2d(%r1, %w2) {pads = [0, 1, 2, 1]} : act<2x3x5x5xf32> forward "Conv_2"
      %s = add(%c2, %r1) : act<2x3x5x5xf32> forward "Add_res"
      %g = global_avgpool(%s) : act<2x3x1x1xf32> forward "GAP"
      %f = reshape(%g) {shape = [2, 3]} : act<2x3xf32> forward "Flatten"
      %y = gemm(%f, %w3, %b3) {trans_b = 1} : act<2x4xf32> forward "Fc"
      return %y
    }
"""


def test_residual_fan_out_accumulates_the_gradient_with_add() -> None:
    graph = load(RESNET)
    text = run("training", graph)
    assert text == ir("""
        graph @"res" {
          input %x : 2x3x5x5xf32
          input %target : 2xi64
          param %w1 : 3x3x3x3xf32 trainable
          param %b1 : 3xf32 trainable
          param %w2 : 3x3x3x3xf32 trainable
          param %w3 : 4x3xf32 trainable
          param %b3 : 4xf32 trainable
          %c1 = conv2d(%x, %w1, %b1) {pads = [1, 1, 1, 1]} : act<2x3x5x5xf32> forward "Conv_1"
          %r1 = relu(%c1) : act<2x3x5x5xf32> forward "Relu_1"
          %c2 = conv2d(%r1, %w2) {pads = [0, 1, 2, 1]} : act<2x3x5x5xf32> forward "Conv_2"
          %s = add(%c2, %r1) : act<2x3x5x5xf32> forward "Add_res"
          %g = global_avgpool(%s) : act<2x3x1x1xf32> forward "GAP"
          %f = reshape(%g) {shape = [2, 3]} : act<2x3xf32> forward "Flatten"
          %y = gemm(%f, %w3, %b3) {trans_b = 1} : act<2x4xf32> forward "Fc"
          %loss = softmax_cross_entropy(%y, %target) : loss<f32> loss "cross_entropy_loss"
          %y.grad = softmax_cross_entropy_grad(%y, %target) : grad<2x4xf32> backward "cross_entropy_loss"
          %f.grad = gemm(%y.grad, %w3) {alpha = 1.0, beta = 0.0, trans_a = 0, trans_b = 0} : grad<2x3xf32> backward "Fc"
          %w3.grad = gemm(%y.grad, %f) {alpha = 1.0, beta = 0.0, trans_a = 1, trans_b = 0} : grad<4x3xf32> backward "Fc"
          %y.reduce_sum = reduce_sum(%y.grad) {axes = [0], keepdims = 1, scale = 1.0} : grad<1x4xf32> backward "Fc"
          %b3.grad = reshape(%y.reduce_sum) {shape = [4]} : grad<4xf32> backward "Fc"
          %g.grad = reshape(%f.grad) {shape = [2, 3, 1, 1]} : grad<2x3x1x1xf32> backward "Flatten"
          %s.grad = broadcast(%g.grad) {scale = 0.04, shape = [2, 3, 5, 5]} : grad<2x3x5x5xf32> backward "GAP"
          %r1.grad.part1 = conv2d_grad_input(%s.grad, %w2) {group = 1, input_shape = [2, 3, 5, 5], pads = [0, 1, 2, 1], strides = [1, 1]} : grad<2x3x5x5xf32> backward "Conv_2"
          %w2.grad = conv2d_grad_weight(%r1, %s.grad) {group = 1, kernel = [3, 3], pads = [0, 1, 2, 1], strides = [1, 1]} : grad<3x3x3x3xf32> backward "Conv_2"
          %r1.grad = add(%s.grad, %r1.grad.part1) : grad<2x3x5x5xf32> backward "Relu_1"
          %c1.grad = relu_grad(%r1.grad, %c1) : grad<2x3x5x5xf32> backward "Relu_1"
          %w1.grad = conv2d_grad_weight(%x, %c1.grad) {group = 1, kernel = [3, 3], pads = [1, 1, 1, 1], strides = [1, 1]} : grad<3x3x3x3xf32> backward "Conv_1"
          %b1.grad = reduce_sum(%c1.grad) {axes = [0, 2, 3], keepdims = 0, scale = 1.0} : grad<3xf32> backward "Conv_1"
          sgd_update(%w1, %w1.grad) {lr = 0.01, momentum = 0.0, nesterov = 0, weight_decay = 0.0} update "Conv_1"
          sgd_update(%b1, %b1.grad) {lr = 0.01, momentum = 0.0, nesterov = 0, weight_decay = 0.0} update "Conv_1"
          sgd_update(%w2, %w2.grad) {lr = 0.01, momentum = 0.0, nesterov = 0, weight_decay = 0.0} update "Conv_2"
          sgd_update(%w3, %w3.grad) {lr = 0.01, momentum = 0.0, nesterov = 0, weight_decay = 0.0} update "Fc"
          sgd_update(%b3, %b3.grad) {lr = 0.01, momentum = 0.0, nesterov = 0, weight_decay = 0.0} update "Fc"
          return %loss
        }
    """)


def test_shared_weight_and_repeated_operand_gradients_are_summed() -> None:
    graph = load("""
        graph @"shared" {
          input %x : 2x3xf32
          param %w : 3x3xf32
          %h = gemm(%x, %w) : act<2x3xf32> forward "First"
          %d = add(%h, %h) : act<2x3xf32> forward "Double"
          %y = gemm(%d, %w) : act<2x3xf32> forward "Second"
          return %y
        }
    """)
    run("training{loss=mse}", graph)
    assert backward_ops(graph) == [
        "mse_loss_grad mse_loss",
        "gemm Second", "gemm Second",
        "add First",                  # %h (made by First) feeds both operands of the add
        "gemm First",                 # only the weight: %x is an input
        "add w",                      # %w is used by both gemms
    ]
    x = np.random.default_rng(1).standard_normal((2, 3))
    target = np.random.default_rng(2).standard_normal((2, 3))
    env = Executor(graph).run({"x": x, "target": target})
    w = torch.from_numpy(graph.initial["w"].copy()).requires_grad_(True)
    tx = torch.from_numpy(x)
    F.mse_loss(2 * (tx @ w) @ w, torch.from_numpy(target)).backward()
    ((_, _, grad_name),) = update_ops(graph)
    assert w.grad is not None
    np.testing.assert_allclose(env[grad_name], w.grad.numpy(), rtol=1e-10)


def torch_resnet(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    r1 = torch.relu(F.conv2d(x, params["w1"], params["b1"], padding=1))
    c2 = F.conv2d(F.pad(r1, (1, 1, 0, 2)), params["w2"])
    pooled = (c2 + r1).mean(dim=(2, 3))
    return F.linear(pooled, params["w3"], params["b3"])


def test_resnet_gradients_match_torch_autograd() -> None:
    graph = load(RESNET)
    run("training", graph)
    rng = np.random.default_rng(3)
    x, target = rng.standard_normal((2, 3, 5, 5)), np.array([3, 1])
    env = Executor(graph).run({"x": x, "target": target})
    params = {v.name: torch.from_numpy(graph.initial[v.name].copy()).requires_grad_(True) for v in graph.params}
    loss = F.cross_entropy(torch_resnet(params, torch.from_numpy(x)), torch.from_numpy(target))
    loss.backward()
    np.testing.assert_allclose(env["loss"], loss.item(), rtol=1e-10)
    for _, param, grad in update_ops(graph):
        np.testing.assert_allclose(env[grad], params[param].grad.numpy(), rtol=1e-7, atol=1e-12, err_msg=param)


# -- nothing below the earliest trainable layer ----------------------------------------------------
DEEP = """
    graph @"deep" {
      input %x : 2x1x8x8xf32
      param %w1 : 4x1x3x3xf32
      param %b1 : 4xf32
      param %w2 : 4x1x3x3xf32
      param %gamma : 4xf32
      param %beta : 4xf32
      param %mean : 4xf32
      param %var : 4xf32
      param %w3 : 6x4x1x1xf32
      param %w4 : 5x6xf32
      param %b4 : 5xf32
      %c1 = conv2d(%x, %w1, %b1) {pads = [1, 1, 1, 1]} : act<2x4x8x8xf32> forward "Conv_1"
      %r1 = relu(%c1) : act<2x4x8x8xf32> forward "Relu_1"
      %p1 = maxpool2d(%r1) {kernel = [2, 2], strides = [2, 2]} : act<2x4x4x4xf32> forward "Pool_1"
      %c2 = conv2d(%p1, %w2) {group = 4, pads = [1, 1, 1, 1]} : act<2x4x4x4xf32> forward "DW_2"
      %n2 = batchnorm(%c2, %gamma, %beta, %mean, %var) : act<2x4x4x4xf32> forward "BN_2"
      %r2 = clip(%n2) {max = 6.0, min = 0.0} : act<2x4x4x4xf32> forward "Relu6_2"
      %c3 = conv2d(%r2, %w3) : act<2x6x4x4xf32> forward "PW_3"
      %a3 = avgpool2d(%c3) {kernel = [2, 2], strides = [2, 2]} : act<2x6x2x2xf32> forward "Pool_3"
      %g = global_avgpool(%a3) : act<2x6x1x1xf32> forward "GAP"
      %f = reshape(%g) {shape = [2, 6]} : act<2x6xf32> forward "Flatten"
      %y = gemm(%f, %w4, %b4) {trans_b = 1} : act<2x5xf32> forward "Fc"
      return %y
    }
"""


@pytest.mark.parametrize("train,expected", [
    ("all", [
        "softmax_cross_entropy_grad cross_entropy_loss", "gemm Fc", "gemm Fc", "reduce_sum Fc", "reshape Fc",
        "reshape Flatten", "broadcast GAP", "avgpool2d_grad Pool_3",
        "conv2d_grad_input PW_3", "conv2d_grad_weight PW_3", "clip_grad Relu6_2",
        "batchnorm_grad_input BN_2", "batchnorm_grad_params BN_2",
        "conv2d_grad_input DW_2", "conv2d_grad_weight DW_2", "maxpool2d_grad Pool_1", "relu_grad Relu_1",
        "conv2d_grad_weight Conv_1", "reduce_sum Conv_1",   # no gradient of the model input %x
    ]),
    ("last:1", ["softmax_cross_entropy_grad cross_entropy_loss", "gemm Fc", "reduce_sum Fc", "reshape Fc"]),
    ("gamma,beta", [
        "softmax_cross_entropy_grad cross_entropy_loss", "gemm Fc", "reshape Flatten", "broadcast GAP",
        "avgpool2d_grad Pool_3", "conv2d_grad_input PW_3", "clip_grad Relu6_2", "batchnorm_grad_params BN_2",
    ]),
    ("w2", [
        "softmax_cross_entropy_grad cross_entropy_loss", "gemm Fc", "reshape Flatten", "broadcast GAP",
        "avgpool2d_grad Pool_3", "conv2d_grad_input PW_3", "clip_grad Relu6_2", "batchnorm_grad_input BN_2",
        "conv2d_grad_weight DW_2",
    ]),
    ("w2,w4", [
        "softmax_cross_entropy_grad cross_entropy_loss", "gemm Fc", "gemm Fc", "reshape Flatten", "broadcast GAP",
        "avgpool2d_grad Pool_3", "conv2d_grad_input PW_3", "clip_grad Relu6_2", "batchnorm_grad_input BN_2",
        "conv2d_grad_weight DW_2",
    ]),
    ("last:3", [
        "softmax_cross_entropy_grad cross_entropy_loss", "gemm Fc", "gemm Fc", "reduce_sum Fc", "reshape Fc",
        "reshape Flatten", "broadcast GAP", "avgpool2d_grad Pool_3", "conv2d_grad_input PW_3",
        "conv2d_grad_weight PW_3", "clip_grad Relu6_2", "batchnorm_grad_params BN_2",
    ]),
])
def test_no_gradient_below_the_earliest_trainable_layer(train: str, expected: list[str]) -> None:
    graph = load(DEEP)
    run(f"training{{train={train}}}", graph)
    assert backward_ops(graph) == expected
    assert not any(op.inputs[0].name in ("mean", "var") for op in graph.ops if op.phase is Phase.UPDATE)


def torch_deep(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    r1 = torch.relu(F.conv2d(x, p["w1"], p["b1"], padding=1))
    c2 = F.conv2d(F.max_pool2d(r1, 2), p["w2"], padding=1, groups=4)
    n2 = F.batch_norm(c2, p["mean"], p["var"], p["gamma"], p["beta"], training=False, eps=1e-5)
    a3 = F.avg_pool2d(F.conv2d(torch.clamp(n2, 0.0, 6.0), p["w3"]), 2)
    return F.linear(a3.mean(dim=(2, 3)), p["w4"], p["b4"])


def test_deep_gradients_match_torch_autograd() -> None:
    graph = load(DEEP, seed=6)
    run("training", graph)
    rng = np.random.default_rng(7)
    x, target = rng.standard_normal((2, 1, 8, 8)), np.array([4, 0])
    env = Executor(graph).run({"x": x, "target": target})
    params = {v.name: torch.from_numpy(graph.initial[v.name].copy()).requires_grad_(v.trainable)
              for v in graph.params}
    loss = F.cross_entropy(torch_deep(params, torch.from_numpy(x)), torch.from_numpy(target))
    loss.backward()
    np.testing.assert_allclose(env["loss"], loss.item(), rtol=1e-10)
    assert len(update_ops(graph)) == 8
    for _, param, grad in update_ops(graph):
        np.testing.assert_allclose(env[grad], params[param].grad.numpy(), rtol=1e-7, atol=1e-12, err_msg=param)


def test_batchnorm_statistics_are_never_trainable() -> None:
    graph = load(DEEP)
    run("training", graph)
    assert [v.name for v in graph.trainable_params()] == ["w1", "b1", "w2", "gamma", "beta", "w3", "w4", "b4"]


# -- a few steps against torch.optim ---------------------------------------------------------------
def torch_mlp(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    hidden = torch.tanh(F.linear(x, params["fc1_w"], params["fc1_b"]))
    return F.linear(hidden, params["fc2_w"], params["fc2_b"])


@pytest.mark.parametrize("pipeline,make_optimizer,state_keys", [
    ("training{loss=mse;momentum=0.9;nesterov=1;weight_decay=0.01;lr=0.05}",
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
     {"momentum": "momentum_buffer"}),
    ("training{loss=mse;optimizer=adam;weight_decay=0.01;lr=0.01}",
     lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01), {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
    ("training{loss=mse;optimizer=adamw;weight_decay=0.1;lr=0.01;beta1=0.8}",
     lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.8, 0.999), weight_decay=0.1),
     {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
])
def test_three_steps_match_torch_optim(pipeline: str, make_optimizer, state_keys: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    graph = load(MLP, seed=4)
    initial = {v.name: graph.initial[v.name].copy() for v in graph.params}
    run(pipeline, graph)
    executor = Executor(graph)
    params = {name: torch.nn.Parameter(torch.from_numpy(data.copy())) for name, data in initial.items()}
    optimizer = make_optimizer(list(params.values()))
    rng = np.random.default_rng(5)
    for _ in range(3):
        x, target = rng.standard_normal((4, 6)), rng.standard_normal((4, 3))
        loss = executor.run({"x": x, "target": target})["loss"]
        optimizer.zero_grad()
        torch_loss = F.mse_loss(torch_mlp(params, torch.from_numpy(x)), torch.from_numpy(target))
        torch_loss.backward()
        optimizer.step()
        np.testing.assert_allclose(loss, torch_loss.item(), rtol=1e-10)
    for name, param in params.items():
        np.testing.assert_allclose(executor.param(name), param.detach().numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
        for suffix, key in state_keys.items():
            np.testing.assert_allclose(executor.param(f"{name}.{suffix}"), optimizer.state[param][key].numpy(),
                                       rtol=1e-9, atol=1e-12, err_msg=f"{name}.{suffix}")


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("pipeline,message", [
    ("training{loss=hinge}", "unknown loss 'hinge' (choose from cross_entropy, mse)"),
    ("training{optimizer=rmsprop}", "unknown optimizer 'rmsprop' (choose from sgd, adam, adamw)"),
    ("training{nesterov=1}", "--nesterov needs --optimizer sgd with --momentum > 0"),
    ("training{nesterov=1;momentum=0.9;optimizer=adam}", "--nesterov needs --optimizer sgd with --momentum > 0"),
    ("training{train=last:0}", "--train last:0: expected last:N with N >= 1"),
    ("training{train=last:x}", "--train last:x: expected last:N with N >= 1"),
    ("training{train=last:3}", "--train last:3: the model has only 2 parametrised layers"),
    ("training{train=fc3.weight}", "--train: 'fc3.weight' is not an initializer of the model"),
])
def test_bad_training_options(pipeline: str, message: str) -> None:
    with pytest.raises(PassOptionError) as info:
        run(pipeline, load(MLP))
    assert str(info.value) == message


def test_batchnorm_statistics_cannot_be_named_for_training() -> None:
    with pytest.raises(PassOptionError, match="^--train: 'mean' is not a learnable parameter$"):
        run("training{train=mean}", load(DEEP))


@pytest.mark.parametrize("text,message", [
    ("""
        graph @"two" {
          input %x : 2x3xf32
          %a = relu(%x) : act<2x3xf32> forward ""
          %b = tanh(%x) : act<2x3xf32> forward ""
          return %a, %b
        }
     """, "pass 'training' failed: training needs a model with one output, this one has 2"),
    ("""
        graph @"conv_out" {
          input %x : 1x2x3x3xf32
          param %w : 2x2x1x1xf32
          %y = conv2d(%x, %w) : act<1x2x3x3xf32> forward "Conv"
          return %y
        }
     """, "pass 'training' failed: cross-entropy needs [batch, classes] logits, the model output %y is [1, 2, 3, 3]"),
])
def test_models_training_cannot_handle(text: str, message: str) -> None:
    with pytest.raises(PassError) as info:
        run("training", load(text))
    assert str(info.value) == message


def test_training_twice_is_refused() -> None:
    graph = load(MLP)
    with pytest.raises(PassError) as info:
        run("training,training", graph)
    assert str(info.value) == "pass 'training' (after training) failed: the graph already has training ops"

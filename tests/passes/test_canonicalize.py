"""canonicalize: IR text in -> IR text out, plus the numbers where the pass computes new tensors."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from tinyodl.ir.executor import Executor
from tinyodl.ir.graph import Graph
from tinyodl.ir.text import parse_graph, print_graph
from tinyodl.passes.manager import PassError, PassManager, parse_pipeline


def ir(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def load(text: str, seed: int = 0) -> Graph:
    """Parse IR text and give every parameter and constant random contents (variances positive)."""
    graph = parse_graph(ir(text))
    rng = np.random.default_rng(seed)
    for value in graph.params:
        data = rng.uniform(0.5, 2.0, value.shape) if "var" in value.name else rng.standard_normal(value.shape)
        graph.initial[value.name] = data.astype(value.dtype.numpy)
    return graph


def run(pipeline: str, graph: Graph) -> str:
    PassManager(parse_pipeline(pipeline)).run(graph)
    return print_graph(graph)


def forward(graph: Graph, feeds: dict[str, np.ndarray]) -> np.ndarray:
    (output,) = graph.outputs
    return Executor(graph).run(feeds)[output.name]


# -- constant folding ------------------------------------------------------------------------------
CONSTS = """
    graph @"consts" {
      input %x : 2x3xf32
      const %a : 3xf32
      const %b : 1x3xf32
      param %w : 3xf32
      %ab = add(%a, %b) : act<1x3xf32> forward "Add_consts"
      %neg = reduce_sum(%ab) {axes = [0], scale = -1.0} : act<3xf32> forward "Neg"
      %sum = add(%x, %neg) : act<2x3xf32> forward "Add_x"
      %wx = add(%sum, %w) : act<2x3xf32> forward "Add_w"
      return %wx
    }
"""


def test_constant_folding_replaces_constant_chains_and_keeps_parameters() -> None:
    graph = load(CONSTS)
    a, b = graph.initial["a"], graph.initial["b"]
    assert run("canonicalize", graph) == ir("""
        graph @"consts" {
          input %x : 2x3xf32
          param %w : 3xf32
          const %neg : 3xf32
          %sum = add(%x, %neg) : act<2x3xf32> forward "Add_x"
          %wx = add(%sum, %w) : act<2x3xf32> forward "Add_w"
          return %wx
        }
    """)
    np.testing.assert_allclose(graph.initial["neg"], -(a + b)[0], rtol=1e-6)
    assert set(graph.initial) == {"w", "neg"}


def test_constant_folding_of_the_graph_output() -> None:
    graph = load("""
        graph @"all_const" {
          const %a : 2x2xf32
          %r = relu(%a) : act<2x2xf32> forward "Relu"
          return %r
        }
    """)
    a = graph.initial["a"]
    assert run("canonicalize", graph) == ir("""
        graph @"all_const" {
          const %r : 2x2xf32
          return %r
        }
    """)
    np.testing.assert_array_equal(graph.initial["r"], np.maximum(a, 0))


# -- softmax before the loss -----------------------------------------------------------------------
SOFTMAX = """
    graph @"classifier" {
      input %x : 2x4xf32
      param %w : 3x4xf32
      %logits = gemm(%x, %w) {trans_b = 1} : act<2x3xf32> forward "Gemm_0"
      %p = softmax(%logits) {axis = AXIS} : act<2x3xf32> forward "Softmax_0"
      return %p
    }
"""


@pytest.mark.parametrize("axis", [-1, 1])
def test_strip_softmax_returns_the_logits(axis: int) -> None:
    graph = load(SOFTMAX.replace("AXIS", str(axis)))
    assert run("canonicalize{strip_softmax=1}", graph) == ir("""
        graph @"classifier" {
          input %x : 2x4xf32
          param %w : 3x4xf32
          %logits = gemm(%x, %w) {trans_b = 1} : act<2x3xf32> forward "Gemm_0"
          return %logits
        }
    """)


@pytest.mark.parametrize("pipeline,axis", [("canonicalize", -1), ("canonicalize{strip_softmax=1}", 0)])
def test_softmax_is_kept_when_not_asked_or_not_over_classes(pipeline: str, axis: int) -> None:
    text = ir(SOFTMAX.replace("AXIS", str(axis)))
    assert run(pipeline, load(text)) == text


# -- batch-norm folding ----------------------------------------------------------------------------
CONV_BN = """
    graph @"conv_bn" {
      input %x : 2x3x6x6xf32
      param %w : 4x3x3x3xf32
      param %bn.gamma : 4xf32
      param %bn.beta : 4xf32
      param %bn.mean : 4xf32
      param %bn.var : 4xf32
      %c = conv2d(%x, %w) {pads = [1, 0, 1, 2], strides = [2, 1]} : act<2x4x3x6xf32> forward "Conv_0"
      %b = batchnorm(%c, %bn.gamma, %bn.beta, %bn.mean, %bn.var) {epsilon = 0.001} : act<2x4x3x6xf32> forward "BN_0"
      %r = relu(%b) : act<2x4x3x6xf32> forward "Relu_0"
      return %r
    }
"""


def test_fold_bn_into_conv_without_bias() -> None:
    graph = load(CONV_BN)
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
    before = forward(graph, {"x": x})
    assert run("canonicalize{fold_bn=1}", graph) == ir("""
        graph @"conv_bn" {
          input %x : 2x3x6x6xf32
          param %w : 4x3x3x3xf32
          param %bn.beta : 4xf32
          %c = conv2d(%x, %w, %bn.beta) {pads = [1, 0, 1, 2], strides = [2, 1]} : act<2x4x3x6xf32> forward "Conv_0+BN_0"
          %r = relu(%c) : act<2x4x3x6xf32> forward "Relu_0"
          return %r
        }
    """)
    np.testing.assert_allclose(forward(graph, {"x": x}), before, rtol=1e-5, atol=1e-5)


def test_fold_bn_into_depthwise_conv_with_bias() -> None:
    graph = load("""
        graph @"dw_bn" {
          input %x : 1x3x5x5xf32
          param %w : 6x1x3x3xf32
          param %bias : 6xf32
          param %gamma : 6xf32
          param %beta : 6xf32
          param %mean : 6xf32
          param %var : 6xf32
          %c = conv2d(%x, %w, %bias) {group = 3, pads = [1, 1, 1, 1]} : act<1x6x5x5xf32> forward "DW"
          %b = batchnorm(%c, %gamma, %beta, %mean, %var) : act<1x6x5x5xf32> forward "BN"
          return %b
        }
    """, seed=3)
    x = np.random.default_rng(4).standard_normal((1, 3, 5, 5))
    before = forward(graph, {"x": x})
    assert run("canonicalize{fold_bn=1}", graph) == ir("""
        graph @"dw_bn" {
          input %x : 1x3x5x5xf32
          param %w : 6x1x3x3xf32
          param %bias : 6xf32
          %c = conv2d(%x, %w, %bias) {group = 3, pads = [1, 1, 1, 1]} : act<1x6x5x5xf32> forward "DW+BN"
          return %c
        }
    """)
    np.testing.assert_allclose(forward(graph, {"x": x}), before, rtol=1e-5, atol=1e-5)


def test_fold_bn_only_when_asked() -> None:
    text = ir(CONV_BN)
    assert run("canonicalize", load(text)) == text


def test_fold_bn_leaves_a_conv_output_with_other_uses_alone() -> None:
    text = ir("""
        graph @"shared" {
          input %x : 1x2x4x4xf32
          param %w : 2x2x1x1xf32
          param %gamma : 2xf32
          param %beta : 2xf32
          param %mean : 2xf32
          param %var : 2xf32
          %c = conv2d(%x, %w) : act<1x2x4x4xf32> forward "Conv"
          %b = batchnorm(%c, %gamma, %beta, %mean, %var) : act<1x2x4x4xf32> forward "BN"
          %s = add(%b, %c) : act<1x2x4x4xf32> forward "Skip"
          return %s
        }
    """)
    assert run("canonicalize{fold_bn=1}", load(text)) == text


def test_fold_bn_leaves_a_batchnorm_after_a_non_conv_alone() -> None:
    text = ir("""
        graph @"gemm_bn" {
          input %x : 2x4xf32
          param %w : 3x4xf32
          param %gamma : 3xf32
          param %beta : 3xf32
          param %mean : 3xf32
          param %var : 3xf32
          %y = gemm(%x, %w) {trans_b = 1} : act<2x3xf32> forward "Gemm"
          %b = batchnorm(%y, %gamma, %beta, %mean, %var) : act<2x3xf32> forward "BN"
          return %b
        }
    """)
    assert run("canonicalize{fold_bn=1}", load(text)) == text


# -- dead code -------------------------------------------------------------------------------------
def test_dead_ops_and_unused_parameters_are_removed() -> None:
    graph = load("""
        graph @"dead" {
          input %x : 2x3xf32
          input %unused_input : 2xf32
          param %w : 3x3xf32
          param %orphan : 7xf32
          param %dead_w : 3x3xf32
          %y = gemm(%x, %w) : act<2x3xf32> forward "Gemm"
          %d1 = gemm(%y, %dead_w) : act<2x3xf32> forward "DeadGemm"
          %d2 = relu(%d1) : act<2x3xf32> forward "DeadRelu"
          %r = tanh(%y) : act<2x3xf32> forward "Tanh"
          return %r
        }
    """)
    assert run("canonicalize", graph) == ir("""
        graph @"dead" {
          input %x : 2x3xf32
          input %unused_input : 2xf32
          param %w : 3x3xf32
          %y = gemm(%x, %w) : act<2x3xf32> forward "Gemm"
          %r = tanh(%y) : act<2x3xf32> forward "Tanh"
          return %r
        }
    """)
    assert set(graph.initial) == {"w"}


def test_everything_together_and_a_second_run_changes_nothing() -> None:
    graph = load("""
        graph @"all" {
          input %x : 1x2x4x4xf32
          param %w : 3x2x3x3xf32
          param %gamma : 3xf32
          param %beta : 3xf32
          param %mean : 3xf32
          param %var : 3xf32
          const %shift : 3xf32
          param %fc : 4x3xf32
          %c = conv2d(%x, %w) {pads = [1, 1, 1, 1]} : act<1x3x4x4xf32> forward "Conv"
          %b = batchnorm(%c, %gamma, %beta, %mean, %var) : act<1x3x4x4xf32> forward "BN"
          %k = reshape(%shift) {shape = [1, 3, 1, 1]} : act<1x3x1x1xf32> forward "ShiftShape"
          %s = add(%b, %k) : act<1x3x4x4xf32> forward "Shift"
          %unused = sigmoid(%s) : act<1x3x4x4xf32> forward "Unused"
          %g = global_avgpool(%s) : act<1x3x1x1xf32> forward "GAP"
          %f = reshape(%g) {shape = [1, 3]} : act<1x3xf32> forward "Flatten"
          %y = gemm(%f, %fc) {trans_b = 1} : act<1x4xf32> forward "Fc"
          %p = softmax(%y) : act<1x4xf32> forward "Softmax"
          return %p
        }
    """)
    x = np.random.default_rng(5).standard_normal((1, 2, 4, 4))
    logits_before = Executor(graph).run({"x": x})["y"]
    expected = ir("""
        graph @"all" {
          input %x : 1x2x4x4xf32
          param %w : 3x2x3x3xf32
          param %fc : 4x3xf32
          const %k : 1x3x1x1xf32
          param %beta : 3xf32
          %c = conv2d(%x, %w, %beta) {pads = [1, 1, 1, 1]} : act<1x3x4x4xf32> forward "Conv+BN"
          %s = add(%c, %k) : act<1x3x4x4xf32> forward "Shift"
          %g = global_avgpool(%s) : act<1x3x1x1xf32> forward "GAP"
          %f = reshape(%g) {shape = [1, 3]} : act<1x3xf32> forward "Flatten"
          %y = gemm(%f, %fc) {trans_b = 1} : act<1x4xf32> forward "Fc"
          return %y
        }
    """)
    assert run("canonicalize{fold_bn=1;strip_softmax=1}", graph) == expected
    np.testing.assert_allclose(forward(graph, {"x": x}), logits_before, rtol=1e-5, atol=1e-5)
    assert parse_pipeline("canonicalize{fold_bn=1,strip_softmax=1}")[0].run(graph) is False
    assert print_graph(graph) == expected


def test_canonicalize_refuses_a_training_graph() -> None:
    graph = load(CONSTS)
    run("training{loss=mse}", graph)
    with pytest.raises(PassError, match=r"^pass 'canonicalize' failed: canonicalize runs on the forward graph, "
                                        r"before training$"):
        run("canonicalize", graph)

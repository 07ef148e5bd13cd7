"""memory: offsets printed and parsed back, IR text in -> text out, the placement's invariants on random
lifetimes (hypothesis), in-place reuse only where legal, update scheduling, and the budget error."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl.ir.graph import Graph
from tinyodl.ir.registry import IRError
from tinyodl.ir.text import ParseError, parse_graph, print_graph
from tinyodl.ir.verify import verify_graph
from tinyodl.passes.manager import PassManager, parse_pipeline
from tinyodl.passes.memory import Interval, live_bytes, place


def ir(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def run(pipeline: str, text: str) -> Graph:
    graph = parse_graph(ir(text))
    PassManager(parse_pipeline(pipeline)).run(graph)
    return graph


MLP = """
    graph @"mlp" {
      input %x : 2x4xf32
      input %t : 2x3xf32
      param %w : 3x4xf32 trainable
      %h = gemm(%x, %w) {trans_b = 1} : act<2x3xf32> forward "fc"
      %y = relu(%h) : act<2x3xf32> forward "relu"
      %l = mse_loss(%y, %t) : loss<f32> loss "mse"
      %y.grad = mse_loss_grad(%y, %t) : grad<2x3xf32> backward "mse"
      %h.grad = relu_grad(%y.grad, %h) : grad<2x3xf32> backward "relu"
      %w.grad = gemm(%h.grad, %x) {trans_a = 1} : grad<3x4xf32> backward "fc"
      sgd_update(%w, %w.grad) {lr = 0.1} update "fc"
      return %l
    }
"""


def test_offsets_print_and_parse_back() -> None:
    graph = run("memory", MLP)
    text = print_graph(graph)
    # Live at op #3: w 48 + x 32 + t 24 + h 24 + y 24 + l 8 + y.grad 24 = 184 bytes; relu_grad takes over
    # %y.grad's storage, the weight gradient reuses that of %t (dead after op #3).
    assert text == ir("""
        graph @"mlp" {
          // l2 plan: peak 184 B at op #3 mse_loss_grad "mse", lower bound 184 B, naive 256 B
          input %x : 2x4xf32 at 96
          input %t : 2x3xf32 at 48
          param %w : 3x4xf32 at 0 trainable
          %h = gemm(%x, %w) {trans_b = 1} : act<2x3xf32> at 72 forward "fc"
          %y = relu(%h) : act<2x3xf32> at 128 forward "relu"
          %l = mse_loss(%y, %t) : loss<f32> at 176 loss "mse"
          %y.grad = mse_loss_grad(%y, %t) : grad<2x3xf32> at 152 backward "mse"
          %h.grad = relu_grad(%y.grad, %h) : grad<2x3xf32> at 152 backward "relu"
          %w.grad = gemm(%h.grad, %x) {trans_a = 1} : grad<3x4xf32> at 48 backward "fc"
          sgd_update(%w, %w.grad) {lr = 0.1} update "fc"
          return %l
        }
    """)
    reparsed = parse_graph(text)
    assert [(v.name, v.l2_offset) for v in reparsed.all_values()] == \
        [(v.name, v.l2_offset) for v in graph.all_values()]
    # The summary is a comment: the offsets carry the plan, so the rest round-trips exactly.
    assert print_graph(reparsed) == "".join(line for line in text.splitlines(True) if "//" not in line)


def test_malformed_offset_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="line 2: L2 offset must be a non-negative integer, found '1.5'"):
        parse_graph('graph @"g" {\n  input %x : 2xf32 at 1.5\n  return %x\n}\n')


def test_a_view_shares_its_source_offset_and_the_verifier_checks_it() -> None:
    graph = run("memory", """
        graph @"v" {
          input %x : 2x3xf32
          %r = reshape(%x) {shape = [6]} : act<6xf32> forward "flat"
          %y = relu(%r) : act<6xf32> forward "relu"
          return %y
        }
    """)
    x, r, y = [v for v in graph.all_values()]
    assert r.l2_offset == x.l2_offset
    # relu is element-wise and %x (through its view) dies there: the result takes its storage.
    assert y.l2_offset == x.l2_offset
    r.l2_offset = 64
    with pytest.raises(IRError, match="the reshaped view %r is at L2 offset 64, its source at 0"):
        verify_graph(graph)


@pytest.mark.parametrize("body,shared", [
    pytest.param('%y = relu(%a) : act<4xf32> forward "r"\n  %z = add(%y, %a) : act<4xf32> forward "s"\n'
                 '  return %z', {"z": "y"}, id="read later: no reuse until its last use"),
    pytest.param('%y = softmax(%a) : act<4xf32> forward "s"\n  return %y', {}, id="softmax is not element-wise"),
    pytest.param('%y = relu(%w) : act<4xf32> forward "r"\n  return %y', {}, id="parameters persist"),
    pytest.param('%y = add(%b, %a) : act<4xf32> forward "s"\n  return %y', {"y": "a"},
                 id="broadcast operand too small, the full-size one is taken"),
    pytest.param('%y = tanh(%a) : act<4xf32> forward "t"\n  %z = sigmoid(%y) : act<4xf32> forward "s"\n'
                 '  return %z', {"y": "a", "z": "a"}, id="a chain reuses one block"),
])
def test_in_place_reuse_only_where_legal(body: str, shared: dict[str, str]) -> None:
    graph = run("memory", """
        graph @"p" {
          input %x : 4xf32
          param %w : 4xf32
          param %b : 1xf32
          %a = broadcast(%x) {scale = 2.0, shape = [4]} : act<4xf32> forward "first"
          BODY
        }
    """.replace("BODY", body))
    plan = graph.memory_plan
    assert plan is not None
    assert {t.name: t.shares for t in plan.tensors if t.shares} == shared


def test_no_in_place_when_disabled() -> None:
    plan = run("memory{in_place=0}", MLP).memory_plan
    assert plan is not None and not any(t.shares for t in plan.tensors)


# -- placement on random lifetimes ----------------------------------------------------------------
@st.composite
def lifetimes(draw: st.DrawFn) -> tuple[list[Interval], int]:
    end = draw(st.integers(1, 30))
    blocks = []
    for _ in range(draw(st.integers(1, 40))):
        if draw(st.integers(0, 5)) == 0:
            first, last = -1, end   # persists across steps
        else:
            first = draw(st.integers(-1, end - 1))
            last = draw(st.integers(first, end))
        blocks.append(Interval(8 * draw(st.integers(1, 64)), first, last))
    return blocks, end


@settings(max_examples=300, deadline=None)
@given(lifetimes())
def test_placement_never_overlaps_live_blocks_and_respects_the_lower_bound(case: tuple[list[Interval], int]) -> None:
    blocks, end = case
    peak = place(blocks)
    for index, block in enumerate(blocks):
        assert block.offset >= 0 and block.offset % 8 == 0 and block.offset + block.size <= peak
        for other in blocks[index + 1:]:
            if block.overlaps(other):
                assert block.offset + block.size <= other.offset or other.offset + other.size <= block.offset
    assert peak == max(b.offset + b.size for b in blocks)
    assert peak >= max(live_bytes(blocks, end))

"""Pipeline strings, the pass registry's errors, and the pass manager: verification between passes,
printing after a pass, timings, and failures that name the pass."""

from __future__ import annotations

import io
import re
import textwrap
from dataclasses import dataclass

import numpy as np
import pytest

from tinyodl.ir.graph import Graph, Op
from tinyodl.ir.registry import IRError
from tinyodl.ir.text import parse_graph, print_graph
from tinyodl.ir.types import Phase, Role, TensorType
from tinyodl.passes.canonicalize import Canonicalize
from tinyodl.passes.manager import Pass, PassError, PassManager, PassOptionError, parse_pipeline
from tinyodl.passes.training import Training

MODEL = textwrap.dedent("""
    graph @"tiny" {
      input %x : 2x3xf32
      param %w : 4x3xf32
      const %c : 4xf32
      %y = gemm(%x, %w) {trans_b = 1} : act<2x4xf32> forward "Gemm"
      %z = add(%y, %c) : act<2x4xf32> forward "Add"
      %p = softmax(%z) : act<2x4xf32> forward "Softmax"
      return %p
    }
""").lstrip("\n")


def model() -> Graph:
    graph = parse_graph(MODEL)
    graph.initial = {"w": np.ones((4, 3), np.float32), "c": np.zeros(4, np.float32)}
    return graph


# -- pipeline strings ------------------------------------------------------------------------------
def test_parse_pipeline_with_options() -> None:
    passes = parse_pipeline("canonicalize{fold_bn=1},training{optimizer=adam;lr=0.001}")
    assert passes == [Canonicalize(fold_bn=True), Training(optimizer="adam", lr=0.001)]
    assert [p.spec() for p in passes] == ["canonicalize{fold_bn=1}", "training{optimizer=adam,lr=0.001}"]


@pytest.mark.parametrize("text,expected", [
    ("", []),
    ("canonicalize", [Canonicalize()]),
    (" canonicalize , training ", [Canonicalize(), Training()]),
    ("canonicalize{}", [Canonicalize()]),
    ("canonicalize{fold_bn=true,strip_softmax=yes}", [Canonicalize(fold_bn=True, strip_softmax=True)]),
    ("canonicalize{fold_bn=0}", [Canonicalize(fold_bn=False)]),
    ("training{ loss = mse ; momentum = 0.9 ; nesterov = 1 }", [Training(loss="mse", momentum=0.9, nesterov=True)]),
    ("training{train=conv1.weight,fc.bias}", [Training(train="conv1.weight,fc.bias")]),
    ("training{lr=0.5,train=a,b,momentum=0.1}", [Training(lr=0.5, train="a,b", momentum=0.1)]),
    ("training{train=last:2}", [Training(train="last:2")]),
    ("training,training", [Training(), Training()]),
])
def test_pipeline_forms(text: str, expected: list[Pass]) -> None:
    assert parse_pipeline(text) == expected


@pytest.mark.parametrize("passes", [
    [Canonicalize(fold_bn=True, strip_softmax=True)],
    [Training(loss="mse", optimizer="adamw", lr=0.002, weight_decay=0.1, beta1=0.8, eps=1e-06, train="a,b")],
    [Canonicalize(), Training(momentum=0.9, nesterov=True, train="last:1")],
])
def test_spec_parses_back_to_the_same_passes(passes: list[Pass]) -> None:
    assert parse_pipeline(",".join(p.spec() for p in passes)) == passes


@pytest.mark.parametrize("text,message", [
    ("fold-everything", "unknown pass 'fold-everything' (known: canonicalize, memory, precision, tiling, training)"),
    ("canonicalize,lower", "unknown pass 'lower' (known: canonicalize, memory, precision, tiling, training)"),
    ("canonicalize{fold=1}", "pass 'canonicalize': unknown or malformed option 'fold=1'"),
    ("canonicalize{fold_bn}", "pass 'canonicalize': unknown or malformed option 'fold_bn'"),
    ("training{name=x}", "pass 'training': unknown or malformed option 'name=x'"),
    ("canonicalize{fold_bn=maybe}", "pass 'canonicalize' option 'fold_bn': 'maybe' is not a valid bool"),
    ("training{lr=fast}", "pass 'training' option 'lr': 'fast' is not a valid float"),
    ("canonicalize training", "malformed pipeline at 'canonicalize training'"),
    ("canonicalize{fold_bn=1", "malformed pipeline at 'canonicalize{fold_bn=1'"),
    ("canonicalize,,training", "malformed pipeline at ',training'"),
])
def test_pipeline_errors(text: str, message: str) -> None:
    with pytest.raises(PassOptionError) as info:
        parse_pipeline(text)
    assert str(info.value) == message


# -- the manager -----------------------------------------------------------------------------------
def test_print_after_a_named_pass() -> None:
    out = io.StringIO()
    manager = PassManager(parse_pipeline("canonicalize{strip_softmax=1},training{train=none}"),
                          print_after={"canonicalize"}, out=out, printer=print_graph)
    manager.run(model())
    assert out.getvalue() == textwrap.dedent("""\
        // ----- IR after canonicalize{strip_softmax=1} -----
        graph @"tiny" {
          input %x : 2x3xf32
          param %w : 4x3xf32
          const %c : 4xf32
          %y = gemm(%x, %w) {trans_b = 1} : act<2x4xf32> forward "Gemm"
          %z = add(%y, %c) : act<2x4xf32> forward "Add"
          return %z
        }
    """)


def test_print_after_all_and_timings() -> None:
    out = io.StringIO()
    manager = PassManager(parse_pipeline("canonicalize{strip_softmax=1},training{loss=mse;lr=0.1}"),
                          print_after={"all"}, time_passes=True, out=out, printer=print_graph)
    graph = manager.run(model())
    text = out.getvalue()
    headers = [line for line in text.splitlines() if line.startswith("// ----- ")]
    assert headers == ["// ----- IR after canonicalize{strip_softmax=1} -----",
                       "// ----- IR after training{loss=mse,lr=0.1} -----",
                       "// ----- pass timings -----"]
    assert text.split("// ----- IR after training{loss=mse,lr=0.1} -----\n")[1].startswith(print_graph(graph))
    timing_lines = text.split("// ----- pass timings -----\n")[1].splitlines()
    assert [line.split()[1] for line in timing_lines] == ["canonicalize", "training", "total"]
    assert all(re.fullmatch(r"//   \S+ +\d+\.\d\d ms", line) for line in timing_lines)
    assert [name for name, _ in manager.timings] == ["canonicalize", "training"]
    assert all(seconds >= 0 for _, seconds in manager.timings)


def test_nothing_is_printed_without_an_output_stream() -> None:
    manager = PassManager(parse_pipeline("canonicalize"), print_after={"all"}, time_passes=True)
    manager.run(model())
    assert [name for name, _ in manager.timings] == ["canonicalize"]


@dataclass(frozen=True)
class BreakTypes(Pass):
    """Declares a wrong result type: the verifier after the pass must catch it."""

    name = "break-types"

    def run(self, graph: Graph) -> bool:
        graph.ops[0].outputs[0].type = TensorType((9, 9))
        return True


@dataclass(frozen=True)
class Dangling(Pass):
    """Adds an op reading a value that is defined nowhere."""

    name = "dangling"

    def run(self, graph: Graph) -> bool:
        ghost = graph.new_value("ghost", TensorType((2, 3)), Role.ACT)
        out = graph.new_value("out", TensorType((2, 3)), Role.ACT)
        graph.append(Op("relu", [ghost], [out], {}, Phase.FORWARD, "Ghost"))
        return True


@dataclass(frozen=True)
class Raises(Pass):
    name = "raises"

    def run(self, graph: Graph) -> bool:
        raise IRError("something in the graph is off")


def test_a_pass_producing_invalid_ir_is_named() -> None:
    with pytest.raises(PassError) as info:
        PassManager([Canonicalize(), BreakTypes()]).run(model())
    assert str(info.value) == ("pass 'break-types' (after canonicalize) produced invalid IR: op #0 gemm -> %y "
                               "(node 'Gemm'): result %y declared 9x9xf32, inferred 2x4xf32")


def test_a_pass_producing_a_use_before_def_is_named() -> None:
    with pytest.raises(PassError) as info:
        PassManager([Dangling()]).run(model())
    assert str(info.value) == ("pass 'dangling' produced invalid IR: op #3 relu -> %out (node 'Ghost'): "
                               "operand %ghost is used before it is defined")


def test_a_failing_pass_is_named_with_those_before_it() -> None:
    with pytest.raises(PassError) as info:
        PassManager([Canonicalize(), Canonicalize(strip_softmax=True), Raises()]).run(model())
    assert str(info.value) == "pass 'raises' (after canonicalize, canonicalize) failed: something in the graph is off"


def test_invalid_input_is_reported_before_the_first_pass() -> None:
    graph = model()
    graph.ops[1].attrs["bogus"] = 1
    with pytest.raises(PassError) as info:
        PassManager([Canonicalize()]).run(graph)
    assert str(info.value) == ("invalid IR before the first pass: op #1 add -> %z (node 'Add'): "
                               "add: unknown attribute 'bogus'")

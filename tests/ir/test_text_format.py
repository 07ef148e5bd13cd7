"""The textual IR: print -> parse -> print round trips, parse errors with line numbers, and the verifier's
messages for invalid IR written as text."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl.ir.graph import AttrValue, Graph, Op, Value
from tinyodl.ir.registry import IRError
from tinyodl.ir.text import ParseError, parse_graph, print_graph
from tinyodl.ir.types import DType, Layout, Phase, Role, TensorType
from tinyodl.ir.verify import verify_graph
from tinyodl.passes.manager import PassManager, parse_pipeline

ODD_NAMES = ['x "quoted"', "with space", "ends */", "/* opens", "line\nbreak", "cr\rtab\t", "#hash", "a // b",
             "ünïcødé ✓", "", "back\\slash", "%percent", "{brace}", "x = relu(y)", "-1", "2x3xf32", "end}",
             "\u2028separator", "emoji 🙂"]


def f32(*shape: int, layout: Layout = Layout.ANY) -> TensorType:
    return TensorType(shape, DType.F32, layout)


def assert_same_graph(a: Graph, b: Graph) -> None:
    """Structural equality, beyond the text: names, roles, types, flags, ops, attrs (sign of zero too)."""
    assert a.name == b.name

    def decl(v: Value) -> tuple[object, ...]:
        return (v.name, v.role, v.type, v.trainable, v.origin)

    for mine, theirs in [(a.inputs, b.inputs), (a.params, b.params), (a.state, b.state)]:
        assert [decl(v) for v in mine] == [decl(v) for v in theirs]
    assert len(a.ops) == len(b.ops)
    for x, y in zip(a.ops, b.ops, strict=False):
        assert (x.type, x.phase, x.node) == (y.type, y.phase, y.node)
        assert [v.name for v in x.inputs] == [v.name for v in y.inputs]
        assert [(v.name, v.role, v.type) for v in x.outputs] == [(v.name, v.role, v.type) for v in y.outputs]
        assert sorted(x.attrs) == sorted(y.attrs)
        for key in x.attrs:
            assert_same_attr(x.attrs[key], y.attrs[key])
    assert [v.name for v in a.outputs] == [v.name for v in b.outputs]


def assert_same_attr(x: AttrValue, y: AttrValue) -> None:
    assert type(x) is type(y), (x, y)
    if isinstance(x, tuple):
        assert isinstance(y, tuple) and len(x) == len(y)
        for p, q in zip(x, y, strict=False):
            assert_same_attr(p, q)
    elif isinstance(x, float):
        assert isinstance(y, float)
        assert (math.isnan(x) and math.isnan(y)) or (x == y and math.copysign(1, x) == math.copysign(1, y))
    else:
        assert x == y


def round_trip(graph: Graph) -> str:
    text = print_graph(graph)
    parsed = parse_graph(text)
    assert print_graph(parsed) == text
    assert_same_graph(graph, parsed)
    return text


# -- round trips -----------------------------------------------------------------------------------
def odd_graph() -> Graph:
    graph = Graph('model "v2" */ #1\nünï')
    inputs = [graph.add_input(name, f32(2, 3)) for name in ODD_NAMES]
    weight = graph.add_param("w*/", np.zeros((2, 3)), f32(2, 3, layout=Layout.HWC), trainable=True,
                             origin="onnx::Gemm_0 weight\n")
    graph.add_param("frozen", np.zeros(()), TensorType(()), role=Role.CONST)
    step = graph.add_state("optimizer step #", TensorType((), DType.I32))
    chain = inputs[0]
    attrs_list: list[tuple[str, dict[str, AttrValue]]] = [
        ("clip", {"min": -0.5, "max": float("inf")}),
        ("clip", {"min": -float("inf"), "max": 1e-08}),
        ("leaky_relu", {"alpha": 1e300}),
        ("leaky_relu", {"alpha": -0.0}),
        ("leaky_relu", {"alpha": 5e-324}),
        ("leaky_relu", {"alpha": 0.1 + 0.2}),
        ("clip", {"min": float("nan"), "max": 2.0}),
    ]
    for index, (op_type, attrs) in enumerate(attrs_list):
        out = graph.new_value(f"{ODD_NAMES[index]} out", f32(2, 3), Role.ACT)
        graph.append(Op(op_type, [chain], [out], attrs, Phase.FORWARD, ODD_NAMES[-index - 1]))
        chain = out
    summed = graph.new_value("sum\n", f32(2, 3), Role.ACT)
    graph.append(Op("reduce_sum", [chain], [summed], {"axes": (), "keepdims": 1, "scale": 1.0}, Phase.FORWARD))
    total = graph.new_value("total", f32(2, 3), Role.ACT)
    graph.append(Op("add", [summed, inputs[5]], [total], {}, Phase.FORWARD, "é"))
    loss = graph.new_value("loss ✓", TensorType(()), Role.LOSS)
    graph.append(Op("mse_loss", [total, inputs[6]], [loss], {}, Phase.LOSS, "loss"))
    dy = graph.new_value("d total", f32(2, 3), Role.GRAD)
    graph.append(Op("mse_loss_grad", [total, inputs[6]], [dy], {}, Phase.BACKWARD, "loss"))
    graph.append(Op("step_increment", [step], [], {}, Phase.UPDATE, "optimizer"))
    graph.append(Op("sgd_update", [weight, inputs[1]], [], {"lr": 0.01, "weight_decay": 1e-4}, Phase.UPDATE,
                    "w*/"))
    graph.outputs = [loss, inputs[7], dy]
    return graph


def test_round_trip_with_odd_names_and_attribute_values() -> None:
    graph = odd_graph()
    verify_graph(graph)
    text = round_trip(graph)
    assert text.count("\n") == len(text.splitlines()), "a name leaked a raw line break"
    assert "max = 1e-08" in text and "alpha = 1e+300" in text and "alpha = 5e-324" in text
    assert "min = -inf" in text and "max = inf" in text and "alpha = -0.0" in text
    assert "axes = []" in text
    assert '%"ends */"' in text
    verify_graph(parse_graph(text))


def test_round_trip_of_a_trained_graph_with_multi_result_and_no_result_ops() -> None:
    text = """\
graph @"bn" {
  input %x : 2x3x4x4xf32
  param %gamma : 3xf32 trainable
  param %beta : 3xf32 trainable
  param %mean : 3xf32
  param %var : 3xf32
  %y = batchnorm(%x, %gamma, %beta, %mean, %var) {epsilon = 0.001} : act<2x3x4x4xf32> forward "BN"
  %p = global_avgpool(%y) : act<2x3x1x1xf32> forward "GAP"
  %f = reshape(%p) {shape = [2, 3]} : act<2x3xf32> forward "Flatten"
  return %f
}
"""
    graph = parse_graph(text)
    assert print_graph(graph) == text
    PassManager(parse_pipeline("training{optimizer=adamw;loss=mse}")).run(graph)
    trained = round_trip(graph)
    assert "%gamma.grad, %beta.grad = batchnorm_grad_params(" in trained
    assert "  step_increment(%optimizer.step) update \"optimizer\"\n" in trained


def test_layouts_origins_and_declarations_round_trip() -> None:
    text = """\
graph @"decls" {
  input %x : 1x3x8x8xf32, hwc from "images"
  input %labels : 1xi64
  param %w : 4x3x1x1xf32, chw trainable from "conv.weight"
  const %k : 2xi32
  state %s : i32
  %y = conv2d(%x, %w) : act<1x4x8x8xf32, hwc> forward "Conv_0"
  return %y
}
"""
    graph = parse_graph(text)
    assert print_graph(graph) == text
    assert graph.inputs[0].type == TensorType((1, 3, 8, 8), DType.F32, Layout.HWC)
    assert graph.inputs[0].origin == "images"
    assert graph.params[0].trainable and graph.params[0].origin == "conv.weight"
    assert graph.params[1].role is Role.CONST
    assert "w" not in graph.initial, "the text carries no tensor contents"
    verify_graph(graph)


def test_comments_and_blank_lines_are_ignored() -> None:
    text = '// leading comment\ngraph @"g" {\n\n  // a comment line\n  input %x : 2xf32\n  return %x\n}\n'
    graph = parse_graph(text)
    assert print_graph(graph) == 'graph @"g" {\n  input %x : 2xf32\n  return %x\n}\n'


@settings(max_examples=80, deadline=None)
@given(name=st.text(max_size=12), node=st.text(max_size=8))
def test_any_value_name_and_node_round_trip(name: str, node: str) -> None:
    graph = Graph(name)
    x = graph.add_input(name, f32(3))
    out = graph.new_value(name + "'", f32(3), Role.ACT)
    graph.append(Op("relu", [x], [out], {}, Phase.FORWARD, node))
    graph.outputs = [out]
    round_trip(graph)


@settings(max_examples=80, deadline=None)
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
       ints=st.lists(st.integers(-2**40, 2**40), max_size=4), scalar=st.floats(width=32))
def test_float_and_int_attributes_round_trip(values: list[float], ints: list[int], scalar: float) -> None:
    graph = Graph("attrs")
    x = graph.add_input("x", f32(3))
    out = graph.new_value("y", f32(3), Role.ACT)
    attrs: dict[str, AttrValue] = {"floats": tuple(values), "ints": tuple(ints), "scalar": scalar, "n": -7,
                                   "text": "a \"b\"\n"}
    graph.append(Op("custom_op", [x], [out], attrs))
    graph.outputs = [out]
    round_trip(graph)


# -- parse errors ----------------------------------------------------------------------------------
HEAD = 'graph @"g" {\n  input %x : 2x3xf32\n'


@pytest.mark.parametrize("body,message", [
    ('  %y = relu(%nope) : act<2x3xf32> forward ""\n  return %y\n}\n', "line 3: use of undefined value %nope"),
    ('  return %missing\n}\n', "line 3: use of undefined value %missing"),
    ('  %y = relu(%x) : act<2x3xf32> forward ""\n  %z = relu(%z) : act<2x3xf32> forward ""\n}\n',
     "line 4: use of undefined value %z"),
    ('  input %x : 2xf32\n}\n', "line 3: value %x defined twice"),
    ('  %x = relu(%x) : act<2x3xf32> forward ""\n}\n', "line 3: value %x defined twice"),
    ('  %y = relu(%x) : act<2x3xf32> forward ""\n  %y = relu(%x) : act<2x3xf32> forward ""\n}\n',
     "line 4: value %y defined twice"),
    ('  %a, %a = batchnorm_grad_params(%x, %x, %x, %x) : grad<3xf32>, grad<3xf32> backward ""\n}\n',
     "line 3: value %a defined twice"),
    ('  %y = relu(%x) ? act<2x3xf32> forward ""\n}\n', "line 3: unexpected character '?'"),
    ('  %y = relu(%x) : act<2x3xf32> forward ""; extra\n}\n', "line 3: unexpected character ';'"),
    ('  %y = relu(%x) : act<2x3xf33> forward ""\n}\n', "line 3: expected type, found '2'"),
    ('  %y = relu(%x) : act<2x3xf32> sideways ""\n}\n', "line 3: 'sideways' is not a valid Phase"),
    ('  %y = relu(%x) : activation<2x3xf32> forward ""\n}\n', "line 3: 'activation' is not a valid Role"),
    ('  input %z : 2xf32, nchw\n}\n', "line 3: 'nchw' is not a valid Layout"),
    ('  %y = relu(%x) {alpha = relu} : act<2x3xf32> forward ""\n}\n',
     "line 3: expected an attribute value, found 'relu'"),
    ('  %y = relu(%x) : act<2x3xf32> forward\n}\n', "line 3: expected string, found 'end of line'"),
    ('  %y = relu(%x) : act<2x3xf32> forward "" "again"\n}\n', "line 3: unexpected '\"again\"'"),
    ('  return %x\n}\n  return %x\n', "line 5: text after the closing brace"),
    ('  return %x\n', "missing closing '}'"),
])
def test_parse_errors_name_the_line(body: str, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_graph(HEAD + body)
    assert str(info.value) == message


def test_parse_error_line_numbers_count_comments_and_blank_lines() -> None:
    text = '// header\n\ngraph @"g" {\n  // comment\n\n  input %x : 2xf32\n  return %y\n}\n'
    with pytest.raises(ParseError, match=r"^line 7: use of undefined value %y$"):
        parse_graph(text)


def test_empty_input_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="^empty input$"):
        parse_graph("// nothing\n\n")


# -- the verifier on IR text -----------------------------------------------------------------------
VERIFY_HEAD = 'graph @"bad" {\n  input %x : 2x3xf32\n  param %w : 2x3xf32 trainable\n'


@pytest.mark.parametrize("body,message", [
    pytest.param('  %y = relu(%x) : act<2x4xf32> forward "r"\n  return %y\n}\n',
                 "op #0 relu -> %y (node 'r'): result %y declared 2x4xf32, inferred 2x3xf32", id="type mismatch"),
    pytest.param('  %y = relu(%x) : act<2x3xf16> forward "r"\n  return %y\n}\n',
                 "op #0 relu -> %y (node 'r'): result %y declared 2x3xf16, inferred 2x3xf32", id="dtype mismatch"),
    pytest.param('  %y = frobnicate(%x) : act<2x3xf32> forward "f"\n  return %y\n}\n',
                 "op #0 frobnicate -> %y (node 'f'): unknown op 'frobnicate'", id="unknown op"),
    pytest.param('  %y = relu(%x, %w) : act<2x3xf32> forward "r"\n  return %y\n}\n',
                 "op #0 relu -> %y (node 'r'): relu: expects 1..1 operands, got 2", id="operand count"),
    pytest.param('  %y = gemm(%x) : act<2x2xf32> forward ""\n  return %y\n}\n',
                 "op #0 gemm -> %y: gemm: expects 2..3 operands, got 1", id="too few operands"),
    pytest.param('  %y = clip(%x) {max = 6.0} : act<2x3xf32> forward "c"\n  return %y\n}\n',
                 "op #0 clip -> %y (node 'c'): clip: missing attribute 'min'", id="missing attribute"),
    pytest.param('  %y = clip(%x) {max = 6.0, min = "zero"} : act<2x3xf32> forward "c"\n  return %y\n}\n',
                 "op #0 clip -> %y (node 'c'): clip: attribute 'min' must be float, got 'zero'",
                 id="wrong attribute kind"),
    pytest.param('  %y = reduce_sum(%x) {axes = [0.5]} : act<3xf32> forward "s"\n  return %y\n}\n',
                 "op #0 reduce_sum -> %y (node 's'): reduce_sum: attribute 'axes' must be ints, got (0.5,)",
                 id="float in ints"),
    pytest.param('  %y = reduce_sum(%x) {axes = 0} : act<3xf32> forward "s"\n  return %y\n}\n',
                 "op #0 reduce_sum -> %y (node 's'): reduce_sum: attribute 'axes' must be ints, got 0",
                 id="scalar for ints"),
    pytest.param('  %y = relu(%x) {alpha = 1.0} : act<2x3xf32> forward "r"\n  return %y\n}\n',
                 "op #0 relu -> %y (node 'r'): relu: unknown attribute 'alpha'", id="unknown attribute"),
    pytest.param('  %g = relu(%x) : grad<2x3xf32> backward "r"\n  sgd_update(%x, %g) {lr = 0.1} update "x"\n'
                 '  return %g\n}\n',
                 "op #1 sgd_update (node 'x'): writes operand %x in place, which is neither a parameter nor "
                 "optimizer state", id="mutating an input"),
    pytest.param('  const %c : 2x3xf32\n  sgd_update(%c, %x) {lr = 0.1} update "c"\n  return %x\n}\n',
                 "op #0 sgd_update (node 'c'): writes operand %c in place, which is neither a parameter nor "
                 "optimizer state", id="mutating a constant"),
    pytest.param('  %l = mse_loss(%w, %x) : loss<f32> loss "l"\n  %y = relu(%x) : act<2x3xf32> forward "r"\n'
                 '  return %l\n}\n',
                 "op #1 relu -> %y (node 'r'): forward op after a later phase", id="phase order"),
    pytest.param('  sgd_update(%w, %x) {lr = 0.1} update "w"\n  %l = mse_loss(%w, %x) : loss<f32> loss ""\n'
                 '  return %l\n}\n',
                 "op #1 mse_loss -> %l: loss op after a later phase", id="loss after update"),
    pytest.param('  %y, %z = relu(%x) : act<2x3xf32>, act<2x3xf32> forward "r"\n  return %y\n}\n',
                 "op #0 relu -> %y, %z (node 'r'): has 2 results, relu produces 1", id="result count"),
    pytest.param('  input %t : 2xf32 trainable\n  return %t\n}\n', "%t: only parameters can be trainable",
                 id="trainable input"),
])
def test_verifier_messages(body: str, message: str) -> None:
    graph = parse_graph(VERIFY_HEAD + body)
    with pytest.raises(IRError) as info:
        verify_graph(graph)
    assert str(info.value) == message


def test_use_before_def_is_a_parse_error_in_text_and_a_verifier_error_in_a_graph() -> None:
    text = VERIFY_HEAD + ('  %a = relu(%x) : act<2x3xf32> forward "first"\n'
                          '  %b = tanh(%a) : act<2x3xf32> forward "second"\n  return %b\n}\n')
    graph = parse_graph(text)
    verify_graph(graph)
    graph.ops.reverse()
    with pytest.raises(IRError) as info:
        verify_graph(graph)
    assert str(info.value) == "op #0 tanh -> %b (node 'second'): operand %a is used before it is defined"
    swapped = text.replace('  %a = relu(%x) : act<2x3xf32> forward "first"\n', "").replace(
        "  return %b\n", '  %a = relu(%x) : act<2x3xf32> forward "first"\n  return %b\n')
    with pytest.raises(ParseError, match=r"^line 4: use of undefined value %a$"):
        parse_graph(swapped)


def test_verifier_checks_graph_outputs_and_initial_shapes() -> None:
    graph = parse_graph(VERIFY_HEAD + '  %y = relu(%x) : act<2x3xf32> forward ""\n  return %y\n}\n')
    graph.initial["w"] = np.zeros((3, 2))
    with pytest.raises(IRError, match=r"^%w: initial value has shape \[3, 2\], declared \[2, 3\]$"):
        verify_graph(graph)
    graph.initial["w"] = np.zeros((2, 3))
    stray = Value("stray", f32(2, 3), Role.ACT)
    graph.outputs = [stray]
    with pytest.raises(IRError, match="^graph output %stray is not defined$"):
        verify_graph(graph)

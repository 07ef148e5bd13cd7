"""The textual IR: one declaration or op a line, MLIR-like; `print_graph` and `parse_graph` round-trip.

    graph @lenet {
      input %input : 1x1x28x28xf32
      param %conv1.weight : 6x1x5x5xf32 trainable
      %y = conv2d(%input, %conv1.weight) {group = 1, pads = [2, 2, 2, 2], strides = [1, 1]}
          : act<1x6x28x28xf32> forward "Conv_0"        (one line in the real format)
      sgd_update(%conv1.weight, %y.grad) {lr = 0.01, ...} update "Conv_0"
      return %loss
    }

After the memory pass every value's type is followed by `at OFFSET`, its byte offset in the L2 arena
(`param %w : 6x1x5x5xf32 at 0 trainable`, `... : act<1x6x28x28xf32> at 4096 forward "Conv_0"`).
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Iterator
from typing import TypeVar

from tinyodl.ir.graph import AttrValue, Graph, Op, Value
from tinyodl.ir.registry import kernel_of
from tinyodl.ir.types import DType, Layout, Phase, Role, TensorType

_BARE_NAME = re.compile(r"[A-Za-z0-9_.$\-/]+\Z")
_E = TypeVar("_E", bound=enum.Enum)
_DECL_ROLES = {"input": Role.INPUT, "param": Role.PARAM, "const": Role.CONST, "state": Role.STATE}


class ParseError(Exception):
    pass


# -- printing ---------------------------------------------------------------------------------
def value_ref(value: Value) -> str:
    return f"%{value.name}" if _BARE_NAME.match(value.name) else f"%{json.dumps(value.name)}"


def format_attr(value: AttrValue) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")
    return str(value)


def format_op(op: Op) -> str:
    text = ""
    if op.outputs:
        text = ", ".join(value_ref(v) for v in op.outputs) + " = "
    text += f"{op.type}(" + ", ".join(value_ref(v) for v in op.inputs) + ")"
    if op.attrs:
        text += " {" + ", ".join(f"{k} = {format_attr(op.attrs[k])}" for k in sorted(op.attrs)) + "}"
    if op.outputs:
        text += " : " + ", ".join(f"{v.role.value}<{_type_text(v.type)}>{_placement(v)}" for v in op.outputs)
    return text + f" {op.phase.value} {json.dumps(op.node)}"


def _placement(value: Value) -> str:
    return "" if value.l2_offset is None else f" at {value.l2_offset}"


def _type_text(t: TensorType) -> str:
    dims = "".join(f"{d}x" for d in t.shape)
    layout = f", {t.layout.value}" if t.layout is not Layout.ANY else ""
    return f"{dims}{t.dtype.value}{layout}"


def _declaration(value: Value) -> str:
    keyword = {Role.INPUT: "input", Role.PARAM: "param", Role.CONST: "const", Role.STATE: "state"}[value.role]
    text = f"{keyword} {value_ref(value)} : {_type_text(value.type)}{_placement(value)}"
    if value.trainable:
        text += " trainable"
    if value.origin and value.origin != value.name:
        text += f" from {json.dumps(value.origin)}"
    return text


def print_graph(graph: Graph) -> str:
    lines = [f"graph @{json.dumps(graph.name)} {{"]
    if graph.memory_plan is not None:
        lines.append(f"  // {_plan_summary(graph)}")
    lines += [f"  {_declaration(v)}" for v in graph.graph_values()]
    for op in graph.ops:
        if not op.body:
            lines.append(f"  {format_op(op)}")
            continue
        lines.append(f"  {format_op(op)} {{")
        lines += [f"    {format_op(inner)}" for inner in op.body]
        lines.append("  }")
    lines.append("  return " + ", ".join(value_ref(v) for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _plan_summary(graph: Graph) -> str:
    """One comment line; the parser skips it, the offsets on the values carry the plan itself."""
    plan = graph.memory_plan
    assert plan is not None
    where = ""
    if 0 <= plan.peak_op < len(graph.ops):
        op = graph.ops[plan.peak_op]
        where = f" at op #{plan.peak_op} {kernel_of(op.type, op.attrs)[0]} {json.dumps(op.node)}"
    return (f"l2 plan: peak {plan.peak_bytes} B{where}, lower bound {plan.lower_bound_bytes} B, "
            f"naive {plan.naive_bytes} B")


# -- parsing ----------------------------------------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<ws>[ \t]+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<value>%(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.$\-/]+))
  | (?P<type>(?:\d+x)*(?:f32|f16|bf16|i32|i64)\b)
  | (?P<number>-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+|inf\b|nan\b))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(){}\[\],=:<>@])
""", re.VERBOSE)


class _Line:
    def __init__(self, text: str, lineno: int) -> None:
        self.lineno = lineno
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise ParseError(f"line {lineno}: unexpected character {text[pos]!r}")
            pos = match.end()
            if match.lastgroup != "ws":
                self.tokens.append((match.lastgroup or "", match.group()))
        self.pos = 0

    def error(self, message: str) -> ParseError:
        return ParseError(f"line {self.lineno}: {message}")

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("eol", "")

    def take(self, kind: str, text: str | None = None) -> str:
        tok_kind, tok_text = self.peek()
        if tok_kind != kind or (text is not None and tok_text != text):
            raise self.error(f"expected {text or kind}, found {tok_text or 'end of line'!r}")
        self.pos += 1
        return tok_text

    def accept(self, kind: str, text: str | None = None) -> bool:
        tok_kind, tok_text = self.peek()
        if tok_kind == kind and (text is None or tok_text == text):
            self.pos += 1
            return True
        return False

    def end(self) -> None:
        if self.peek()[0] != "eol":
            raise self.error(f"unexpected {self.peek()[1]!r}")


def _value_name(token: str) -> str:
    body = token[1:]
    return json.loads(body) if body.startswith('"') else body


def _enum(line: _Line, kind: type[_E]) -> _E:
    try:
        return kind(line.take("ident"))
    except ValueError as exc:
        raise line.error(str(exc)) from None


def _parse_type(line: _Line) -> TensorType:
    text = line.take("type")
    *dims, dtype = text.split("x")
    layout = Layout.ANY
    if line.accept("punct", ","):
        layout = _enum(line, Layout)
    return TensorType(tuple(int(d) for d in dims), DType(dtype), layout)


def _parse_attr(line: _Line) -> AttrValue:
    kind, text = line.peek()
    if line.accept("punct", "["):
        items: list[AttrValue] = []
        while not line.accept("punct", "]"):
            if items:
                line.take("punct", ",")
            items.append(_parse_attr(line))
        return tuple(items)  # type: ignore[return-value]
    line.pos += 1
    if kind == "string":
        return json.loads(text)  # type: ignore[no-any-return]
    if kind == "number":
        is_float = any(c in text for c in ".eEn") or "inf" in text
        return float(text) if is_float else int(text)
    raise line.error(f"expected an attribute value, found {text!r}")


def _parse_placement(line: _Line) -> int | None:
    """The optional `at OFFSET` after a type: the value's byte offset in the L2 arena."""
    if not line.accept("ident", "at"):
        return None
    text = line.take("number")
    if not text.isdigit():
        raise line.error(f"L2 offset must be a non-negative integer, found {text!r}")
    return int(text)


def _lines(text: str) -> Iterator[_Line]:
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped and not stripped.startswith("//"):
            yield _Line(stripped, lineno)


def parse_graph(text: str) -> Graph:
    """Parse the textual IR. Values must be defined before use; types are taken as written."""
    lines = list(_lines(text))
    if not lines:
        raise ParseError("empty input")
    head = lines[0]
    head.take("ident", "graph")
    head.take("punct", "@")
    graph = Graph(json.loads(head.take("string")))
    head.take("punct", "{")
    head.end()
    values: dict[str, Value] = {}

    def lookup(line: _Line) -> Value:
        name = _value_name(line.take("value"))
        if name not in values:
            raise line.error(f"use of undefined value %{name}")
        return values[name]

    closed = False
    open_body: Op | None = None  # the tile loop whose body lines are being read
    for line in lines[1:]:
        if closed:
            raise line.error("text after the closing brace")
        kind, text_ = line.peek()
        if kind == "punct" and text_ == "}":
            line.take("punct")
            line.end()
            if open_body is not None:
                open_body = None
            else:
                closed = True
        elif open_body is not None:
            inner = _parse_op(line, graph, values, lookup)
            if inner.body is _OPENS_BODY:
                raise line.error("a body op cannot have a body of its own")
            for out in inner.outputs:
                out.producer = inner
            open_body.body.append(inner)
        elif kind == "ident" and text_ in _DECL_ROLES:
            _parse_declaration(line, graph, values)
        elif kind == "ident" and text_ == "return":
            line.take("ident")
            graph.outputs.append(lookup(line))
            while line.accept("punct", ","):
                graph.outputs.append(lookup(line))
            line.end()
        else:
            op = _parse_op(line, graph, values, lookup)
            if op.body is _OPENS_BODY:
                op.body = []
                open_body = op
            graph.append(op)
    if open_body is not None:
        raise ParseError(f"missing closing '}}' of the body of {open_body.type} (node {open_body.node!r})")
    if not closed:
        raise ParseError("missing closing '}'")
    return graph


def _parse_declaration(line: _Line, graph: Graph, values: dict[str, Value]) -> None:
    role = _DECL_ROLES[line.take("ident")]
    name = _value_name(line.take("value"))
    line.take("punct", ":")
    type_ = _parse_type(line)
    offset = _parse_placement(line)
    trainable = line.accept("ident", "trainable")
    origin = json.loads(line.take("string")) if line.accept("ident", "from") else ""
    line.end()
    if name in values:
        raise line.error(f"value %{name} defined twice")
    if role is Role.INPUT:
        value = graph.add_input(name, type_, origin)
    elif role is Role.STATE:
        value = graph.add_state(name, type_)
    else:
        import numpy as np
        value = graph.add_param(name, np.zeros(type_.shape, type_.dtype.numpy), type_, role=role,
                                trainable=trainable, origin=origin)
        del graph.initial[name]  # the text carries no tensor contents
    value.trainable = trainable  # kept on any declaration, so the verifier can reject a trainable input
    value.l2_offset = offset
    values[name] = value


def _parse_op(line: _Line, graph: Graph, values: dict[str, Value], lookup) -> Op:  # type: ignore[no-untyped-def]
    out_names: list[str] = []
    if line.peek()[0] == "value":
        out_names.append(_value_name(line.take("value")))
        while line.accept("punct", ","):
            out_names.append(_value_name(line.take("value")))
        line.take("punct", "=")
    op_type = line.take("ident")
    line.take("punct", "(")
    inputs: list[Value] = []
    while not line.accept("punct", ")"):
        if inputs:
            line.take("punct", ",")
        inputs.append(lookup(line))
    attrs: dict[str, AttrValue] = {}
    if line.accept("punct", "{"):
        while not line.accept("punct", "}"):
            if attrs:
                line.take("punct", ",")
            key = line.take("ident")
            line.take("punct", "=")
            attrs[key] = _parse_attr(line)
    outputs: list[Value] = []
    if out_names:
        line.take("punct", ":")
        for index, name in enumerate(out_names):
            if index:
                line.take("punct", ",")
            role = _enum(line, Role)
            line.take("punct", "<")
            type_ = _parse_type(line)
            line.take("punct", ">")
            offset = _parse_placement(line)
            if name in values:
                raise line.error(f"value %{name} defined twice")
            value = graph.new_value(name, type_, role)
            if value.name != name:
                raise line.error(f"value %{name} defined twice")
            value.l2_offset = offset
            values[name] = value
            outputs.append(value)
    phase = _enum(line, Phase)
    node = json.loads(line.take("string"))
    opens_body = line.accept("punct", "{")
    line.end()
    op = Op(op_type, inputs, outputs, attrs, phase, node)
    if opens_body:
        op.body = _OPENS_BODY
    return op


# Marks an op whose line ends in '{': the lines up to the matching '}' are its body.
_OPENS_BODY: list[Op] = []

"""Tile loops in C: a loop's axis tables and operand boxes as data for the runtime's rt_tile_loop, and
the function that calls the kernel on one tile's L1 buffers (its parameter struct built from the
whole layer's with the tile's ranges written over it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tinyodl.backend_c.emitters import EMITTERS, EmitContext, _conv_fields, _pool_fields, emit_gemm
from tinyodl.backend_c.names import c_float, identifier
from tinyodl.ir.graph import Op, Value
from tinyodl.ir.ops.tiling import plan_of
from tinyodl.ir.registry import kernel_of, lookup
from tinyodl.ir.tiling import IN, INOUT, OUT, OperandTiling, Slice, TilePlan

_MODES = {IN: "RT_TILE_IN", OUT: "RT_TILE_OUT", INOUT: "RT_TILE_INOUT"}


@dataclass
class TileLoopCode:
    definitions: str   # C at file scope: tables, the tile kernel, the loop descriptor
    call: str          # the statement all cores execute
    l1_bytes: int


class _Tile:
    """C expressions for one tile: entry columns by axis name, operand pointers by position."""

    def __init__(self, plan: TilePlan, op: Op) -> None:
        self.plan = plan
        self.op = op

    def e(self, axis: str, column: str) -> str:
        for position, a in enumerate(self.plan.axes):
            if a.name == axis:
                return f"t->e[{position}][{a.col(column)}]"
        raise KeyError(axis)

    def has(self, axis: str) -> bool:
        return any(a.name == axis for a in self.plan.axes)

    def p(self, name: str, ctype: str = "float") -> str:
        for position, operand in enumerate(self.plan.operands):
            if operand.name == name:
                return f"(({ctype} *)t->p[{position}])"
        raise KeyError(name)

    def value(self, operand: OperandTiling) -> Value:
        return self.op.outputs[operand.index] if operand.mode == OUT else self.op.inputs[operand.index]


def _params(ctx: EmitContext, ctype: str, hint: str, fields: list, overrides: Sequence[tuple[str, str]]) -> str:  # type: ignore[type-arg]
    base = ctx.struct(ctype, hint, fields)
    lines = [f"    {ctype} p = {base};  /* the whole layer; the tile's ranges below */"]
    lines += [f"    p.{field} = {expr};" for field, expr in overrides]
    return "\n".join(lines)


def _conv_fwd(t: _Tile, op: Op, attrs: dict, ctx: EmitContext) -> str:  # type: ignore[type-arg]
    x, w = op.inputs[0], op.inputs[1]
    fields = _conv_fields(x.shape, w.shape, op.outputs[0].shape, attrs)
    over = [("N", t.e("n", "nn")), ("OH", t.e("oh", "on")), ("H", t.e("oh", "in")), ("pad_top", t.e("oh", "pt")),
            ("pad_bottom", t.e("oh", "pb")), ("K", t.e("k", "kn"))]
    over += [("C", t.e("k", "cn")), ("groups", t.e("k", "cn"))] if attrs["group"] > 1 else [("C", t.e("c", "cn"))]
    bias = f"t->first ? {t.p('b')} : NULL" if len(op.inputs) == 3 else "NULL"
    return _params(ctx, "conv2d_params_t", op.outputs[0].name, fields, over) + \
        f"\n    conv2d_fwd({t.p('x')}, {t.p('w')}, {bias}, {t.p('y')}, &p);"


def _conv_grad_input(t: _Tile, op: Op, attrs: dict, ctx: EmitContext) -> str:  # type: ignore[type-arg]
    dy, w = op.inputs
    fields = _conv_fields(attrs["input_shape"], w.shape, dy.shape, attrs)
    over = [("N", t.e("n", "nn")), ("C", t.e("c", "cn")), ("H", t.e("h", "cn")), ("OH", t.e("h", "on")),
            ("pad_top", t.e("h", "pt")), ("pad_bottom", t.e("h", "pb"))]
    over += [("K", t.e("c", "kn")), ("groups", t.e("c", "cn"))] if attrs["group"] > 1 else [("K", t.e("k", "kn"))]
    return _params(ctx, "conv2d_params_t", op.outputs[0].name, fields, over) + \
        f"\n    conv2d_grad_input({t.p('dy')}, {t.p('w')}, {t.p('dx')}, &p);"


def _conv_grad_weight(t: _Tile, op: Op, attrs: dict, ctx: EmitContext) -> str:  # type: ignore[type-arg]
    x, dy = op.inputs
    fields = _conv_fields(x.shape, op.outputs[0].shape, dy.shape, attrs)
    over = [("N", t.e("n", "nn")), ("OH", t.e("oh", "on")), ("H", t.e("oh", "in")), ("pad_top", t.e("oh", "pt")),
            ("pad_bottom", t.e("oh", "pb")), ("K", t.e("k", "kn"))]
    over += [("C", t.e("k", "cn")), ("groups", t.e("k", "cn"))] if attrs["group"] > 1 else [("C", t.e("c", "cn"))]
    return _params(ctx, "conv2d_params_t", op.outputs[0].name, fields, over) + \
        f"\n    conv2d_grad_weight({t.p('x')}, {t.p('dy')}, {t.p('dw')}, &p);"


def _gemm(t: _Tile, op: Op, attrs: dict, ctx: EmitContext) -> str:  # type: ignore[type-arg]
    emit_gemm(op, ctx)  # declares the whole product's parameters (the call itself is not needed here)
    base = ctx.decls[-1].symbol
    kind = dict(ctx.decls[-1].fields)["bias_kind"]
    bias = f"t->first ? {t.p('bias')} : NULL" if len(op.inputs) == 3 else "NULL"
    return "\n".join([
        f"    gemm_params_t p = {base};  /* the whole product; the tile's block below */",
        f"    p.M = {t.e('m', 'mn')};", f"    p.N = {t.e('n', 'nn')};", f"    p.K = {t.e('k', 'kn')};",
        f"    p.bias_kind = t->first ? {kind} : GEMM_BIAS_NONE;",
        f"    gemm({t.p('a')}, {t.p('b')}, {bias}, {t.p('y')}, &p);"])


_FLAT_CALLS: dict[str, Callable[[Sequence[str], str, dict], str]] = {  # type: ignore[type-arg]
    "add": lambda p, n, a: f"add({p[0]}, {p[1]}, {p[2]}, {n});",
    "relu": lambda p, n, a: f"relu({p[0]}, {p[1]}, {n});",
    "sigmoid": lambda p, n, a: f"sigmoid({p[0]}, {p[1]}, {n});",
    "tanh": lambda p, n, a: f"tanh_fwd({p[0]}, {p[1]}, {n});",
    "relu_grad": lambda p, n, a: f"relu_grad({p[0]}, {p[1]}, {p[2]}, {n});",
    "sigmoid_grad": lambda p, n, a: f"sigmoid_grad({p[0]}, {p[1]}, {p[2]}, {n});",
    "tanh_grad": lambda p, n, a: f"tanh_grad({p[0]}, {p[1]}, {p[2]}, {n});",
    "leaky_relu": lambda p, n, a: f"leaky_relu({p[0]}, {p[1]}, {n}, {c_float(a['alpha'])});",
    "leaky_relu_grad": lambda p, n, a: f"leaky_relu_grad({p[0]}, {p[1]}, {p[2]}, {n}, {c_float(a['alpha'])});",
    "clip": lambda p, n, a: f"clip({p[0]}, {p[1]}, {n}, {c_float(a['min'])}, {c_float(a['max'])});",
    "clip_grad": lambda p, n, a: f"clip_grad({p[0]}, {p[1]}, {p[2]}, {n}, {c_float(a['min'])}, {c_float(a['max'])});",
    "sgd_update": lambda p, n, a: (f"sgd_update({p[0]}, {p[1]}, {p[2] if len(p) == 3 else 'NULL'}, {n}, "
                                   f"{c_float(a['lr'])}, {c_float(a['momentum'])}, {c_float(a['weight_decay'])}, "
                                   f"{a['nesterov']});"),
    "adam_update": lambda p, n, a: (f"adam_update({p[0]}, {p[1]}, {p[2]}, {p[3]}, {n}, {c_float(a['lr'])}, "
                                    f"{c_float(a['beta1'])}, {c_float(a['beta2'])}, {c_float(a['eps'])}, "
                                    f"{c_float(a['weight_decay'])}, {a['decoupled']}, (int){p[4]}[0]);"),
}


def _flat(t: _Tile, op: Op, attrs: dict, ctx: EmitContext) -> str:  # type: ignore[type-arg]
    kernel = kernel_of(op.type, op.attrs)[0]
    pointers = [t.p(o.name, _ctype(t.value(o))) for o in t.plan.operands]
    return "    " + _FLAT_CALLS[kernel](pointers, t.e("i", "in"), attrs)


def _channel(t: _Tile, op: Op, attrs: dict, ctx: EmitContext) -> str:  # type: ignore[type-arg]
    kernel = kernel_of(op.type, op.attrs)[0]
    p = [t.p(o.name) for o in t.plan.operands]  # inputs (tensors and per-channel vectors), then results
    dims = f"{t.e('n', 'nn')}, {t.e('c', 'cn')}, {t.e('p', 'pn')}"
    eps = f", {c_float(attrs['epsilon'])}" if "epsilon" in attrs else ""
    name = {"batchnorm": "batchnorm_fwd", "reduce_sum": "channel_sum"}.get(kernel, kernel)
    return f"    {name}({', '.join(p)}, {dims}{eps});"


def _pool(t: _Tile, op: Op, attrs: dict, ctx: EmitContext) -> str:  # type: ignore[type-arg]
    kernel = kernel_of(op.type, op.attrs)[0]
    x, y = op.inputs[0], op.outputs[0]
    over = [("N", t.e("n", "nn")), ("C", t.e("c", "cn")), ("H", t.e("oh", "in")), ("OH", t.e("oh", "on")),
            ("pad_top", t.e("oh", "pt")), ("pad_bottom", t.e("oh", "pb"))]
    name = "maxpool2d_fwd" if kernel == "maxpool2d" else "avgpool2d_fwd"
    return _params(ctx, "pool2d_params_t", y.name, _pool_fields(x.shape, y.shape, attrs), over) + \
        f"\n    {name}({t.p('x')}, {t.p('y')}, &p);"


def _pool_grad(t: _Tile, op: Op, attrs: dict, ctx: EmitContext) -> str:  # type: ignore[type-arg]
    kernel = kernel_of(op.type, op.attrs)[0]
    dy = op.inputs[0]
    x_shape = op.inputs[1].shape if kernel == "maxpool2d_grad" else attrs["input_shape"]
    over = [("N", t.e("n", "nn")), ("C", t.e("c", "cn")), ("H", t.e("h", "cn")), ("OH", t.e("h", "on")),
            ("pad_top", t.e("h", "pt")), ("pad_bottom", t.e("h", "pb"))]
    params = _params(ctx, "pool2d_params_t", op.outputs[0].name, _pool_fields(x_shape, dy.shape, attrs), over)
    if kernel == "maxpool2d_grad":
        return params + f"\n    maxpool2d_grad({t.p('dy')}, {t.p('x')}, {t.p('dx')}, &p);"
    return params + f"\n    avgpool2d_grad({t.p('dy')}, {t.p('dx')}, &p);"


def _plane(t: _Tile, op: Op, attrs: dict, ctx: EmitContext) -> str:  # type: ignore[type-arg]
    kernel = kernel_of(op.type, op.attrs)[0]
    big = op.inputs[0] if kernel == "global_avgpool" else op.outputs[0]
    plane = big.shape[2] * big.shape[3]
    name = "global_avgpool_fwd" if kernel == "global_avgpool" else "global_avgpool_grad"
    return f"    {name}({t.p('in0')}, {t.p('out0')}, {t.e('n', 'nn')}, {t.e('c', 'cn')}, {plane});"


def _whole(t: _Tile, op: Op, attrs: dict, ctx: EmitContext) -> str:  # type: ignore[type-arg]
    """The untiled emitter's call on L1 copies of every operand (same shapes, so the same call)."""
    kernel = kernel_of(op.type, op.attrs)[0]
    names: dict[Value, str] = {}
    lines = []
    for position, operand in enumerate(t.plan.operands):
        value = t.value(operand)
        names[value] = f"t{position}"
        lines.append(f"    {_ctype(value)} *t{position} = t->p[{position}];")
    inner = Op(kernel, op.inputs, op.outputs, attrs, op.phase, op.node)
    sub = EmitContext(ctx.symbols, lambda v: names[v])
    code = EMITTERS[kernel](inner, sub)
    ctx.decls.extend(sub.decls)
    return "\n".join(lines + [f"    {code}"])


def _ctype(value: Value) -> str:
    return "float" if value.dtype.is_float else "int"


_FAMILIES = {"conv_fwd": _conv_fwd, "conv_grad_input": _conv_grad_input, "conv_grad_weight": _conv_grad_weight,
             "gemm": _gemm, "flat": _flat, "channel": _channel, "pool": _pool, "pool_grad": _pool_grad,
             "plane": _plane, "whole": _whole}


def _dims(plan: TilePlan, box: tuple[Slice | None, ...]) -> str:
    parts = []
    for s in box:
        if s is None:
            parts.append("{-1, 0, 0}")
        else:
            axis = plan.axes[s.axis]
            parts.append(f"{{{s.axis}, {axis.col(s.start)}, {axis.col(s.size)}}}")
    return "{" + ", ".join(parts) + "}"


def emit_tile_loop(op: Op, ctx: EmitContext, buffer_of: Callable[[Value], str], title: str) -> TileLoopCode:
    """The definitions and the call of one tile loop; `title` names the layer in comments."""
    plan = plan_of(op)
    kernel, attrs = kernel_of(op.type, op.attrs)
    attrs = lookup(kernel).with_defaults(attrs)
    stem = ctx.symbols.stem(op.outputs[0].name if op.outputs else op.inputs[0].name)
    loop, entries, axes, operands, run = (identifier(kind, stem)
                                          for kind in ("tl", "tlent", "tlaxes", "tlops", "tlrun"))
    tile = _Tile(plan, op)
    body = _FAMILIES[plan.family](tile, op, attrs, ctx)
    lines = [f"/* {title}: {kernel} in {plan.tiles} tile(s) of "
             f"{' x '.join(f'{a.name} {a.tile}/{a.extent}' for a in plan.axes) or 'whole tensors'} "
             f"({plan.family}), {plan.l1_bytes()} B of L1 */"]
    if plan.axes:  # every axis's entries in one table, each axis at its offset
        lines.append(f"static const int {entries}[] = {{")
        offsets, offset = [], 0
        for axis in plan.axes:
            offsets.append(offset)
            offset += sum(len(entry) for entry in axis.entries)
            values = ", ".join(str(v) for entry in axis.entries for v in entry)
            lines.append(f"    {values},  /* {axis.name}: {', '.join(axis.columns)} */")
        lines.append("};")
        lines.append(f"static const rt_tile_axis_t {axes}[] = {{")
        lines += [f"    {{ {entries} + {offset}, {len(a.entries)}, {len(a.columns)}, {int(a.reduction)} }},"
                  for offset, a in zip(offsets, plan.axes, strict=True)]
        lines.append("};")
    lines.append(f"static const rt_tile_operand_t {operands}[] = {{")
    for operand, slots, scratch in plan.l1_layout():
        store = operand.store if operand.store is not None else operand.box
        mask = sum(1 << a for a in operand.axes())
        slot_pair = (slots[0], slots[-1])
        lines.append(f"    {{ {{{', '.join(str(d) for d in operand.view)}}}, {_dims(plan, operand.box)}, "
                     f"{_dims(plan, store)}, {{{slot_pair[0]}, {slot_pair[1]}}}, {scratch}, "
                     f"{_MODES[operand.mode]}, {mask} }},  /* {operand.name} */")
    lines.append("};")
    lines.append(f"static void {run}(const rt_tile_t *t)")
    lines.append("{")
    lines.append(body)
    lines.append("}")
    lines.append(f"static const rt_tile_loop_t {loop} = {{ {len(plan.axes)}, {len(plan.operands)}, "
                 f"{axes if plan.axes else 'NULL'}, {operands}, {run} }};")
    l2 = ", ".join(f"(void *){buffer_of(tile.value(o))}" for o in plan.operands)
    call = f"{{ void *const l2[] = {{ {l2} }}; rt_tile_loop(&{loop}, l2, tinyodl_l1); }}"
    return TileLoopCode("\n".join(lines) + "\n", call, plan.l1_bytes())

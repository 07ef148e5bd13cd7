"""One emitter per op family: an IR op becomes a kernel call with its parameter struct.

Every emitter receives the op and an `EmitContext` that names buffers, and returns the C statement all
cores execute. Kernel prototypes are in kernels/tinyodl_kernels.h.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tinyodl.backend_c.names import SymbolTable, c_float
from tinyodl.backend_c.program import StructDecl
from tinyodl.ir.graph import Op, Value


class BackendError(Exception):
    """The IR holds something the C backend cannot emit; names the op."""


class EmitContext:
    def __init__(self, symbols: SymbolTable, buffer_of: Callable[[Value], str]) -> None:
        self.symbols = symbols
        self.buf = buffer_of
        self.decls: list[StructDecl] = []

    def struct(self, ctype: str, hint: str, fields: Sequence[tuple[str, object]]) -> str:
        symbol = self.symbols.make("k", hint)
        self.decls.append(StructDecl(ctype, symbol, [(name, _c(value)) for name, value in fields]))
        return symbol

    def ints(self, hint: str, values: Sequence[int]) -> str:
        symbol = self.symbols.make("k", hint)
        self.decls.append(StructDecl("int", symbol + "[4]", [("", ", ".join(str(int(v)) for v in values))]))
        return symbol


def _c(value: object) -> str:
    if isinstance(value, float):
        return c_float(value)
    return str(value)


def _plane(shape: Sequence[int]) -> int:
    return int(np.prod(shape[2:])) if len(shape) > 2 else 1


# -- convolution --------------------------------------------------------------------------------
def _conv_fields(x_shape: Sequence[int], w_shape: Sequence[int], y_shape: Sequence[int], attrs: dict) -> list:
    n, c, h, w = x_shape
    top, left, bottom, right = attrs["pads"]
    return [("N", n), ("C", c), ("H", h), ("W", w), ("K", w_shape[0]), ("KH", w_shape[2]), ("KW", w_shape[3]),
            ("OH", y_shape[2]), ("OW", y_shape[3]), ("stride_h", attrs["strides"][0]),
            ("stride_w", attrs["strides"][1]), ("pad_top", top), ("pad_left", left), ("pad_bottom", bottom),
            ("pad_right", right), ("groups", attrs["group"])]


def emit_conv(op: Op, ctx: EmitContext) -> str:
    a = op.attrs
    if op.type == "conv2d":
        x, w = op.inputs[0], op.inputs[1]
        p = ctx.struct("conv2d_params_t", op.outputs[0].name, _conv_fields(x.shape, w.shape, op.outputs[0].shape, a))
        bias = ctx.buf(op.inputs[2]) if len(op.inputs) == 3 else "NULL"
        return f"conv2d_fwd({ctx.buf(x)}, {ctx.buf(w)}, {bias}, {ctx.buf(op.outputs[0])}, &{p});"
    if op.type == "conv2d_grad_input":
        dy, w = op.inputs
        p = ctx.struct("conv2d_params_t", op.outputs[0].name, _conv_fields(a["input_shape"], w.shape, dy.shape, a))
        return f"conv2d_grad_input({ctx.buf(dy)}, {ctx.buf(w)}, {ctx.buf(op.outputs[0])}, &{p});"
    x, dy = op.inputs
    p = ctx.struct("conv2d_params_t", op.outputs[0].name, _conv_fields(x.shape, op.outputs[0].shape, dy.shape, a))
    return f"conv2d_grad_weight({ctx.buf(x)}, {ctx.buf(dy)}, {ctx.buf(op.outputs[0])}, &{p});"


# -- matrix product -----------------------------------------------------------------------------
def emit_gemm(op: Op, ctx: EmitContext) -> str:
    a = op.attrs
    a_shape = op.inputs[0].shape
    m, n = op.outputs[0].shape
    k = a_shape[0] if a["trans_a"] else a_shape[1]
    kind, bias = "GEMM_BIAS_NONE", "NULL"
    if len(op.inputs) == 3:
        c_shape = tuple(op.inputs[2].shape)
        bias = ctx.buf(op.inputs[2])
        if int(np.prod(c_shape)) == 1:
            kind = "GEMM_BIAS_SCALAR"
        elif c_shape in ((n,), (1, n)):
            kind = "GEMM_BIAS_COL"
        elif c_shape == (m, 1):
            kind = "GEMM_BIAS_ROW"
        else:
            kind = "GEMM_BIAS_FULL"
    p = ctx.struct("gemm_params_t", op.outputs[0].name, [
        ("M", m), ("N", n), ("K", k), ("trans_a", a["trans_a"]), ("trans_b", a["trans_b"]),
        ("alpha", float(a["alpha"])), ("beta", float(a["beta"])), ("bias_kind", kind),
        ("lda", 0), ("ldb", 0), ("ldy", 0)])
    return f"gemm({ctx.buf(op.inputs[0])}, {ctx.buf(op.inputs[1])}, {bias}, {ctx.buf(op.outputs[0])}, &{p});"


# -- element-wise -------------------------------------------------------------------------------
_UNARY = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh_fwd"}
_BINARY_GRAD = {"relu_grad": "relu_grad", "sigmoid_grad": "sigmoid_grad", "tanh_grad": "tanh_grad"}


def _strides4(shape: Sequence[int], out_shape: Sequence[int]) -> list[int]:
    """Element strides of `shape` broadcast against the 4-D padded `out_shape` (0 where broadcast)."""
    padded = [1] * (4 - len(shape)) + list(shape)
    strides, running = [0] * 4, 1
    for axis in range(3, -1, -1):
        strides[axis] = 0 if padded[axis] == 1 and out_shape[axis] != 1 else running
        running *= padded[axis]
    return strides


def emit_elementwise(op: Op, ctx: EmitContext) -> str:
    out = op.outputs[0]
    n = out.type.numel
    names = [ctx.buf(v) for v in op.inputs]
    y = ctx.buf(out)
    if op.type == "add":
        if all(v.shape == out.shape for v in op.inputs):
            return f"add({names[0]}, {names[1]}, {y}, {n});"
        if len(out.shape) > 4:
            raise BackendError(f"add of rank {len(out.shape)} > 4")
        shape4 = [1] * (4 - len(out.shape)) + list(out.shape)
        shape = ctx.ints(f"{out.name}_shape", shape4)
        sa = ctx.ints(f"{out.name}_a_strides", _strides4(op.inputs[0].shape, shape4))
        sb = ctx.ints(f"{out.name}_b_strides", _strides4(op.inputs[1].shape, shape4))
        return f"add_broadcast({names[0]}, {names[1]}, {y}, {shape}, {sa}, {sb});"
    if op.type in _UNARY:
        return f"{_UNARY[op.type]}({names[0]}, {y}, {n});"
    if op.type in _BINARY_GRAD:
        return f"{_BINARY_GRAD[op.type]}({names[0]}, {names[1]}, {y}, {n});"
    if op.type == "leaky_relu":
        return f"leaky_relu({names[0]}, {y}, {n}, {c_float(op.attrs['alpha'])});"
    if op.type == "leaky_relu_grad":
        return f"leaky_relu_grad({names[0]}, {names[1]}, {y}, {n}, {c_float(op.attrs['alpha'])});"
    if op.type == "clip":
        return f"clip({names[0]}, {y}, {n}, {c_float(op.attrs['min'])}, {c_float(op.attrs['max'])});"
    if op.type == "clip_grad":
        return f"clip_grad({names[0]}, {names[1]}, {y}, {n}, {c_float(op.attrs['min'])}, {c_float(op.attrs['max'])});"
    shape = op.inputs[0].shape
    axis = op.attrs["axis"] % len(shape)
    outer, length, inner = int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:]))
    if inner == 1:
        if op.type == "softmax":
            return f"softmax_fwd({names[0]}, {y}, {outer}, {length});"
        return f"softmax_grad({names[0]}, {names[1]}, {y}, {outer}, {length});"
    if op.type == "softmax":
        return f"softmax_axis_fwd({names[0]}, {y}, {outer}, {length}, {inner});"
    return f"softmax_axis_grad({names[0]}, {names[1]}, {y}, {outer}, {length}, {inner});"


# -- reductions and broadcasts (reshape is an alias and emits nothing) ---------------------------
def emit_shape(op: Op, ctx: EmitContext) -> str:
    x, y = op.inputs[0], op.outputs[0]
    if op.type == "broadcast":
        scale = float(op.attrs["scale"])
        if len(x.shape) == 4 and x.shape[2:] == (1, 1) and x.shape[:2] == y.shape[:2] and \
                np.float32(scale) == np.float32(1.0 / _plane(y.shape)):
            return f"global_avgpool_grad({ctx.buf(x)}, {ctx.buf(y)}, {y.shape[0]}, {y.shape[1]}, {_plane(y.shape)});"
        if len(y.shape) > 4:
            raise BackendError(f"broadcast of rank {len(y.shape)} > 4")
        shape4 = [1] * (4 - len(y.shape)) + list(y.shape)
        shape = ctx.ints(f"{y.name}_shape", shape4)
        strides = ctx.ints(f"{y.name}_x_strides", _strides4(x.shape, shape4))
        return f"broadcast_nd({ctx.buf(x)}, {ctx.buf(y)}, {shape}, {strides}, {c_float(scale)});"
    # reduce_sum
    axes = tuple(sorted(op.attrs["axes"]))
    scale = float(op.attrs["scale"])
    rank = len(x.shape)
    if rank == 4 and axes == (0, 2, 3) and scale == 1.0:
        return f"channel_sum({ctx.buf(x)}, {ctx.buf(y)}, {x.shape[0]}, {x.shape[1]}, {_plane(x.shape)});"
    lead = axes == tuple(range(len(axes)))
    trail = axes == tuple(range(rank - len(axes), rank))
    outer = int(np.prod([d for i, d in enumerate(x.shape) if i in axes]))
    if lead:
        return f"col_sum({ctx.buf(x)}, {ctx.buf(y)}, {outer}, {x.type.numel // outer}, {c_float(scale)});"
    if trail:
        return f"row_sum({ctx.buf(x)}, {ctx.buf(y)}, {x.type.numel // outer}, {outer}, {c_float(scale)});"
    if rank > 4:
        raise BackendError(f"reduce_sum over axes {list(axes)} of a rank-{rank} tensor (at most 4)")
    shape4 = [1] * (4 - rank) + list(x.shape)
    mask = [0] * (4 - rank) + [int(i in axes) for i in range(rank)]
    shape = ctx.ints(f"{y.name}_shape", shape4)
    reduce = ctx.ints(f"{y.name}_reduce", mask)
    return f"reduce_sum_nd({ctx.buf(x)}, {ctx.buf(y)}, {shape}, {reduce}, {c_float(scale)});"


# -- pooling ------------------------------------------------------------------------------------
def _pool_fields(x_shape: Sequence[int], y_shape: Sequence[int], attrs: dict) -> list:
    n, c, h, w = x_shape
    top, left, bottom, right = attrs["pads"]
    return [("N", n), ("C", c), ("H", h), ("W", w), ("OH", y_shape[2]), ("OW", y_shape[3]),
            ("KH", attrs["kernel"][0]), ("KW", attrs["kernel"][1]), ("stride_h", attrs["strides"][0]),
            ("stride_w", attrs["strides"][1]), ("pad_top", top), ("pad_left", left), ("pad_bottom", bottom),
            ("pad_right", right), ("count_include_pad", attrs.get("count_include_pad", 0))]


def emit_pool(op: Op, ctx: EmitContext) -> str:
    x, y = op.inputs[0], op.outputs[0]
    if op.type == "global_avgpool":
        return f"global_avgpool_fwd({ctx.buf(x)}, {ctx.buf(y)}, {x.shape[0]}, {x.shape[1]}, {_plane(x.shape)});"
    if op.type in ("maxpool2d", "avgpool2d"):
        p = ctx.struct("pool2d_params_t", y.name, _pool_fields(x.shape, y.shape, op.attrs))
        kernel = "maxpool2d_fwd" if op.type == "maxpool2d" else "avgpool2d_fwd"
        return f"{kernel}({ctx.buf(x)}, {ctx.buf(y)}, &{p});"
    if op.type == "maxpool2d_grad":
        dy, x = op.inputs
        p = ctx.struct("pool2d_params_t", y.name, _pool_fields(x.shape, dy.shape, op.attrs))
        return f"maxpool2d_grad({ctx.buf(dy)}, {ctx.buf(x)}, {ctx.buf(y)}, &{p});"
    dy = op.inputs[0]
    p = ctx.struct("pool2d_params_t", y.name, _pool_fields(op.attrs["input_shape"], dy.shape, op.attrs))
    return f"avgpool2d_grad({ctx.buf(dy)}, {ctx.buf(y)}, &{p});"


# -- batch norm ---------------------------------------------------------------------------------
def emit_norm(op: Op, ctx: EmitContext) -> str:
    eps = c_float(op.attrs["epsilon"])
    x = op.inputs[0]
    dims = f"{x.shape[0]}, {x.shape[1]}, {_plane(x.shape)}, {eps}"
    b = [ctx.buf(v) for v in op.inputs]
    if op.type == "batchnorm":
        return f"batchnorm_fwd({b[0]}, {b[1]}, {b[2]}, {b[3]}, {b[4]}, {ctx.buf(op.outputs[0])}, {dims});"
    if op.type == "batchnorm_grad_input":
        return f"batchnorm_grad_input({b[0]}, {b[1]}, {b[2]}, {ctx.buf(op.outputs[0])}, {dims});"
    return (f"batchnorm_grad_params({b[0]}, {b[1]}, {b[2]}, {b[3]}, {ctx.buf(op.outputs[0])}, "
            f"{ctx.buf(op.outputs[1])}, {dims});")


# -- losses -------------------------------------------------------------------------------------
def emit_loss(op: Op, ctx: EmitContext) -> str:
    a, b = (ctx.buf(v) for v in op.inputs)
    y = ctx.buf(op.outputs[0])
    if op.type.startswith("softmax_cross_entropy"):
        rows, classes = op.inputs[0].shape
        return f"{op.type}({a}, {b}, {y}, {rows}, {classes});"
    return f"{op.type}({a}, {b}, {y}, {op.inputs[0].type.numel});"


# -- optimizers ---------------------------------------------------------------------------------
def emit_optim(op: Op, ctx: EmitContext) -> str:
    a = op.attrs
    b = [ctx.buf(v) for v in op.inputs]
    n = op.inputs[0].type.numel
    if op.type == "step_increment":
        return f"if (rt_core_id() == 0) {b[0]}[0] += 1;"
    if op.type == "sgd_update":
        buf = b[2] if len(b) == 3 else "NULL"
        return (f"sgd_update({b[0]}, {b[1]}, {buf}, {n}, {c_float(a['lr'])}, {c_float(a['momentum'])}, "
                f"{c_float(a['weight_decay'])}, {a['nesterov']});")
    return (f"adam_update({b[0]}, {b[1]}, {b[2]}, {b[3]}, {n}, {c_float(a['lr'])}, {c_float(a['beta1'])}, "
            f"{c_float(a['beta2'])}, {c_float(a['eps'])}, {c_float(a['weight_decay'])}, {a['decoupled']}, "
            f"{b[4]}[0]);")


EMITTERS: dict[str, Callable[[Op, EmitContext], str]] = {}
for _family, _ops in [
    (emit_conv, ["conv2d", "conv2d_grad_input", "conv2d_grad_weight"]),
    (emit_gemm, ["gemm"]),
    (emit_elementwise, ["add", "relu", "relu_grad", "leaky_relu", "leaky_relu_grad", "sigmoid", "sigmoid_grad",
                        "tanh", "tanh_grad", "clip", "clip_grad", "softmax", "softmax_grad"]),
    (emit_shape, ["broadcast", "reduce_sum"]),
    (emit_pool, ["maxpool2d", "maxpool2d_grad", "avgpool2d", "avgpool2d_grad", "global_avgpool"]),
    (emit_norm, ["batchnorm", "batchnorm_grad_input", "batchnorm_grad_params"]),
    (emit_loss, ["softmax_cross_entropy", "softmax_cross_entropy_grad", "mse_loss", "mse_loss_grad"]),
    (emit_optim, ["sgd_update", "adam_update", "step_increment"]),
]:
    for _name in _ops:
        EMITTERS[_name] = _family

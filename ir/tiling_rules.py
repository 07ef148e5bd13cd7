"""The tiling rule of each kernel family: its axes, the axis tables for given tile sizes, the operands'
boxes, and the numpy execution of one tile (the kernel's reference on the tile's sub-problem).

Axis entries always start with (start, size) of the axis's own range; window ops add the band of input
rows a band of output rows reads and the zero padding that band really has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tinyodl.ir.registry import evaluate, lookup, written_positions
from tinyodl.ir.tiling import (
    IN,
    INOUT,
    OUT,
    Axis,
    Family,
    OperandTiling,
    Slice,
    TilePlan,
    _axis,
    _bands,
    _blocks,
    _e,
    _grad_band,
    _has,
    _v4,
)
from tinyodl.ir.types import TensorType

Sizes = Mapping[str, int]
Attrs = Mapping[str, Any]


def _reference(kernel: str, inputs: Sequence[np.ndarray], attrs: Attrs) -> list[np.ndarray]:
    return evaluate(kernel, inputs, attrs)


# -- convolution ------------------------------------------------------------------------------------
def _conv_geometry(attrs: Attrs) -> tuple[int, int, int, int, int, int]:
    (sh, sw), (top, left, bottom, right) = attrs["strides"], attrs["pads"]
    return sh, sw, top, left, bottom, right


def _channel_axis(name: str, channels: int, size: int, depthwise: bool, mult: int, reduction: bool = False
                  ) -> Axis:
    """Blocks of output channels; depthwise blocks also name their input channels (c0, cn)."""
    if depthwise:
        blocks = _blocks(channels, size, mult)
        return _axis(name, channels, size, ("k0", "kn", "c0", "cn"),
                     [(k0, kn, k0 // mult, kn // mult) for k0, kn in blocks], reduction)
    return _axis(name, channels, size, ("k0", "kn"), _blocks(channels, size), reduction)


def _conv_fwd_axes(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs
                   ) -> list[tuple[str, int, int]]:
    n, c = ins[0].shape[:2]
    k = ins[1].shape[0]
    depthwise = attrs["group"] > 1
    axes = [("n", n, 1), ("oh", outs[0].shape[2], 1), ("k", k, k // attrs["group"] if depthwise else 1)]
    if not depthwise:
        axes.append(("c", c, 1))
    return axes


def _conv_fwd_build(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs,
                    sizes: Sizes) -> tuple[list[Axis], list[OperandTiling]]:
    n, c, h, _ = ins[0].shape
    k, _, kh, _ = ins[1].shape
    oh = outs[0].shape[2]
    sh, _, top, _, _, _ = _conv_geometry(attrs)
    depthwise = attrs["group"] > 1
    axes = [_axis("n", n, sizes["n"], ("n0", "nn"), _blocks(n, sizes["n"])),
            _axis("oh", oh, sizes["oh"], ("o0", "on", "i0", "in", "pt", "pb"),
                  _bands(oh, sizes["oh"], h, kh, sh, top)),
            _channel_axis("k", k, sizes["k"], depthwise, k // attrs["group"])]
    if not depthwise:
        axes.append(_axis("c", c, sizes["c"], ("c0", "cn"), _blocks(c, sizes["c"]), reduction=True))
    n_ = Slice(0, "n0", "nn")
    k_ = Slice(2, "k0", "kn")
    c_ = Slice(2, "c0", "cn") if depthwise else Slice(3, "c0", "cn")
    operands = [
        OperandTiling("x", IN, 0, ins[0].shape, (n_, c_, Slice(1, "i0", "in"), None)),
        OperandTiling("w", IN, 1, ins[1].shape, (k_, None if depthwise else c_, None, None)),
    ]
    if len(ins) == 3:
        operands.append(OperandTiling("b", IN, 2, _v4(ins[2].shape), (None, None, None, k_)))
    operands.append(OperandTiling("y", OUT, 0, outs[0].shape, (n_, k_, Slice(1, "o0", "on"), None)))
    return axes, operands


def _conv_pads(plan: TilePlan, entries: Sequence[tuple[int, ...]], axis: str, top: str, bottom: str
               ) -> tuple[int, int, int, int]:
    _, left, _, right = plan.attrs["pads"]
    return (_e(plan, entries, axis, top), left, _e(plan, entries, axis, bottom), right)


def _tile_group(plan: TilePlan, entries: Sequence[tuple[int, ...]], axis: str) -> int:
    return _e(plan, entries, axis, "cn") if plan.attrs["group"] > 1 else 1


def _conv_fwd_run(plan: TilePlan, entries: Sequence[tuple[int, ...]], arrays: list[np.ndarray]) -> list[np.ndarray]:
    attrs = {**plan.attrs, "pads": _conv_pads(plan, entries, "oh", "pt", "pb"),
             "group": _tile_group(plan, entries, "k")}
    first_c = not _has(plan, "c") or _e(plan, entries, "c", "c0") == 0
    inputs = [arrays[0], arrays[1]]
    if len(arrays) == 3 and first_c:
        inputs.append(arrays[2].reshape(-1))
    return _reference("conv2d", inputs, attrs)


def _grad_input_axes(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs
                     ) -> list[tuple[str, int, int]]:
    n, c, h, _ = outs[0].shape
    depthwise = attrs["group"] > 1
    axes = [("n", n, 1), ("h", h, 1), ("c", c, 1)]
    if not depthwise:
        axes.append(("k", ins[0].shape[1], 1))
    return axes


def _grad_input_build(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs,
                      sizes: Sizes) -> tuple[list[Axis], list[OperandTiling]]:
    n, c, h, _ = outs[0].shape
    k, _, kh, _ = ins[1].shape
    oh = ins[0].shape[2]
    sh, _, top, _, _, _ = _conv_geometry(attrs)
    depthwise = attrs["group"] > 1
    mult = k // attrs["group"]
    if depthwise:  # blocks of input channels, with the output channels they feed
        channel = _axis("c", c, sizes["c"], ("c0", "cn", "k0", "kn"),
                        [(c0, cn, c0 * mult, cn * mult) for c0, cn in _blocks(c, sizes["c"])])
    else:
        channel = _axis("c", c, sizes["c"], ("c0", "cn"), _blocks(c, sizes["c"]))
    axes = [_axis("n", n, sizes["n"], ("n0", "nn"), _blocks(n, sizes["n"])),
            _axis("h", h, sizes["h"], ("h0", "hn", "ca", "cn", "oa", "on", "pt", "pb"),
                  [_grad_band(h0, hn, h, oh, kh, sh, top) for h0, hn in _blocks(h, sizes["h"])]),
            channel]
    n_, c_ = Slice(0, "n0", "nn"), Slice(2, "c0", "cn")
    k_ = Slice(2, "k0", "kn") if depthwise else Slice(3, "k0", "kn")
    if not depthwise:
        axes.append(_axis("k", k, sizes["k"], ("k0", "kn"), _blocks(k, sizes["k"]), reduction=True))
    operands = [
        OperandTiling("dy", IN, 0, ins[0].shape, (n_, k_, Slice(1, "oa", "on"), None)),
        OperandTiling("w", IN, 1, ins[1].shape, (k_, None if depthwise else c_, None, None)),
        OperandTiling("dx", OUT, 0, outs[0].shape, (n_, c_, Slice(1, "ca", "cn"), None),
                      store=(n_, c_, Slice(1, "h0", "hn"), None)),
    ]
    return axes, operands


def _grad_input_run(plan: TilePlan, entries: Sequence[tuple[int, ...]], arrays: list[np.ndarray]
                    ) -> list[np.ndarray]:
    dy, w = arrays
    shape = (dy.shape[0], _e(plan, entries, "c", "cn"), _e(plan, entries, "h", "cn"), plan.attrs["input_shape"][3])
    attrs = {**plan.attrs, "pads": _conv_pads(plan, entries, "h", "pt", "pb"), "input_shape": shape,
             "group": _tile_group(plan, entries, "c")}
    return _reference("conv2d_grad_input", [dy, w], attrs)


def _grad_weight_axes(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs
                      ) -> list[tuple[str, int, int]]:
    depthwise = attrs["group"] > 1
    k = outs[0].shape[0]
    axes = [("k", k, k // attrs["group"] if depthwise else 1)]
    if not depthwise:
        axes.append(("c", ins[0].shape[1], 1))
    return axes + [("n", ins[0].shape[0], 1), ("oh", ins[1].shape[2], 1)]


def _grad_weight_build(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs,
                       sizes: Sizes) -> tuple[list[Axis], list[OperandTiling]]:
    n, c, h, _ = ins[0].shape
    k, _, kh, _ = outs[0].shape
    oh = ins[1].shape[2]
    sh, _, top, _, _, _ = _conv_geometry(attrs)
    depthwise = attrs["group"] > 1
    axes = [_channel_axis("k", k, sizes["k"], depthwise, k // attrs["group"])]
    if not depthwise:
        axes.append(_axis("c", c, sizes["c"], ("c0", "cn"), _blocks(c, sizes["c"])))
    r = len(axes)
    axes.append(_axis("n", n, sizes["n"], ("n0", "nn"), _blocks(n, sizes["n"]), reduction=True))
    axes.append(_axis("oh", oh, sizes["oh"], ("o0", "on", "i0", "in", "pt", "pb"),
                      _bands(oh, sizes["oh"], h, kh, sh, top), reduction=True))
    n_, k_ = Slice(r, "n0", "nn"), Slice(0, "k0", "kn")
    c_ = Slice(0, "c0", "cn") if depthwise else Slice(1, "c0", "cn")
    operands = [
        OperandTiling("x", IN, 0, ins[0].shape, (n_, c_, Slice(r + 1, "i0", "in"), None)),
        OperandTiling("dy", IN, 1, ins[1].shape, (n_, k_, Slice(r + 1, "o0", "on"), None)),
        OperandTiling("dw", OUT, 0, outs[0].shape, (k_, None if depthwise else c_, None, None)),
    ]
    return axes, operands


def _grad_weight_run(plan: TilePlan, entries: Sequence[tuple[int, ...]], arrays: list[np.ndarray]
                     ) -> list[np.ndarray]:
    attrs = {**plan.attrs, "pads": _conv_pads(plan, entries, "oh", "pt", "pb"),
             "group": _tile_group(plan, entries, "k")}
    return _reference("conv2d_grad_weight", arrays, attrs)


# -- matrix product ---------------------------------------------------------------------------------
def _gemm_dims(ins: Sequence[TensorType], attrs: Attrs) -> tuple[int, int, int]:
    a_shape, b_shape = ins[0].shape, ins[1].shape
    m, k = (a_shape[1], a_shape[0]) if attrs["trans_a"] else a_shape
    n = b_shape[0] if attrs["trans_b"] else b_shape[1]
    return m, n, k


def _gemm_axes(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs
               ) -> list[tuple[str, int, int]]:
    m, n, k = _gemm_dims(ins, attrs)
    return [("m", m, 1), ("n", n, 1), ("k", k, 1)]


def _gemm_build(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs, sizes: Sizes
                ) -> tuple[list[Axis], list[OperandTiling]]:
    m, n, k = _gemm_dims(ins, attrs)
    axes = [_axis("m", m, sizes["m"], ("m0", "mn"), _blocks(m, sizes["m"])),
            _axis("n", n, sizes["n"], ("n0", "nn"), _blocks(n, sizes["n"])),
            _axis("k", k, sizes["k"], ("k0", "kn"), _blocks(k, sizes["k"]), reduction=True)]
    m_, n_, k_ = Slice(0, "m0", "mn"), Slice(1, "n0", "nn"), Slice(2, "k0", "kn")
    a_box = (None, None, k_, m_) if attrs["trans_a"] else (None, None, m_, k_)
    b_box = (None, None, n_, k_) if attrs["trans_b"] else (None, None, k_, n_)
    operands = [OperandTiling("a", IN, 0, _v4(ins[0].shape), a_box),
                OperandTiling("b", IN, 1, _v4(ins[1].shape), b_box)]
    if len(ins) == 3:
        c_shape = tuple(ins[2].shape)
        if int(np.prod(c_shape)) == 1:
            box: tuple[Slice | None, ...] = (None, None, None, None)
        elif c_shape in ((n,), (1, n)):
            box = (None, None, None, n_)
        elif c_shape == (m, 1):
            box = (None, None, m_, None)
        else:
            box = (None, None, m_, n_)
        operands.append(OperandTiling("bias", IN, 2, _v4(c_shape), box, shape=c_shape))
    operands.append(OperandTiling("y", OUT, 0, _v4(outs[0].shape), (None, None, m_, n_)))
    return axes, operands


def _gemm_run(plan: TilePlan, entries: Sequence[tuple[int, ...]], arrays: list[np.ndarray]) -> list[np.ndarray]:
    a, b = arrays[0].reshape(arrays[0].shape[2:]), arrays[1].reshape(arrays[1].shape[2:])
    inputs = [a, b]
    if len(arrays) == 3 and _e(plan, entries, "k", "k0") == 0:
        inputs.append(_unview(arrays[2], plan.operands[2]))
    return _reference("gemm", inputs, plan.attrs)


# -- element-wise over flat chunks ----------------------------------------------------------------------
FLAT_KERNELS = ("add", "relu", "relu_grad", "leaky_relu", "leaky_relu_grad", "sigmoid", "sigmoid_grad", "tanh",
                "tanh_grad", "clip", "clip_grad", "sgd_update", "adam_update", "cast", "amp_scale")


def _flat_length(ins: Sequence[TensorType]) -> int:
    return ins[0].numel


def _flat_axes(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs
               ) -> list[tuple[str, int, int]]:
    return [("i", _flat_length(ins), 1)]


def _flat_build(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs, sizes: Sizes
                ) -> tuple[list[Axis], list[OperandTiling]]:
    length = _flat_length(ins)
    axes = [_axis("i", length, sizes["i"], ("i0", "in"), _blocks(length, sizes["i"]))]
    chunk = (None, None, None, Slice(0, "i0", "in"))
    mutated = written_positions(lookup(kernel), attrs, len(ins))
    operands = []
    for index, t in enumerate(ins):
        box = chunk if t.numel == length else (None, None, None, None)  # adam's step counter is whole
        operands.append(OperandTiling(f"in{index}", INOUT if index in mutated else IN, index,
                                      (1, 1, 1, t.numel), box))
    for index, t in enumerate(outs):
        operands.append(OperandTiling(f"out{index}", OUT, index, (1, 1, 1, t.numel), chunk))
    return axes, operands


def _flat_run(plan: TilePlan, entries: Sequence[tuple[int, ...]], arrays: list[np.ndarray]) -> list[np.ndarray]:
    return _reference(plan.kernel, [a.reshape(-1) for a in arrays], plan.attrs)


# -- per-channel maps and reductions over [N, C, plane] ---------------------------------------------
CHANNEL_KERNELS = ("batchnorm", "batchnorm_grad_input", "batchnorm_grad_params", "reduce_sum")


def _is_channel_sum(kernel: str, ins: Sequence[TensorType], attrs: Attrs) -> bool:
    return kernel != "reduce_sum" or (len(ins[0].shape) == 4 and tuple(sorted(attrs["axes"])) == (0, 2, 3)
                                      and attrs["scale"] == 1.0)


def _ncp(t: TensorType) -> tuple[int, int, int]:
    return t.shape[0], t.shape[1], int(np.prod(t.shape[2:]))


def _channel_axes(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs
                  ) -> list[tuple[str, int, int]]:
    n, c, p = _ncp(ins[0])
    return [("c", c, 1), ("n", n, 1), ("p", p, 1)]


def _channel_build(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs,
                   sizes: Sizes) -> tuple[list[Axis], list[OperandTiling]]:
    n, c, p = _ncp(ins[0])
    reduces = kernel in ("batchnorm_grad_params", "reduce_sum")
    axes = [_axis("c", c, sizes["c"], ("c0", "cn"), _blocks(c, sizes["c"])),
            _axis("n", n, sizes["n"], ("n0", "nn"), _blocks(n, sizes["n"]), reduction=reduces),
            _axis("p", p, sizes["p"], ("p0", "pn"), _blocks(p, sizes["p"]), reduction=reduces)]
    c_, n_, p_ = Slice(0, "c0", "cn"), Slice(1, "n0", "nn"), Slice(2, "p0", "pn")
    tensor_box = (None, n_, c_, p_)
    vector_box = (None, None, None, c_)
    operands = []
    for index, t in enumerate(ins):
        per_channel = t.shape == (c,)
        view = (1, 1, 1, c) if per_channel else (1, n, c, p)
        operands.append(OperandTiling(f"vec{index}" if per_channel else f"in{index}", IN, index, view,
                                      vector_box if per_channel else tensor_box))
    for index in range(len(outs)):  # per-channel sums, or a map of the whole tensor
        view = (1, 1, 1, c) if reduces else (1, n, c, p)
        operands.append(OperandTiling(f"out{index}", OUT, index, view, vector_box if reduces else tensor_box))
    return axes, operands


def _channel_run(plan: TilePlan, entries: Sequence[tuple[int, ...]], arrays: list[np.ndarray]) -> list[np.ndarray]:
    inputs: list[np.ndarray] = []
    for operand, array in zip([o for o in plan.operands if o.mode == IN], arrays, strict=True):
        if operand.name.startswith("vec"):
            inputs.append(array.reshape(-1))
        else:
            inputs.append(array.reshape(array.shape[1], array.shape[2], array.shape[3], 1))
    if plan.kernel == "reduce_sum":
        return [inputs[0].sum(axis=(0, 2, 3))]
    return _reference(plan.kernel, inputs, plan.attrs)


# -- window ops over bands of rows (pooling forward) -----------------------------------------------------
def _pool_axes(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs
               ) -> list[tuple[str, int, int]]:
    n, c = ins[0].shape[:2]
    return [("n", n, 1), ("c", c, 1), ("oh", outs[0].shape[2], 1)]


def _pool_build(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs, sizes: Sizes
                ) -> tuple[list[Axis], list[OperandTiling]]:
    n, c, h, _ = ins[0].shape
    oh = outs[0].shape[2]
    kh = attrs["kernel"][0]
    axes = [_axis("n", n, sizes["n"], ("n0", "nn"), _blocks(n, sizes["n"])),
            _axis("c", c, sizes["c"], ("c0", "cn"), _blocks(c, sizes["c"])),
            _axis("oh", oh, sizes["oh"], ("o0", "on", "i0", "in", "pt", "pb"),
                  _bands(oh, sizes["oh"], h, kh, attrs["strides"][0], attrs["pads"][0]))]
    n_, c_ = Slice(0, "n0", "nn"), Slice(1, "c0", "cn")
    return axes, [OperandTiling("x", IN, 0, ins[0].shape, (n_, c_, Slice(2, "i0", "in"), None)),
                  OperandTiling("y", OUT, 0, outs[0].shape, (n_, c_, Slice(2, "o0", "on"), None))]


def _pool_run(plan: TilePlan, entries: Sequence[tuple[int, ...]], arrays: list[np.ndarray]) -> list[np.ndarray]:
    attrs = {**plan.attrs, "pads": _conv_pads(plan, entries, "oh", "pt", "pb")}
    return _reference(plan.kernel, arrays, attrs)


# -- window ops' input gradients over bands of input rows computed with their halo ------------------------
def _pool_grad_axes(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs
                    ) -> list[tuple[str, int, int]]:
    n, c, h, _ = outs[0].shape
    return [("n", n, 1), ("c", c, 1), ("h", h, 1)]


def _pool_grad_build(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs,
                     sizes: Sizes) -> tuple[list[Axis], list[OperandTiling]]:
    n, c, h, _ = outs[0].shape
    oh = ins[0].shape[2]
    axes = [_axis("n", n, sizes["n"], ("n0", "nn"), _blocks(n, sizes["n"])),
            _axis("c", c, sizes["c"], ("c0", "cn"), _blocks(c, sizes["c"])),
            _axis("h", h, sizes["h"], ("h0", "hn", "ca", "cn", "oa", "on", "pt", "pb"),
                  [_grad_band(h0, hn, h, oh, attrs["kernel"][0], attrs["strides"][0], attrs["pads"][0])
                   for h0, hn in _blocks(h, sizes["h"])])]
    n_, c_ = Slice(0, "n0", "nn"), Slice(1, "c0", "cn")
    band = (n_, c_, Slice(2, "ca", "cn"), None)
    operands = [OperandTiling("dy", IN, 0, ins[0].shape, (n_, c_, Slice(2, "oa", "on"), None))]
    if kernel == "maxpool2d_grad":
        operands.append(OperandTiling("x", IN, 1, ins[1].shape, band))
    operands.append(OperandTiling("dx", OUT, 0, outs[0].shape, band, store=(n_, c_, Slice(2, "h0", "hn"), None)))
    return axes, operands


def _pool_grad_run(plan: TilePlan, entries: Sequence[tuple[int, ...]], arrays: list[np.ndarray]
                   ) -> list[np.ndarray]:
    attrs = {**plan.attrs, "pads": _conv_pads(plan, entries, "h", "pt", "pb")}
    if "input_shape" in attrs:
        attrs["input_shape"] = (arrays[0].shape[0], arrays[0].shape[1], _e(plan, entries, "h", "cn"),
                                attrs["input_shape"][3])
    return _reference(plan.kernel, arrays, attrs)


# -- whole planes per (n, c) ------------------------------------------------------------------------------
PLANE_KERNELS = ("global_avgpool", "broadcast")


def _is_plane_op(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs) -> bool:
    if kernel != "broadcast":
        return True
    x, y = ins[0].shape, outs[0].shape
    return len(x) == 4 and x[2:] == (1, 1) and x[:2] == y[:2] and \
        np.float32(attrs["scale"]) == np.float32(1.0 / (y[2] * y[3]))


def _plane_axes(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs
                ) -> list[tuple[str, int, int]]:
    n, c = outs[0].shape[:2]
    return [("n", n, 1), ("c", c, 1)]


def _plane_build(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs, sizes: Sizes
                 ) -> tuple[list[Axis], list[OperandTiling]]:
    n, c = outs[0].shape[:2]
    axes = [_axis("n", n, sizes["n"], ("n0", "nn"), _blocks(n, sizes["n"])),
            _axis("c", c, sizes["c"], ("c0", "cn"), _blocks(c, sizes["c"]))]
    box = (Slice(0, "n0", "nn"), Slice(1, "c0", "cn"), None, None)
    operands = [OperandTiling(f"in{i}", IN, i, _v4(t.shape), box) for i, t in enumerate(ins)]
    operands += [OperandTiling(f"out{i}", OUT, i, _v4(t.shape), box) for i, t in enumerate(outs)]
    return axes, operands


def _plane_run(plan: TilePlan, entries: Sequence[tuple[int, ...]], arrays: list[np.ndarray]) -> list[np.ndarray]:
    attrs = dict(plan.attrs)
    nn, cn = _e(plan, entries, "n", "nn"), _e(plan, entries, "c", "cn")
    if "input_shape" in attrs:
        attrs["input_shape"] = (nn, cn, *attrs["input_shape"][2:])
    if plan.kernel == "broadcast":
        attrs["shape"] = (nn, cn, *attrs["shape"][2:])
    return _reference(plan.kernel, arrays, attrs)


# -- anything else: one tile holding every operand whole ------------------------------------------------
def _whole_build(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs, sizes: Sizes
                 ) -> tuple[list[Axis], list[OperandTiling]]:
    mutated = written_positions(lookup(kernel), attrs, len(ins))
    whole = (None, None, None, None)
    operands = [OperandTiling(f"in{i}", INOUT if i in mutated else IN, i, _v4(t.shape), whole, shape=t.shape)
                for i, t in enumerate(ins)]
    operands += [OperandTiling(f"out{i}", OUT, i, _v4(t.shape), whole, shape=t.shape) for i, t in enumerate(outs)]
    return [], operands


def _whole_run(plan: TilePlan, entries: Sequence[tuple[int, ...]], arrays: list[np.ndarray]) -> list[np.ndarray]:
    ins = [o for o in plan.operands if o.mode != OUT]
    return _reference(plan.kernel, [_unview(a, o) for o, a in zip(ins, arrays, strict=True)], plan.attrs)


def _unview(array: np.ndarray, operand: OperandTiling) -> np.ndarray:
    """A tile of a 4-D view back in the tensor's own rank (views only prepend unit dimensions)."""
    rank = len(operand.shape)
    return array.reshape(operand.shape) if rank > 4 else array.reshape(array.shape[4 - rank:])


def _no_axes(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs
             ) -> list[tuple[str, int, int]]:
    return []


def _accepts_all(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs) -> bool:
    return True


def _flat_accepts(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs) -> bool:
    length = ins[0].numel
    chunked = [t for t in ins if t.shape != ()]  # scalars (adam's step, a loss scale, a guard flag) are whole
    return all(t.numel == length for t in list(chunked) + list(outs)) and \
        (kernel != "add" or ins[0].shape == ins[1].shape)


def _channel_accepts(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs) -> bool:
    return len(ins[0].shape) >= 2 and _is_channel_sum(kernel, ins, attrs)


def _window_accepts(kernel: str, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs) -> bool:
    return len(ins[0].shape) == 4


FAMILIES = [
    Family("conv_fwd", ("conv2d",), _conv_fwd_axes, _conv_fwd_build, _conv_fwd_run, _accepts_all,
           doc="bands of output rows x output-channel blocks, input channels reduced in L1"),
    Family("conv_grad_input", ("conv2d_grad_input",), _grad_input_axes, _grad_input_build, _grad_input_run,
           _accepts_all,
           doc="bands of input rows computed with their halo x input-channel blocks, output channels reduced"),
    Family("conv_grad_weight", ("conv2d_grad_weight",), _grad_weight_axes, _grad_weight_build, _grad_weight_run,
           _accepts_all,
           doc="output x input channel blocks; batch and bands of rows reduced in L1"),
    Family("gemm", ("gemm",), _gemm_axes, _gemm_build, _gemm_run, _accepts_all,
           doc="row x column blocks of the product, the inner dimension reduced in L1"),
    Family("flat", FLAT_KERNELS, _flat_axes, _flat_build, _flat_run, _flat_accepts, doc="contiguous chunks"),
    Family("channel", CHANNEL_KERNELS, _channel_axes, _channel_build, _channel_run, _channel_accepts,
           doc="channel blocks x batch x chunks of the plane; per-channel sums reduced in L1"),
    Family("pool", ("maxpool2d", "avgpool2d"), _pool_axes, _pool_build, _pool_run, _window_accepts,
           doc="bands of output rows x channel blocks"),
    Family("pool_grad", ("maxpool2d_grad", "avgpool2d_grad"), _pool_grad_axes, _pool_grad_build, _pool_grad_run,
           _window_accepts,
           doc="bands of input rows computed with their halo x channel blocks"),
    Family("plane", PLANE_KERNELS, _plane_axes, _plane_build, _plane_run, _is_plane_op,
           doc="whole planes per (n, c) block"),
    Family("whole", (), _no_axes, _whole_build, _whole_run, _accepts_all,
           doc="one tile with every operand whole"),
]

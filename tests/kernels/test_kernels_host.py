"""The C kernel library, built for the host with a pthreads runtime, against float64 numpy references.

Every kernel runs on 1, 3, 7 and 8 threads; results must match the reference (rtol 1e-4, atol 1e-5)
and be bitwise identical for every thread count. Shapes are deliberately odd: channel counts that are
not multiples of the register blocks, 1x1 / 3x3 / 10x4 / 5x5 kernels, strides 1 / 2 / 3 / 5 with
asymmetric pads, depthwise, batch 1 and 3, tensors smaller than the core count.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_host import CORE_COUNTS, ConvParams, GemmParams, KernelLib, PoolParams, build

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a host C compiler")
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> KernelLib:
    return KernelLib(build(tmp_path_factory.mktemp("kernels")))


def rand(rng: np.random.Generator, *shape) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)


def check_all_cores(run, reference) -> None:
    """run(cores) -> list of outputs; every core count must match the reference and each other."""
    first = None
    for cores in CORE_COUNTS:
        outs = run(cores)
        for got, want in zip(outs, reference, strict=True):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{cores} cores")
        if first is None:
            first = outs
        else:
            for got, base in zip(outs, first, strict=True):
                assert np.array_equal(got, base, equal_nan=True), f"{cores} cores differ from 1 core"


# ---------------------------------------------------------------- convolution references (float64)

def conv_out(size: int, k: int, s: int, p0: int, p1: int) -> int:
    return (size + p0 + p1 - k) // s + 1


def padded(x: np.ndarray, pt: int, pl: int, rows: int, cols: int) -> np.ndarray:
    out = np.zeros(x.shape[:2] + (rows, cols))
    h, w = x.shape[2:]
    out[:, :, pt:pt + h, pl:pl + w] = x
    return out


def window_view(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, oh: int, ow: int) -> np.ndarray:
    return xp[:, :, kh:kh + sh * (oh - 1) + 1:sh, kw:kw + sw * (ow - 1) + 1:sw]


def conv_ref(x, w, b, p):
    x, w = x.astype(np.float64), w.astype(np.float64)
    g, cg, kg = p.groups, p.C // p.groups, p.K // p.groups
    rows, cols = max(p.H + p.pad_top, (p.OH - 1) * p.stride_h + p.KH), max(p.W + p.pad_left, (p.OW - 1) * p.stride_w + p.KW)
    xp = padded(x, p.pad_top, p.pad_left, rows, cols)
    y = np.zeros((p.N, p.K, p.OH, p.OW))
    for kh in range(p.KH):
        for kw in range(p.KW):
            xs = window_view(xp, kh, kw, p.stride_h, p.stride_w, p.OH, p.OW)
            for gi in range(g):
                y[:, gi * kg:(gi + 1) * kg] += np.einsum(
                    "nchw,kc->nkhw", xs[:, gi * cg:(gi + 1) * cg], w[gi * kg:(gi + 1) * kg, :, kh, kw])
    if b is not None:
        y += b.astype(np.float64)[None, :, None, None]
    return y


def conv_grad_input_ref(dy, w, p):
    dy, w = dy.astype(np.float64), w.astype(np.float64)
    g, cg, kg = p.groups, p.C // p.groups, p.K // p.groups
    rows, cols = max(p.H + p.pad_top, (p.OH - 1) * p.stride_h + p.KH), max(p.W + p.pad_left, (p.OW - 1) * p.stride_w + p.KW)
    dxp = np.zeros((p.N, p.C, rows, cols))
    for kh in range(p.KH):
        for kw in range(p.KW):
            view = window_view(dxp, kh, kw, p.stride_h, p.stride_w, p.OH, p.OW)
            for gi in range(g):
                view[:, gi * cg:(gi + 1) * cg] += np.einsum(
                    "nkhw,kc->nchw", dy[:, gi * kg:(gi + 1) * kg], w[gi * kg:(gi + 1) * kg, :, kh, kw])
    return dxp[:, :, p.pad_top:p.pad_top + p.H, p.pad_left:p.pad_left + p.W]


def conv_grad_weight_ref(x, dy, p):
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    g, cg, kg = p.groups, p.C // p.groups, p.K // p.groups
    rows, cols = max(p.H + p.pad_top, (p.OH - 1) * p.stride_h + p.KH), max(p.W + p.pad_left, (p.OW - 1) * p.stride_w + p.KW)
    xp = padded(x, p.pad_top, p.pad_left, rows, cols)
    dw = np.zeros((p.K, cg, p.KH, p.KW))
    for kh in range(p.KH):
        for kw in range(p.KW):
            xs = window_view(xp, kh, kw, p.stride_h, p.stride_w, p.OH, p.OW)
            for gi in range(g):
                dw[gi * kg:(gi + 1) * kg, :, kh, kw] = np.einsum(
                    "nkhw,nchw->kc", dy[:, gi * kg:(gi + 1) * kg], xs[:, gi * cg:(gi + 1) * cg])
    return dw


def make_conv(n, c, h, w, k, kh, kw, sh, sw, pt, pl, pb, pr, groups) -> ConvParams:
    return ConvParams(N=n, C=c, H=h, W=w, K=k, KH=kh, KW=kw, OH=conv_out(h, kh, sh, pt, pb),
                      OW=conv_out(w, kw, sw, pl, pr), stride_h=sh, stride_w=sw, pad_top=pt, pad_left=pl,
                      pad_bottom=pb, pad_right=pr, groups=groups)


CONV_CASES = {
    # name: N, C, H, W, K, KH, KW, sh, sw, pt, pl, pb, pr, groups
    "stem3x3": (1, 3, 8, 8, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    "odd3x3_k13": (1, 9, 6, 7, 13, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    "s2_asym_pads_batch3": (3, 5, 7, 9, 6, 3, 3, 2, 2, 1, 0, 0, 1, 1),
    "s2_pad1_16x16": (1, 8, 16, 16, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1),
    "1x1": (1, 7, 5, 6, 9, 1, 1, 1, 1, 0, 0, 0, 0, 1),
    "1x1_s2_batch3": (3, 6, 9, 8, 10, 1, 1, 2, 2, 0, 0, 0, 0, 1),
    "10x4_s2x1": (1, 4, 16, 10, 5, 10, 4, 2, 1, 4, 1, 5, 2, 1),
    "5x5": (2, 3, 9, 9, 4, 5, 5, 1, 1, 2, 2, 2, 2, 1),
    "depthwise": (2, 6, 9, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1, 6),
    "depthwise_s2_asym": (1, 5, 8, 8, 5, 3, 3, 2, 2, 0, 1, 1, 0, 5),
    "depthwise_mult2": (1, 3, 6, 6, 6, 3, 3, 1, 1, 1, 1, 1, 1, 3),
    "depthwise_s2_pad1_batch2": (2, 4, 9, 7, 4, 3, 3, 2, 2, 1, 1, 1, 1, 4),
    "depthwise_s2x1": (1, 3, 8, 9, 3, 3, 3, 2, 1, 1, 1, 0, 1, 3),
    "groups2": (1, 4, 5, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2),
    "tiny_2x2": (1, 1, 2, 2, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    "narrow_w2": (1, 2, 3, 2, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    "stride5": (1, 2, 11, 12, 3, 3, 3, 5, 5, 1, 2, 0, 1, 1),
    "stride3_no_pad": (1, 3, 10, 10, 4, 3, 3, 3, 3, 0, 0, 0, 0, 1),
    "pad_beyond_kernel": (1, 2, 4, 4, 3, 3, 3, 1, 1, 3, 3, 3, 3, 1),
    "wide_row": (1, 4, 3, 37, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    # DS-CNN (MLPerf Tiny keyword spotting): 10x4 stem on the 49x10 MFCC map, depthwise on 25x5
    "dscnn_stem": (1, 1, 49, 10, 64, 10, 4, 2, 2, 4, 1, 5, 1, 1),
    "dscnn_depthwise": (1, 16, 25, 5, 16, 3, 3, 1, 1, 1, 1, 1, 1, 16),
    "dscnn_depthwise_batch2": (2, 3, 7, 5, 3, 3, 3, 1, 1, 1, 1, 1, 1, 3),
    "dscnn_pointwise_batch2": (2, 7, 25, 5, 9, 1, 1, 1, 1, 0, 0, 0, 0, 1),
    "pointwise_groups2": (1, 6, 9, 11, 10, 1, 1, 1, 1, 0, 0, 0, 0, 2),
}


def run_conv_case(lib: KernelLib, p: ConvParams, seed: int, with_bias: bool = True) -> None:
    rng = np.random.default_rng(seed)
    x = rand(rng, p.N, p.C, p.H, p.W)
    w = rand(rng, p.K, p.C // p.groups, p.KH, p.KW)
    b = rand(rng, p.K) if with_bias else None
    dy = rand(rng, p.N, p.K, p.OH, p.OW)
    y_shape = np.zeros((p.N, p.K, p.OH, p.OW), np.float32)
    check_all_cores(lambda c: lib.call("conv2d_fwd", c, [x, w, b], [y_shape],
                                       [("in", 0), ("in", 1), ("in", 2), ("out", 0), p]),
                    [conv_ref(x, w, b, p)])
    check_all_cores(lambda c: lib.call("conv2d_grad_input", c, [dy, w], [np.zeros_like(x)],
                                       [("in", 0), ("in", 1), ("out", 0), p]),
                    [conv_grad_input_ref(dy, w, p)])
    check_all_cores(lambda c: lib.call("conv2d_grad_weight", c, [x, dy], [np.zeros_like(w)],
                                       [("in", 0), ("in", 1), ("out", 0), p]),
                    [conv_grad_weight_ref(x, dy, p)])


@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_conv(lib, name):
    run_conv_case(lib, make_conv(*CONV_CASES[name]), seed=len(name), with_bias=name != "5x5")


@pytest.mark.parametrize("width", range(1, 13))
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("pads", [(0, 0), (1, 1), (2, 0), (0, 2), (2, 2)])
def test_depthwise_widths(lib, width, stride, pads):
    """Depthwise 3x3 cuts rows into strips whose border pixels lose kernel columns: every width up to
    a few strips, with left / right pads that cut off nothing, one or two kernel columns."""
    pl, pr = pads
    if width + pl + pr < 3:
        return
    p = make_conv(1, 2, 4, width, 2, 3, 3, stride, stride, 1, pl, 1, pr, 2)
    run_conv_case(lib, p, seed=width * 100 + stride * 10 + pl + 3 * pr)


@pytest.mark.parametrize("width", range(1, 15))
@pytest.mark.parametrize("pads", [(0, 0), (1, 1), (2, 1), (1, 2), (0, 3)])
def test_kernel_width4_stride2_widths(lib, width, pads):
    """Width-4 stride-2 kernels (keyword-spotting stems) cut rows into tiles of up to 5 pixels whose
    end pixels may lose one kernel column; 5 output channels leave a remainder after a 4-block."""
    pl, pr = pads
    if width + pl + pr < 4:
        return
    p = make_conv(1, 2, 5, width, 5, 3, 4, 2, 2, 1, pl, 1, pr, 1)
    run_conv_case(lib, p, seed=width * 10 + pl + 3 * pr)


def test_conv_references_are_adjoint():
    """<dy, conv(x)> == <grad_input(dy), x> == <grad_weight(x, dy), w> for the references themselves."""
    p = make_conv(*CONV_CASES["s2_asym_pads_batch3"])
    rng = np.random.default_rng(0)
    x, w = rand(rng, p.N, p.C, p.H, p.W), rand(rng, p.K, p.C, p.KH, p.KW)
    dy = rand(rng, p.N, p.K, p.OH, p.OW)
    forward = np.sum(dy * conv_ref(x, w, None, p))
    assert np.isclose(forward, np.sum(conv_grad_input_ref(dy, w, p) * x))
    assert np.isclose(forward, np.sum(conv_grad_weight_ref(x, dy, p) * w))


conv_shapes = st.tuples(
    st.integers(1, 2), st.integers(1, 6), st.integers(1, 9), st.integers(1, 9), st.integers(1, 9),
    st.sampled_from([1, 2, 3, 4, 5]), st.sampled_from([1, 2, 3, 4]), st.integers(1, 3), st.integers(1, 3),
    st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conv_shapes)
def test_conv_random_shapes(lib, shape):
    n, c, h, w, k, kh, kw, sh, sw, pt, pl, pb, pr, depthwise = shape
    if depthwise:
        k = c * (1 + k % 2)
    if h + pt + pb < kh or w + pl + pr < kw:
        return
    p = make_conv(n, c, h, w, k, kh, kw, sh, sw, pt, pl, pb, pr, c if depthwise else 1)
    run_conv_case(lib, p, seed=sum(shape))


def test_channel_sum(lib):
    rng = np.random.default_rng(1)
    dy = rand(rng, 3, 5, 7)
    check_all_cores(lambda c: lib.call("channel_sum", c, [dy], [np.zeros(5, np.float32)],
                                       [("in", 0), ("out", 0), 3, 5, 7]),
                    [dy.astype(np.float64).sum(axis=(0, 2))])


# ---------------------------------------------------------------- gemm

@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias_kind", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("mnk", [(5, 7, 3), (9, 10, 17), (1, 1, 1), (4, 4, 4), (2, 13, 6)])
def test_gemm(lib, trans_a, trans_b, bias_kind, mnk):
    m, n, k = mnk
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    a = rand(rng, *((k, m) if trans_a else (m, k)))
    b = rand(rng, *((n, k) if trans_b else (k, n)))
    bias = {0: None, 1: rand(rng, n), 2: rand(rng, m), 3: rand(rng, m, n), 4: rand(rng, 1)}[bias_kind]
    alpha, beta = 0.75, -1.5
    want = alpha * ((a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64))
    if bias is not None:
        want += beta * {1: lambda: bias[None, :], 2: lambda: bias[:, None], 3: lambda: bias, 4: lambda: bias}[bias_kind]()
    p = GemmParams(M=m, N=n, K=k, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, bias_kind=bias_kind)
    check_all_cores(lambda c: lib.call("gemm", c, [a, b, bias], [np.zeros((m, n), np.float32)],
                                       [("in", 0), ("in", 1), ("in", 2), ("out", 0), p]), [want])


def test_gemm_leading_dimensions(lib):
    """A sub-matrix product: operands and result are windows of larger row-major matrices."""
    rng = np.random.default_rng(5)
    big_a, big_b = rand(rng, 9, 11), rand(rng, 8, 10)
    a, b = big_a[:6, :5], big_b[:7, :5]  # op(A) = a [6, 5], op(B) = b.T [5, 7]
    p = GemmParams(M=6, N=7, K=5, trans_a=0, trans_b=1, alpha=1.0, beta=0.0, bias_kind=0, lda=11, ldb=10, ldy=9)
    want = a.astype(np.float64) @ b.T.astype(np.float64)

    def run(cores):
        (y,) = lib.call("gemm", cores, [big_a, big_b], [np.zeros((6, 9), np.float32)],
                        [("in", 0), ("in", 1), None, ("out", 0), p])
        return [y[:, :7]]
    # Columns 7..8 of each Y row are not written (NaN); only the 6 x 7 window is compared.
    check_all_cores(run, [want])


def test_col_row_sum(lib):
    rng = np.random.default_rng(2)
    dy = rand(rng, 5, 11)
    check_all_cores(lambda c: lib.call("col_sum", c, [dy], [np.zeros(11, np.float32)],
                                       [("in", 0), ("out", 0), 5, 11, 0.5]), [0.5 * dy.astype(np.float64).sum(0)])
    check_all_cores(lambda c: lib.call("row_sum", c, [dy], [np.zeros(5, np.float32)],
                                       [("in", 0), ("out", 0), 5, 11, 2.0]), [2.0 * dy.astype(np.float64).sum(1)])


# ---------------------------------------------------------------- element-wise

UNARY = {
    "relu": (lambda x: np.maximum(x, 0), []),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), []),
    "tanh_fwd": (np.tanh, []),
    "leaky_relu": (lambda x: np.where(x > 0, x, 0.1 * x), [0.1]),
    "clip": (lambda x: np.clip(x, -0.5, 0.25), [-0.5, 0.25]),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(lib, name):
    ref, extra = UNARY[name]
    rng = np.random.default_rng(3)
    x = np.concatenate([rand(rng, 45) * 4, np.float32([0.0, 1e-6, -1e-6, 30.0, -30.0, 100.0, -100.0])])
    check_all_cores(lambda c: lib.call(name, c, [x], [np.zeros_like(x)], [("in", 0), ("out", 0), x.size, *extra]),
                    [ref(x.astype(np.float64))])


GRADS = {
    "relu_grad": (lambda dy, x: np.where(x > 0, dy, 0), []),
    "leaky_relu_grad": (lambda dy, x: np.where(x > 0, dy, 0.1 * dy), [0.1]),
    "sigmoid_grad": (lambda dy, y: dy * y * (1 - y), []),
    "tanh_grad": (lambda dy, y: dy * (1 - y * y), []),
    "clip_grad": (lambda dy, x: np.where((x >= -0.5) & (x <= 0.25), dy, 0), [-0.5, 0.25]),
}


@pytest.mark.parametrize("name", sorted(GRADS))
def test_activation_grad(lib, name):
    ref, extra = GRADS[name]
    rng = np.random.default_rng(4)
    dy, x = rand(rng, 29), rand(rng, 29)
    x[:3] = [0.0, -0.5, 0.25]
    check_all_cores(lambda c: lib.call(name, c, [dy, x], [np.zeros_like(x)],
                                       [("in", 0), ("in", 1), ("out", 0), x.size, *extra]),
                    [ref(dy.astype(np.float64), x.astype(np.float64))])


def test_add_and_scale(lib):
    rng = np.random.default_rng(6)
    a, b = rand(rng, 13), rand(rng, 13)
    check_all_cores(lambda c: lib.call("add", c, [a, b], [np.zeros_like(a)], [("in", 0), ("in", 1), ("out", 0), 13]),
                    [a.astype(np.float64) + b])
    check_all_cores(lambda c: lib.call("scale", c, [a], [np.zeros_like(a)], [("in", 0), ("out", 0), 13, -2.5]),
                    [a.astype(np.float64) * -2.5])


@pytest.mark.parametrize("a_shape,b_shape", [
    ((2, 3, 4, 5), (1, 3, 1, 1)), ((2, 3, 4, 5), (5,)), ((1, 1, 1, 7), (1, 1, 1, 1)),
    ((3, 1, 5, 1), (1, 4, 1, 6)), ((2, 1, 3), (2, 3))])
def test_add_broadcast(lib, a_shape, b_shape):
    rng = np.random.default_rng(7)
    a, b = rand(rng, *a_shape), rand(rng, *b_shape)
    out_shape = np.broadcast_shapes(a_shape, b_shape)
    shape4 = (1,) * (4 - len(out_shape)) + out_shape

    def strides(arr):
        full = arr.reshape((1,) * (4 - arr.ndim) + arr.shape)
        return np.array([0 if full.shape[d] == 1 and shape4[d] != 1 else full.strides[d] // 4 for d in range(4)],
                        np.int32)
    shape = np.array(shape4, np.int32)
    check_all_cores(lambda c: lib.call("add_broadcast", c, [a, b], [np.zeros(shape4, np.float32)],
                                       [("in", 0), ("in", 1), ("out", 0), shape, strides(a), strides(b)]),
                    [(a.astype(np.float64) + b).reshape(shape4)])


# ---------------------------------------------------------------- pooling

def pool_windows(p):
    for oh in range(p.OH):
        for ow in range(p.OW):
            hs, ws = oh * p.stride_h - p.pad_top, ow * p.stride_w - p.pad_left
            yield oh, ow, hs, ws, slice(max(hs, 0), min(hs + p.KH, p.H)), slice(max(ws, 0), min(ws + p.KW, p.W))


def maxpool_ref(x, dy, p):
    y = np.full((p.N, p.C, p.OH, p.OW), -np.inf)
    dx = np.zeros(x.shape)
    for oh, ow, _, _, rows, cols in pool_windows(p):
        win = x[:, :, rows, cols].reshape(p.N, p.C, -1).astype(np.float64)
        if win.shape[2] == 0:
            continue
        y[:, :, oh, ow] = win.max(axis=2)
        arg = win.argmax(axis=2)
        width = cols.stop - cols.start
        for n in range(p.N):
            for c in range(p.C):
                dx[n, c, rows.start + arg[n, c] // width, cols.start + arg[n, c] % width] += dy[n, c, oh, ow]
    return y, dx


def avgpool_ref(x, dy, p):
    y = np.zeros((p.N, p.C, p.OH, p.OW))
    dx = np.zeros(x.shape)
    for oh, ow, hs, ws, rows, cols in pool_windows(p):
        if p.count_include_pad:
            div = (min(hs + p.KH, p.H + p.pad_bottom) - hs) * (min(ws + p.KW, p.W + p.pad_right) - ws)
        else:
            div = max(rows.stop - rows.start, 0) * max(cols.stop - cols.start, 0)
        if div <= 0:
            continue
        y[:, :, oh, ow] = x[:, :, rows, cols].astype(np.float64).sum(axis=(2, 3)) / div
        dx[:, :, rows, cols] += dy[:, :, oh, ow][:, :, None, None] / div
    return y, dx


def make_pool(n, c, h, w, k, s, pt, pl, pb, pr, ceil_mode=False, include_pad=0):
    def out(size, p0, p1):
        span = size + p0 + p1 - k
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= size + p0:
            o -= 1
        return o
    return PoolParams(N=n, C=c, H=h, W=w, OH=out(h, pt, pb), OW=out(w, pl, pr), KH=k, KW=k, stride_h=s,
                      stride_w=s, pad_top=pt, pad_left=pl, pad_bottom=pb, pad_right=pr,
                      count_include_pad=include_pad)


POOL_CASES = {
    "2x2s2": (2, 3, 8, 8, 2, 2, 0, 0, 0, 0),
    "3x3s2pad1": (1, 5, 9, 7, 3, 2, 1, 1, 1, 1),
    "3x3s1_asym": (1, 2, 5, 6, 3, 1, 0, 1, 2, 0),
    "ceil_mode": (1, 3, 7, 7, 2, 2, 0, 0, 0, 0, True),
    "ceil_mode_pad": (3, 2, 6, 5, 3, 2, 1, 1, 1, 1, True),
    "tiny": (1, 1, 1, 2, 2, 2, 1, 0, 0, 1),
}


@pytest.mark.parametrize("name", sorted(POOL_CASES))
def test_maxpool(lib, name):
    p = make_pool(*POOL_CASES[name])
    rng = np.random.default_rng(8)
    # Few distinct values so windows hold ties: the first maximum must win.
    x = rng.integers(-3, 3, size=(p.N, p.C, p.H, p.W)).astype(np.float32)
    dy = rand(rng, p.N, p.C, p.OH, p.OW)
    y_ref, dx_ref = maxpool_ref(x, dy, p)
    check_all_cores(lambda c: lib.call("maxpool2d_fwd", c, [x], [np.zeros(y_ref.shape, np.float32)],
                                       [("in", 0), ("out", 0), p]), [y_ref])
    check_all_cores(lambda c: lib.call("maxpool2d_grad", c, [dy, x], [np.zeros_like(x)],
                                       [("in", 0), ("in", 1), ("out", 0), p]), [dx_ref])


@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize("name", sorted(POOL_CASES))
def test_avgpool(lib, name, include_pad):
    case = POOL_CASES[name]
    p = make_pool(*case[:10], ceil_mode=len(case) > 10, include_pad=include_pad)
    rng = np.random.default_rng(9)
    x, dy = rand(rng, p.N, p.C, p.H, p.W), rand(rng, p.N, p.C, p.OH, p.OW)
    y_ref, dx_ref = avgpool_ref(x, dy, p)
    check_all_cores(lambda c: lib.call("avgpool2d_fwd", c, [x], [np.zeros(y_ref.shape, np.float32)],
                                       [("in", 0), ("out", 0), p]), [y_ref])
    check_all_cores(lambda c: lib.call("avgpool2d_grad", c, [dy], [np.zeros_like(x)],
                                       [("in", 0), ("out", 0), p]), [dx_ref])


def test_global_avgpool(lib):
    rng = np.random.default_rng(10)
    x, dy = rand(rng, 3, 5, 7), rand(rng, 3, 5)
    check_all_cores(lambda c: lib.call("global_avgpool_fwd", c, [x], [np.zeros((3, 5), np.float32)],
                                       [("in", 0), ("out", 0), 3, 5, 7]), [x.astype(np.float64).mean(axis=2)])
    check_all_cores(lambda c: lib.call("global_avgpool_grad", c, [dy], [np.zeros_like(x)],
                                       [("in", 0), ("out", 0), 3, 5, 7]),
                    [np.repeat(dy.astype(np.float64)[:, :, None] / 7, 7, axis=2)])


# ---------------------------------------------------------------- batch norm

def test_batchnorm(lib):
    rng = np.random.default_rng(11)
    n, c, plane, eps = 3, 5, 7, 1e-5
    x, dy = rand(rng, n, c, plane), rand(rng, n, c, plane)
    gamma, beta, mean = rand(rng, c), rand(rng, c), rand(rng, c)
    var = rng.uniform(0.1, 2.0, c).astype(np.float32)
    inv = 1 / np.sqrt(var.astype(np.float64) + eps)
    xhat = (x - mean[None, :, None].astype(np.float64)) * inv[None, :, None]
    check_all_cores(lambda k: lib.call("batchnorm_fwd", k, [x, gamma, beta, mean, var], [np.zeros_like(x)],
                                       [("in", 0), ("in", 1), ("in", 2), ("in", 3), ("in", 4), ("out", 0),
                                        n, c, plane, eps]),
                    [xhat * gamma[None, :, None] + beta[None, :, None]])
    check_all_cores(lambda k: lib.call("batchnorm_grad_input", k, [dy, gamma, var], [np.zeros_like(x)],
                                       [("in", 0), ("in", 1), ("in", 2), ("out", 0), n, c, plane, eps]),
                    [dy * (gamma * inv)[None, :, None]])
    check_all_cores(lambda k: lib.call("batchnorm_grad_params", k, [dy, x, mean, var],
                                       [np.zeros(c, np.float32), np.zeros(c, np.float32)],
                                       [("in", 0), ("in", 1), ("in", 2), ("in", 3), ("out", 0), ("out", 1),
                                        n, c, plane, eps]),
                    [(dy * xhat).sum(axis=(0, 2)), dy.astype(np.float64).sum(axis=(0, 2))])


# ---------------------------------------------------------------- losses

def softmax64(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("rows,cols", [(1, 10), (5, 3), (11, 7)])
def test_softmax_cross_entropy(lib, rows, cols):
    rng = np.random.default_rng(12)
    logits = (rand(rng, rows, cols) * 20).astype(np.float32)
    logits[0, 0] = 80.0  # would overflow expf without the max subtraction
    labels = rng.integers(0, cols, rows).astype(np.int32)
    prob = softmax64(logits.astype(np.float64))
    loss = -np.log(prob[np.arange(rows), labels]).mean()
    onehot = np.eye(cols)[labels]
    check_all_cores(lambda c: lib.call("softmax_cross_entropy", c, [logits, labels], [np.zeros(1, np.float32)],
                                       [("in", 0), ("in", 1), ("out", 0), rows, cols]), [np.array([loss])])
    check_all_cores(lambda c: lib.call("softmax_cross_entropy_grad", c, [logits, labels], [np.zeros_like(logits)],
                                       [("in", 0), ("in", 1), ("out", 0), rows, cols]), [(prob - onehot) / rows])


def test_softmax(lib):
    rng = np.random.default_rng(13)
    x, dy = rand(rng, 6, 9) * 10, rand(rng, 6, 9)
    y = softmax64(x.astype(np.float64))
    check_all_cores(lambda c: lib.call("softmax_fwd", c, [x], [np.zeros_like(x)], [("in", 0), ("out", 0), 6, 9]), [y])
    y32 = y.astype(np.float32)
    y64 = y32.astype(np.float64)
    want = y64 * (dy - (dy * y64).sum(axis=1, keepdims=True))
    check_all_cores(lambda c: lib.call("softmax_grad", c, [dy, y32], [np.zeros_like(x)],
                                       [("in", 0), ("in", 1), ("out", 0), 6, 9]), [want])


def test_mse(lib):
    rng = np.random.default_rng(14)
    pred, target = rand(rng, 23), rand(rng, 23)
    d = pred.astype(np.float64) - target
    check_all_cores(lambda c: lib.call("mse_loss", c, [pred, target], [np.zeros(1, np.float32)],
                                       [("in", 0), ("in", 1), ("out", 0), 23]), [np.array([np.mean(d * d)])])
    check_all_cores(lambda c: lib.call("mse_loss_grad", c, [pred, target], [np.zeros_like(pred)],
                                       [("in", 0), ("in", 1), ("out", 0), 23]), [2 * d / 23])


# ---------------------------------------------------------------- optimizers (PyTorch semantics)

@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, 0, 0.0), (0.0, 0, 0.01), (0.9, 0, 0.0), (0.9, 1, 0.05)])
def test_sgd(lib, momentum, nesterov, wd):
    rng = np.random.default_rng(15)
    n, lr = 19, 0.1
    w0, grads = rand(rng, n), [rand(rng, n) for _ in range(3)]
    w_ref, buf_ref = w0.astype(np.float64), np.zeros(n)
    for g in grads:  # torch.optim.SGD, dampening 0; its first step sets buf = g, same as buf = 0 here
        d = g + wd * w_ref
        if momentum:
            buf_ref = momentum * buf_ref + d
            d = d + momentum * buf_ref if nesterov else buf_ref
        w_ref = w_ref - lr * d
    for cores in CORE_COUNTS:
        w, buf = w0.copy(), np.zeros(n, np.float32)
        for g in grads:
            w, _, buf = lib.call_inplace("sgd_update", cores, [w, g, buf if momentum else None],
                                         [("io", 0), ("io", 1), ("io", 2), n, lr, momentum, wd, nesterov])
        np.testing.assert_allclose(w, w_ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("decoupled,wd", [(0, 0.0), (0, 0.1), (1, 0.1)])
def test_adam(lib, decoupled, wd):
    rng = np.random.default_rng(16)
    n, lr, b1, b2, eps = 21, 0.01, 0.9, 0.999, 1e-8
    w0, grads = rand(rng, n), [rand(rng, n) for _ in range(4)]
    w_ref, m_ref, v_ref = w0.astype(np.float64), np.zeros(n), np.zeros(n)
    for t, g in enumerate(grads, start=1):  # torch.optim.Adam / AdamW
        g = g.astype(np.float64)
        if decoupled:
            w_ref = w_ref * (1 - lr * wd)
        else:
            g = g + wd * w_ref
        m_ref = b1 * m_ref + (1 - b1) * g
        v_ref = b2 * v_ref + (1 - b2) * g * g
        denom = np.sqrt(v_ref) / np.sqrt(1 - b2 ** t) + eps
        w_ref = w_ref - lr / (1 - b1 ** t) * m_ref / denom
    for cores in CORE_COUNTS:
        w, m, v = w0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        for t, g in enumerate(grads, start=1):
            w, _, m, v = lib.call_inplace("adam_update", cores, [w, g, m, v],
                                          [("io", 0), ("io", 1), ("io", 2), ("io", 3), n, lr, b1, b2, eps, wd,
                                           decoupled, t])
        np.testing.assert_allclose(w, w_ref, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(m, m_ref, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(v, v_ref, rtol=RTOL, atol=ATOL)

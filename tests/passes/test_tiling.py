"""Tile plans and the tiling pass: for random layer shapes and budgets, every output is computed once,
every reduction is complete, every buffer fits, and tile-by-tile execution equals the whole kernel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyodl.ir.graph import Graph, Op
from tinyodl.ir.registry import infer_types, lookup
from tinyodl.ir.text import parse_graph, print_graph
from tinyodl.ir.tiling import TilePlan, make_plan, run_tiled, tiling_axes
from tinyodl.ir.types import Phase, Role, TensorType
from tinyodl.ir.verify import verify_graph
from tinyodl.passes.tiling import TileBudgetError, Tiling, choose_plan, dma_totals

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _arrays(shapes: list[tuple[int, ...]], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) if len(s) > 1 else rng.uniform(0.5, 1.5, s) for s in shapes]


def _check_plan(plan: TilePlan, arrays: list[np.ndarray], expected: list[np.ndarray]) -> None:
    # every reduction is complete: the entries of each reduction axis partition its extent
    for axis in plan.axes:
        starts = [entry[0] for entry in axis.entries]
        sizes = [entry[1] for entry in axis.entries]
        assert starts == [sum(sizes[:i]) for i in range(len(sizes))] and sum(sizes) == axis.extent, axis
    # every output element is stored exactly once (run_tiled raises on a second store, NaN marks a gap)
    got = run_tiled(plan, arrays)
    for result, want in zip(got, expected, strict=True):
        assert not np.any(np.isnan(result)), f"{plan.kernel}: an output element was never stored"
        np.testing.assert_allclose(result.reshape(want.shape), want, rtol=1e-10, atol=1e-10)
    # the closed-form DMA totals the cost model uses equal the tile-by-tile count
    assert dma_totals(plan)[:2] == plan.dma_bytes()
    # buffers: every slot and scratch tile lies inside the plan's L1 bytes, without overlap
    spans = []
    for operand, slots, scratch in plan.l1_layout():
        size = plan.buffer_bytes(operand)
        spans += [(offset, offset + size) for offset in slots + ([scratch] if scratch >= 0 else [])]
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert spans[-1][1] <= plan.l1_bytes()


def _random_sizes(data: st.DataObject, axes: list[tuple[str, int, int]]) -> dict[str, int]:
    sizes = {}
    for name, extent, step in axes:
        choices = sorted({extent, *range(step, extent + 1, step)})
        sizes[name] = data.draw(st.sampled_from(choices), label=name)
    return sizes


def _run(kernel: str, shapes: list[tuple[int, ...]], attrs: dict, data: st.DataObject) -> None:
    in_types = [TensorType(s) for s in shapes]
    full = lookup(kernel).with_defaults(attrs)
    out_types = infer_types(kernel, in_types, full)
    arrays = _arrays(shapes, data.draw(st.integers(0, 1000), label="seed"))
    expected = lookup(kernel).reference(arrays, full)
    axes = tiling_axes(kernel, in_types, out_types, full)
    plan = make_plan(kernel, in_types, out_types, full, _random_sizes(data, axes))
    _check_plan(plan, arrays, expected)


@st.composite
def conv_case(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...], dict]:  # type: ignore[type-arg]
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 6))
    depthwise = draw(st.booleans()) and c > 1
    k = c * draw(st.integers(1, 2)) if depthwise else draw(st.integers(1, 9))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = draw(st.integers(max(1, kh - pads[0] - pads[2]), 12))
    w = draw(st.integers(max(1, kw - pads[1] - pads[3]), 9))
    attrs = {"strides": (sh, sw), "pads": pads, "group": c if depthwise else 1}
    return (n, c, h, w), (k, 1 if depthwise else c, kh, kw), attrs


@SETTINGS
@given(conv_case(), st.booleans(), st.data())
def test_conv_forward_tiles(case, bias: bool, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    x, w, attrs = case
    _run("conv2d", [x, w] + ([(w[0],)] if bias else []), attrs, data)


@SETTINGS
@given(conv_case(), st.data())
def test_conv_input_gradient_tiles(case, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    x, w, attrs = case
    y = infer_types("conv2d", [TensorType(x), TensorType(w)], attrs)[0].shape
    _run("conv2d_grad_input", [y, w], {**attrs, "input_shape": x}, data)


@SETTINGS
@given(conv_case(), st.data())
def test_conv_weight_gradient_tiles(case, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    x, w, attrs = case
    y = infer_types("conv2d", [TensorType(x), TensorType(w)], attrs)[0].shape
    _run("conv2d_grad_weight", [x, y], {**attrs, "kernel": w[2:]}, data)


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.booleans(), st.booleans(),
       st.sampled_from(["none", "col", "row", "full", "scalar"]), st.data())
def test_gemm_tiles(m: int, n: int, k: int, trans_a: bool, trans_b: bool, bias: str, data: st.DataObject) -> None:
    shapes = [(k, m) if trans_a else (m, k), (n, k) if trans_b else (k, n)]
    shapes += {"none": [], "col": [(n,)], "row": [(m, 1)], "full": [(m, n)], "scalar": [(1,)]}[bias]
    _run("gemm", shapes, {"trans_a": int(trans_a), "trans_b": int(trans_b), "alpha": 0.7, "beta": 1.3}, data)


@st.composite
def pool_case(draw: st.DrawFn) -> tuple[tuple[int, ...], dict]:  # type: ignore[type-arg]
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)), draw(st.integers(0, kh - 1)),
            draw(st.integers(0, kw - 1)))
    x = (draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(kh, 11)), draw(st.integers(kw, 8)))
    return x, {"kernel": (kh, kw), "strides": (draw(st.integers(1, 3)), draw(st.integers(1, 2))), "pads": pads}


@SETTINGS
@given(pool_case(), st.sampled_from(["maxpool2d", "avgpool2d"]), st.data())
def test_pool_tiles(case, kind: str, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    x, attrs = case
    if kind == "avgpool2d":
        attrs = {**attrs, "count_include_pad": data.draw(st.integers(0, 1))}
    _run(kind, [x], attrs, data)
    y = infer_types(kind, [TensorType(x)], attrs)[0].shape
    if kind == "maxpool2d":
        _run("maxpool2d_grad", [y, x], attrs, data)
    else:
        _run("avgpool2d_grad", [y], {**attrs, "input_shape": x}, data)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 5), st.integers(1, 5), st.data())
def test_channel_tiles(n: int, c: int, h: int, w: int, data: st.DataObject) -> None:
    x, v = (n, c, h, w), (c,)
    _run("batchnorm", [x, v, v, v, v], {"epsilon": 1e-3}, data)
    _run("batchnorm_grad_input", [x, v, v], {"epsilon": 1e-3}, data)
    _run("batchnorm_grad_params", [x, x, v, v], {"epsilon": 1e-3}, data)
    _run("reduce_sum", [x], {"axes": (0, 2, 3)}, data)
    _run("global_avgpool", [x], {}, data)


@SETTINGS
@given(st.integers(1, 200), st.booleans(), st.data())
def test_flat_tiles(length: int, momentum: bool, data: st.DataObject) -> None:
    _run("relu_grad", [(length,), (length,)], {}, data)
    _run("sgd_update", [(length,)] * (3 if momentum else 2),
         {"lr": 0.1, "momentum": 0.9 if momentum else 0.0, "weight_decay": 0.01}, data)


def _single_op_graph(kernel: str, shapes: list[tuple[int, ...]], attrs: dict) -> tuple[Graph, Op]:  # type: ignore[type-arg]
    graph = Graph("one")
    inputs = [graph.add_input(f"in{i}", TensorType(s)) for i, s in enumerate(shapes)]
    full = lookup(kernel).with_defaults(attrs)
    outs = [graph.new_value(f"out{i}", t, Role.ACT) for i, t in enumerate(infer_types(kernel, [v.type for v in inputs],
                                                                                       full))]
    op = graph.append(Op(kernel, inputs, outs, dict(attrs), Phase.FORWARD, "layer"))
    graph.outputs = outs
    return graph, op


@SETTINGS
@given(conv_case(), st.integers(256, 64 * 1024), st.sampled_from([1, 3, 8]))
def test_chosen_plans_fit_or_say_what_they_need(case, budget: int, cores: int) -> None:  # type: ignore[no-untyped-def]
    x, w, attrs = case
    _, op = _single_op_graph("conv2d", [x, w], attrs)
    try:
        plan = choose_plan(op, budget, cores)
    except TileBudgetError as exc:
        smallest = make_plan("conv2d", [TensorType(x), TensorType(w)], [op.outputs[0].type], lookup("conv2d")
                             .with_defaults(attrs), {name: step if step <= extent else extent for name, extent, step in
                                                     tiling_axes("conv2d", [TensorType(x), TensorType(w)],
                                                                 [op.outputs[0].type], lookup("conv2d")
                                                                 .with_defaults(attrs))})
        assert smallest.l1_bytes() > budget
        assert "'layer' (forward, conv2d)" in str(exc) and str(budget) in str(exc)
        return
    assert plan.l1_bytes() <= budget


def test_tiled_graph_prints_parses_and_verifies() -> None:
    graph, _ = _single_op_graph("conv2d", [(1, 4, 9, 9), (8, 4, 3, 3), (8,)], {"pads": (1, 1, 1, 1)})
    Tiling(l1_bytes=3000, cores=8).run(graph)
    verify_graph(graph)
    text = print_graph(graph)
    assert "tile_loop(" in text and "dma_in(" in text and "dma_wait(" in text and "dma_out(" in text
    assert "tile_accumulate(" in text or "tiles = 1," not in text
    again = parse_graph(text)
    verify_graph(again)
    assert print_graph(again) == text


def test_a_body_that_disagrees_with_its_tile_sizes_is_rejected() -> None:
    graph, _ = _single_op_graph("relu", [(1, 64)], {})
    Tiling(l1_bytes=256, cores=8).run(graph)
    text = print_graph(graph)
    loop = graph.ops[0]
    wrong = text.replace(f"tiles = {loop.attrs['tiles']}", f"tiles = {int(loop.attrs['tiles']) + 1}")
    with pytest.raises(Exception, match="tiles = .*the tile sizes give"):
        verify_graph(parse_graph(wrong))


def test_reference_executor_runs_a_tile_loop_as_its_kernel() -> None:
    from tinyodl.ir.executor import Executor

    graph, op = _single_op_graph("conv2d", [(1, 3, 7, 7), (5, 3, 3, 3)], {"strides": (2, 2)})
    x, w = _arrays([(1, 3, 7, 7), (5, 3, 3, 3)], 1)
    want = lookup("conv2d").reference([x, w], lookup("conv2d").with_defaults(op.attrs))[0]
    Tiling(l1_bytes=1024, cores=8).run(graph)
    assert graph.ops[0].type == "tile_loop"
    got = Executor(graph).run({"in0": x, "in1": w})["out0"]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_smallest_tile_error_names_layer_phase_and_bytes() -> None:
    graph, _ = _single_op_graph("conv2d", [(1, 64, 8, 200), (64, 64, 3, 3)], {"pads": (1, 1, 1, 1)})
    with pytest.raises(TileBudgetError) as info:
        Tiling(l1_bytes=1024, cores=8).run(graph)
    message = str(info.value)
    assert "layer 'layer' (forward, conv2d)" in message and "budget is 1024" in message
    needed = int(message.split("needs ")[1].split(" bytes")[0])
    assert needed > 1024


def test_budget_is_respected_on_the_examples() -> None:
    from pathlib import Path

    from tinyodl.driver.options import Options
    from tinyodl.driver.pipeline import build_training_graph

    root = Path(__file__).resolve().parents[2] / "examples"
    for budget in (8 * 1024, 32 * 1024):
        graph = build_training_graph(root / "dscnn.onnx", Options(l1_bytes=budget))
        loops = [op for op in graph.ops if op.type == "tile_loop"]
        assert loops and all(int(op.attrs["l1_bytes"]) <= budget for op in loops)
        assert any(int(op.attrs["tiles"]) > 1 for op in loops)
        kernels = {op.attrs["tiled_op"] for op in loops}
        assert {"conv2d", "conv2d_grad_input", "conv2d_grad_weight", "batchnorm", "sgd_update"} <= kernels

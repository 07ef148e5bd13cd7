"""precision: IR text in -> IR text out for the fp16, bf16 and mixed policies, per-node overrides, loss
scaling and cast fusion; the result always verifies and round-trips through the text format."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from tinyodl.ir.executor import Executor
from tinyodl.ir.graph import Graph
from tinyodl.ir.text import parse_graph, print_graph
from tinyodl.ir.types import DType, Phase, Role
from tinyodl.ir.verify import verify_graph
from tinyodl.passes.manager import PassError, PassManager, PassOptionError, parse_pipeline


def ir(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


NET = ir("""
    graph @"net" {
      input %x : 4x6xf32
      param %w : 3x6xf32 from "fc.weight"
      param %b : 3xf32 from "fc.bias"
      %h = gemm(%x, %w, %b) {trans_b = 1} : act<4x3xf32> forward "fc"
      %y = relu(%h) : act<4x3xf32> forward "act"
      return %y
    }""")

CONV_BN = ir("""
    graph @"cbn" {
      input %x : 2x2x5x5xf32
      param %w : 3x2x3x3xf32
      param %gamma : 3xf32
      param %beta : 3xf32
      param %mean : 3xf32
      param %var : 3xf32
      param %fc : 4x75xf32
      %c = conv2d(%x, %w) {pads = [1, 1, 1, 1]} : act<2x3x5x5xf32> forward "conv"
      %n = batchnorm(%c, %gamma, %beta, %mean, %var) : act<2x3x5x5xf32> forward "bn"
      %f = reshape(%n) {shape = [2, 75]} : act<2x75xf32> forward "flatten"
      %y = gemm(%f, %fc) {trans_b = 1} : act<2x4xf32> forward "head"
      return %y
    }""")


def run(pipeline: str, text: str = NET) -> Graph:
    graph = parse_graph(text)
    PassManager(parse_pipeline(pipeline)).run(graph)
    printed = print_graph(graph)
    assert print_graph(parse_graph(printed)) == printed
    return graph


def test_mixed_keeps_fp32_masters_scales_the_loss_and_fuses_the_gradient_casts() -> None:
    graph = run("training{loss=mse;lr=0.1},precision{dtype=mixed;growth_interval=3}")
    assert print_graph(graph) == ir("""
        graph @"net" {
          input %x : 4x6xf16
          input %target : 4x3xf32
          param %w : 3x6xf32 trainable from "fc.weight"
          param %b : 3xf32 trainable from "fc.bias"
          state %amp.scale : f32
          state %amp.growth_tracker : i32
          %w.f16 = cast(%w) {to = "f16"} : act<3x6xf16> forward "fc"
          %b.f16 = cast(%b) {to = "f16"} : act<3xf16> forward "fc"
          %h = gemm(%x, %w.f16, %b.f16) {trans_b = 1} : act<4x3xf16> forward "fc"
          %y = relu(%h) : act<4x3xf16> forward "act"
          %y.f32 = cast(%y) {to = "f32"} : act<4x3xf32> forward "mse_loss"
          %loss = mse_loss(%y.f32, %target) : loss<f32> loss "mse_loss"
          %y.grad = mse_loss_grad(%y.f32, %target) : grad<4x3xf32> backward "mse_loss"
          %y.grad.scaled = amp_scale(%y.grad, %amp.scale) : grad<4x3xf32> backward "mse_loss"
          %y.grad.f16 = cast(%y.grad.scaled) {to = "f16"} : grad<4x3xf16> backward "act"
          %h.grad = relu_grad(%y.grad.f16, %h) : grad<4x3xf16> backward "act"
          %w.grad = gemm(%h.grad, %x) {alpha = 1.0, beta = 0.0, out_dtype = "f32", trans_a = 1, trans_b = 0} : \
grad<3x6xf32> backward "fc"
          %h.reduce_sum = reduce_sum(%h.grad) {axes = [0], keepdims = 1, out_dtype = "f32", scale = 1.0} : \
grad<1x3xf32> backward "fc"
          %b.grad = reshape(%h.reduce_sum) {shape = [3]} : grad<3xf32> backward "fc"
          %w.grad.unscaled, %amp.found_inf = amp_unscale(%w.grad, %amp.scale) {to = "f32"} : grad<3x6xf32>, \
grad<i32> update "fc"
          %b.grad.unscaled, %amp.found_inf.1 = amp_unscale(%b.grad, %amp.scale, %amp.found_inf) {to = "f32"} : \
grad<3xf32>, grad<i32> update "fc"
          sgd_update(%w, %w.grad.unscaled, %amp.found_inf.1) {guard = 1, lr = 0.1, momentum = 0.0, nesterov = 0, \
weight_decay = 0.0} update "fc"
          sgd_update(%b, %b.grad.unscaled, %amp.found_inf.1) {guard = 1, lr = 0.1, momentum = 0.0, nesterov = 0, \
weight_decay = 0.0} update "fc"
          amp_update_scale(%amp.scale, %amp.growth_tracker, %amp.found_inf.1) {backoff_factor = 0.5, \
growth_factor = 2.0, growth_interval = 3} update "loss_scale"
          return %loss
        }
        """).replace("\\\n", "")
    assert graph.initial["amp.scale"] == np.float32(65536.0)


def test_fp16_stores_everything_in_fp16_and_an_fp32_node_gets_casts_both_ways() -> None:
    graph = run("training{loss=mse;optimizer=adam},precision{dtype=fp16;overrides=act=fp32}")
    text = print_graph(graph)
    for line in ("param %w : 3x6xf16 trainable", "state %w.exp_avg_sq : 3x6xf16", "input %target : 4x3xf16",
                 "%loss = mse_loss(%y.f16, %target) : loss<f16>",
                 # the fc result feeds only the fp32 node's casts: the gemm writes fp32 itself
                 '%h = gemm(%x, %w, %b) {out_dtype = "f32", trans_b = 1} : act<4x3xf32> forward "fc"',
                 "%y = relu(%h) : act<4x3xf32>", '%y.grad.f32 = cast(%y.grad) {to = "f32"} : grad<4x3xf32>',
                 "%h.grad = relu_grad(%y.grad.f32, %h) : grad<4x3xf32>",
                 '%h.grad.f16 = cast(%h.grad) {to = "f16"} : grad<4x3xf16> backward "fc"'):
        assert line in text, line
    assert "amp_" not in text  # loss scaling is off by default outside mixed


def test_bf16_with_a_fixed_loss_scale_has_no_scale_update() -> None:
    graph = run("training{loss=mse;momentum=0.9},precision{dtype=bf16;loss_scale=128}")
    floats = [v for v in graph.all_values() if v.dtype.is_float and v.name != "amp.scale"]
    assert {v.dtype for v in floats} == {DType.BF16}
    scale = next(v for v in graph.params if v.name == "amp.scale")
    assert scale.role is Role.CONST and graph.initial["amp.scale"] == 128.0
    assert [op.type for op in graph.ops if op.phase is Phase.UPDATE] == [
        "amp_unscale", "amp_unscale", "sgd_update", "sgd_update"]
    assert all(op.attrs.get("guard") == 1 for op in graph.ops if op.type == "sgd_update")


def test_mixed_batch_norm_keeps_fp32_statistics_and_frozen_weights_go_fp16() -> None:
    graph = run("training{train=head.weight;loss=mse},precision{dtype=mixed}".replace("head.weight", "fc"), CONV_BN)
    dtypes = {v.name: v.dtype for v in graph.all_values()}
    assert dtypes["mean"] is DType.F32 and dtypes["var"] is DType.F32
    assert dtypes["w"] is DType.F16 and dtypes["gamma"] is DType.F16 and dtypes["fc"] is DType.F32
    bn = next(op for op in graph.ops if op.type == "batchnorm")
    assert [v.dtype for v in bn.inputs] == [DType.F16] * 3 + [DType.F32] * 2
    flatten = next(op for op in graph.ops if op.type == "reshape")
    assert flatten.outputs[0].dtype is DType.F16  # a view keeps its source's dtype


def test_mixed_without_loss_scaling_fuses_the_weight_gradient_cast_into_the_kernel() -> None:
    graph = run("training{loss=mse},precision{dtype=mixed;loss_scale=none}", CONV_BN)
    grad_weight = [op for op in graph.ops if op.type == "gemm" and op.phase is Phase.BACKWARD
                   and op.outputs[0].name == "fc.grad"]
    assert grad_weight and grad_weight[0].attrs["out_dtype"] == "f32"
    conv_grad = next(op for op in graph.ops if op.type == "conv2d_grad_weight")
    assert conv_grad.attrs["out_dtype"] == "f32" and conv_grad.outputs[0].dtype is DType.F32
    bn_grad = next(op for op in graph.ops if op.type == "batchnorm_grad_params")
    assert [v.dtype for v in bn_grad.outputs] == [DType.F32, DType.F32]
    assert not any(op.type == "cast" and op.phase is Phase.UPDATE for op in graph.ops)
    assert not any(op.type.startswith("amp_") for op in graph.ops)


def test_without_fusion_every_boundary_keeps_its_cast() -> None:
    fused = run("training{loss=mse},precision{dtype=mixed;loss_scale=none}")
    unfused = run("training{loss=mse},precision{dtype=mixed;loss_scale=none;fuse_casts=0}")
    assert sum(op.type == "cast" for op in unfused.ops) == sum(op.type == "cast" for op in fused.ops) + 2
    assert not any("out_dtype" in op.attrs for op in unfused.ops)


def test_fp32_policy_changes_nothing() -> None:
    reference = run("training{loss=mse}")
    assert print_graph(run("training{loss=mse},precision{dtype=fp32}")) == print_graph(reference)


def test_forward_only_graph_gets_no_loss_scaling() -> None:
    graph = run("training{train=none;loss=mse},precision{dtype=mixed}")
    assert not any(op.type.startswith("amp_") for op in graph.ops)
    assert graph.outputs[0].dtype is DType.F32


@pytest.mark.parametrize("options,message", [
    ("dtype=fp8", "--dtype fp8: choose from fp32, fp16, bf16, mixed"),
    ("overrides=nowhere=fp32", "--precision nowhere=fp32: the model has no node 'nowhere'"),
    ("overrides=fc=fp64", "--precision fc=fp64: the dtype must be fp32, fp16 or bf16, got 'fp64'"),
    ("overrides=fc", "--precision fc: expected NODE=DTYPE"),
    ("loss_scale=lots", "--loss-scale lots: expected dynamic, none or a number"),
    ("loss_scale=-1", "--loss-scale -1: a fixed scale must be a finite number > 0"),
    ("dtype=mixed;backoff_factor=1.5", "loss scaling needs"),
])
def test_bad_options_are_one_line_errors(options: str, message: str) -> None:
    with pytest.raises(PassOptionError) as info:
        run(f"training{{loss=mse}},precision{{{options}}}")
    assert str(info.value).startswith(message)


def test_precision_runs_once_and_before_tiling() -> None:
    with pytest.raises(PassError, match="precision runs once, after training and before tiling"):
        run("training{loss=mse},precision{dtype=fp16},precision{dtype=fp16}")
    with pytest.raises(PassError, match="precision runs once"):
        run("training{loss=mse},tiling,precision{dtype=fp16}")


def test_a_node_override_in_a_pipeline_names_any_node_even_with_an_equals_sign() -> None:
    text = NET.replace('"act"', '"a=b"')
    graph = run("training{loss=mse},precision{dtype=bf16;overrides=a=b=fp16}", text)
    relu = next(op for op in graph.ops if op.type == "relu")
    assert relu.outputs[0].dtype is DType.F16 and relu.node == "a=b"


def test_the_mixed_graph_trains_and_skips_a_step_whose_gradients_overflow() -> None:
    graph = run("training{loss=mse;lr=0.05},precision{dtype=mixed;init_scale=1e8;growth_interval=2}")
    rng = np.random.default_rng(3)
    graph.initial.update({"w": rng.standard_normal((3, 6)).astype(np.float32),
                          "b": rng.standard_normal(3).astype(np.float32)})
    verify_graph(graph)
    executor = Executor(graph)
    feed = {"x": rng.standard_normal((4, 6)), "target": rng.standard_normal((4, 3))}
    scales, weights, found = [], [], []
    for _ in range(40):
        scales.append(float(executor.param("amp.scale")))
        weights.append(executor.param("w").copy())
        with np.errstate(all="ignore"):  # the overflowing steps compute infinities on purpose
            found.append(int(executor.run(feed)["amp.found_inf.1"]))
    scales.append(float(executor.param("amp.scale")))
    weights.append(executor.param("w").copy())
    # A scale of 1e8 overflows fp16: the first steps are skipped and the scale backs off until it fits.
    first = found.index(0)
    assert first > 10 and all(found[:first])
    for step in range(40):
        if found[step]:
            assert np.array_equal(weights[step], weights[step + 1]) and scales[step + 1] == scales[step] / 2
        else:
            assert not np.array_equal(weights[step], weights[step + 1])
    # GradScaler's growth: two clean steps in a row double the scale, and the count restarts.
    assert found[first:first + 2] == [0, 0] and scales[first + 2] == 2 * scales[first]
    assert scales[first + 1] == scales[first]


def test_tiles_are_planned_in_bytes_of_the_real_dtype() -> None:
    from tinyodl.ir.graph import Op
    from tinyodl.ir.tiling import make_plan
    from tinyodl.ir.types import TensorType
    from tinyodl.passes.tiling import choose_plan

    def conv(dtype: DType) -> Op:
        graph = Graph("c")
        x = graph.add_input("x", TensorType((1, 16, 32, 32), dtype))
        w = graph.add_param("w", np.zeros((16, 16, 3, 3)), TensorType((16, 16, 3, 3), dtype))
        y = graph.new_value("y", TensorType((1, 16, 32, 32), dtype), Role.ACT)
        return Op("conv2d", [x, w], [y], {"pads": (1, 1, 1, 1)}, Phase.FORWARD, "conv")

    sizes = {"n": 1, "oh": 8, "k": 16, "c": 16}
    half = make_plan("conv2d", [v.type for v in conv(DType.F16).inputs], [v.type for v in conv(DType.F16).outputs],
                     conv(DType.F16).attrs, sizes)
    full = make_plan("conv2d", [v.type for v in conv(DType.F32).inputs], [v.type for v in conv(DType.F32).outputs],
                     conv(DType.F32).attrs, sizes)
    assert [o.itemsize for o in half.operands] == [2, 2, 2] and [o.itemsize for o in full.operands] == [4, 4, 4]
    assert half.l1_bytes() * 2 == full.l1_bytes()
    assert [b // 2 for b in full.dma_bytes()] == list(half.dma_bytes())
    # With the same L1 budget an fp16 tile holds twice the elements of an fp32 one.
    budget = 40000
    tile16, tile32 = choose_plan(conv(DType.F16), budget, 8), choose_plan(conv(DType.F32), budget, 8)
    assert tile16.l1_bytes() <= budget and tile32.l1_bytes() <= budget
    elements = [max(np.prod(p.max_box(o)) for o in p.operands if o.name == "y") for p in (tile16, tile32)]
    assert elements[0] >= 2 * elements[1]


@pytest.mark.parametrize("seed", range(8))
def test_random_policies_and_overrides_on_the_bundled_models_verify_and_train(seed: int) -> None:
    from pathlib import Path

    from tinyodl.driver.data import load_batches
    from tinyodl.driver.options import Options
    from tinyodl.driver.pipeline import build_training_graph
    from tinyodl.driver.reference import run_reference
    from tinyodl.ir.registry import kernel_of, lookup

    rng = np.random.default_rng(seed)
    model = Path(__file__).resolve().parents[2] / "examples" / ["mlp.onnx", "lenet.onnx", "dscnn.onnx"][seed % 3]
    nodes = sorted({op.node for op in build_training_graph(model, Options()).ops})
    chosen = rng.choice(nodes, size=min(3, len(nodes)), replace=False)
    overrides = tuple(f"{node}={rng.choice(['fp32', 'fp16', 'bf16'])}" for node in chosen)
    options = Options.from_kwargs(dtype=str(rng.choice(["fp16", "bf16", "mixed"])), precision=overrides,
                                  optimizer=str(rng.choice(["sgd", "adam"])), momentum=0.9 * (seed % 2),
                                  loss_scale=str(rng.choice(["default", "dynamic", "none", "256"])), lr=0.01)
    graph = build_training_graph(model, options)  # the manager verifies after every pass
    for op in graph.ops:
        assert op.type != "cast" or op.inputs[0].dtype is not op.outputs[0].dtype
    run = run_reference(graph, load_batches(graph, None, 2))
    assert all(np.isfinite(run.losses))
    for node, dtype in (item.rsplit("=", 1) for item in overrides):
        # The node's kernels compute in its dtype: their operands are in it (a fused cast may write the results
        # in the next node's); a view (Flatten) keeps its source's dtype and computes nothing.
        computed = set()
        for op in graph.ops:
            kernel = kernel_of(op.type, op.attrs)[0]
            if op.node != node or op.phase is Phase.UPDATE or kernel in ("cast", "reshape", "amp_scale"):
                continue
            free = lookup(kernel).mixed_operands
            computed |= {v.dtype for i, v in enumerate(op.inputs) if v.dtype.is_float and i not in free}
        assert computed <= {DType.parse(dtype)}, (node, computed)

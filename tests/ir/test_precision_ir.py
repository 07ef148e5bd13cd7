"""Reduced precision in the IR: fp16/bf16 dtypes in the text format, the cast op and its gradient rule,
the loss-scaling ops, and the verifier's per-op dtype rules."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl.ir.executor import Executor
from tinyodl.ir.registry import IRError, infer_types, lookup
from tinyodl.ir.text import parse_graph, print_graph
from tinyodl.ir.types import DType, TensorType
from tinyodl.ir.verify import verify_graph
from tinyodl.passes.manager import PassManager, parse_pipeline

MIXED = """\
graph @"mixed" {
  input %x : 4x3xf16
  input %t : 4xi64
  param %w : 2x3xf32 trainable
  param %mean : 2xf32
  state %amp.scale : f32
  state %amp.growth : i32
  %w.f16 = cast(%w) {to = "f16"} : act<2x3xf16> forward "fc"
  %y = gemm(%x, %w.f16) {alpha = 1.0, beta = 1.0, trans_a = 0, trans_b = 1} : act<4x2xbf16> forward "fc"
  return %y
}
"""


def test_reduced_dtypes_have_their_target_sizes_and_host_types() -> None:
    assert (DType.F16.itemsize, DType.BF16.itemsize, DType.F32.itemsize) == (2, 2, 4)
    assert DType.BF16.numpy == np.float32 and DType.F16.numpy == np.float16
    assert all(d.is_float for d in (DType.F32, DType.F16, DType.BF16)) and not DType.I32.is_float
    assert TensorType((3, 5), DType.BF16).nbytes == 30
    assert DType.parse("fp16") is DType.F16 and DType.parse("bf16") is DType.BF16
    with pytest.raises(ValueError):
        DType.parse("i32")


def test_text_round_trip_with_casts_loss_scaling_and_generic_attributes() -> None:
    text = """\
graph @"amp" {
  input %x : 4x3xf16
  input %t : 4x2xf32
  param %w : 2x3xf32 trainable
  state %amp.scale : f32
  state %amp.growth : i32
  %w.f16 = cast(%w) {to = "f16"} : act<2x3xf16> forward "fc"
  %y = gemm(%x, %w.f16) {alpha = 1.0, beta = 1.0, trans_a = 0, trans_b = 1} : act<4x2xf16> forward "fc"
  %y.f32 = cast(%y) {to = "f32"} : act<4x2xf32> loss "mse_loss"
  %loss = mse_loss(%y.f32, %t) : loss<f32> loss "mse_loss"
  %dy = mse_loss_grad(%y.f32, %t) : grad<4x2xf32> backward "mse_loss"
  %dy.scaled = amp_scale(%dy, %amp.scale) : grad<4x2xf32> backward "mse_loss"
  %dy.f16 = cast(%dy.scaled) {to = "f16"} : grad<4x2xf16> backward "mse_loss"
  %dw = gemm(%dy.f16, %x) {alpha = 1.0, beta = 0.0, out_dtype = "f32", trans_a = 1, trans_b = 0} : grad<2x3xf32> \
backward "fc"
  %dw.u, %amp.found_inf = amp_unscale(%dw, %amp.scale) {to = "f32"} : grad<2x3xf32>, grad<i32> update "fc"
  sgd_update(%w, %dw.u, %amp.found_inf) {guard = 1, lr = 0.1, momentum = 0.0, nesterov = 0, weight_decay = 0.0} \
update "fc"
  amp_update_scale(%amp.scale, %amp.growth, %amp.found_inf) {backoff_factor = 0.5, growth_factor = 2.0, \
growth_interval = 3} update "loss_scale"
  return %loss
}
""".replace("\\\n", "")
    graph = parse_graph(text)
    verify_graph(graph)
    assert print_graph(graph) == text
    assert graph.ops[3].inputs[0].dtype is DType.F32 and graph.ops[6].outputs[0].dtype is DType.F16


@pytest.mark.parametrize("line,message", [
    pytest.param('%y = gemm(%x, %w) {trans_b = 1} : act<4x2xf16> forward "fc"',
                 "gemm: operand 1 is f32 while operand 0 is f16; the op computes in one dtype (cast the operand)",
                 id="mixed operands"),
    pytest.param('%y = cast(%x) {to = "f64"} : act<4x3xf16> forward "c"',
                 "cast: to must be a float dtype (f32, f16, bf16), got 'f64'", id="cast to a non-float"),
    pytest.param('%y = cast(%t) {to = "f16"} : act<4xf16> forward "c"',
                 "cast: operand must be a float tensor, got 4xi64", id="cast of labels"),
    pytest.param('%y = relu(%x) {out_dtype = "f32"} : act<4x3xf32> forward "r"',
                 "relu: cannot write its results in another dtype (no attribute 'out_dtype')", id="out_dtype on relu"),
    pytest.param('%y = relu(%x) {guard = 1} : act<4x3xf16> forward "r"',
                 "relu: only an op that writes in place can be guarded", id="guard on relu"),
    pytest.param('sgd_update(%w, %w, %mean) {guard = 1, lr = 0.1} update "w"',
                 "sgd_update: the guard (last operand) must be an integer scalar, got 2xf32", id="float guard"),
    pytest.param('amp_update_scale(%mean, %amp.growth, %amp.growth) update "s"',
                 "amp_update_scale: the loss scale must be an f32 scalar, got 2xf32", id="scale not scalar"),
    pytest.param('%y, %f = amp_unscale(%x, %amp.growth) {to = "f32"} : grad<4x3xf32>, grad<i32> update "s"',
                 "amp_unscale: the loss scale must be an f32 scalar, got i32", id="integer scale"),
])
def test_verifier_rejects_dtypes_an_op_does_not_take(line: str, message: str) -> None:
    graph = parse_graph(MIXED.replace("  return %y\n", f"  {line}\n  return %x\n").replace(
        '  %y = gemm(%x, %w.f16) {alpha = 1.0, beta = 1.0, trans_a = 0, trans_b = 1} : act<4x2xbf16> forward "fc"\n',
        ""))
    with pytest.raises(IRError) as info:
        verify_graph(graph)
    assert str(info.value).endswith(message), str(info.value)


def test_declared_result_dtype_must_match_the_inferred_one() -> None:
    with pytest.raises(IRError, match=r"result %y declared 4x2xbf16, inferred 4x2xf16"):
        verify_graph(parse_graph(MIXED))


def test_batch_norm_takes_fp32_statistics_beside_fp16_activations() -> None:
    x16, c16, c32 = TensorType((2, 3, 4, 4), DType.F16), TensorType((3,), DType.F16), TensorType((3,), DType.F32)
    assert infer_types("batchnorm", [x16, c16, c16, c32, c32], {})[0].dtype is DType.F16
    with pytest.raises(IRError, match="operand 1 is f32 while operand 0 is f16"):
        infer_types("batchnorm", [x16, c32, c16, c32, c32], {})
    assert lookup("batchnorm_grad_params").casts_results and not lookup("relu").casts_results


def test_the_gradient_of_a_cast_casts_the_gradient_back() -> None:
    graph = parse_graph("""\
graph @"c" {
  input %x : 4x3xf32
  input %t : 4x2xf32
  param %w : 2x3xf32 trainable
  %w.h = cast(%w) {to = "bf16"} : act<2x3xbf16> forward "fc"
  %x.h = cast(%x) {to = "bf16"} : act<4x3xbf16> forward "fc"
  %y = gemm(%x.h, %w.h) {trans_b = 1} : act<4x2xbf16> forward "fc"
  %y.f = cast(%y) {to = "f32"} : act<4x2xf32> forward "fc"
  return %y.f
}
""")
    PassManager(parse_pipeline("training{loss=mse}")).run(graph)
    casts = [op for op in graph.ops if op.type == "cast" and op.phase.value == "backward"]
    assert [(op.inputs[0].dtype.value, op.attrs["to"]) for op in casts] == [("f32", "bf16"), ("bf16", "f32")]
    update = next(op for op in graph.ops if op.type == "sgd_update")
    assert update.inputs[1].dtype is DType.F32 and update.inputs[1].producer is casts[-1]


def test_a_guarded_update_is_skipped_while_its_flag_is_set() -> None:
    graph = parse_graph("""\
graph @"g" {
  input %g : 3xf32
  input %flag : i32
  param %w : 3xf32 trainable
  state %w.momentum : 3xf32
  sgd_update(%w, %g, %w.momentum, %flag) {guard = 1, lr = 0.5, momentum = 0.9} update "w"
  return %g
}
""")
    graph.initial.update({"w": np.array([1.0, 2.0, 3.0]), "w.momentum": np.zeros(3)})
    verify_graph(graph)
    executor = Executor(graph)
    executor.run({"g": np.ones(3), "flag": np.array(1)})
    assert executor.param("w").tolist() == [1.0, 2.0, 3.0] and executor.param("w.momentum").tolist() == [0, 0, 0]
    executor.run({"g": np.ones(3), "flag": np.array(0)})
    assert executor.param("w").tolist() == [0.5, 1.5, 2.5] and executor.param("w.momentum").tolist() == [1, 1, 1]

"""The reference executor in reduced precision: bf16/fp16 rounding against torch's conversions (ties,
subnormals, overflow, infinities, NaN), op results rounded once as torch's fp16/bf16 CPU ops round them,
and the loss-scaling ops step for step against torch.amp.GradScaler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyodl.ir.executor import Executor
from tinyodl.ir.graph import Graph, Op
from tinyodl.ir.rounding import bf16_bits, bf16_to_float32, round_to
from tinyodl.ir.types import DType, Phase, Role, TensorType
from tinyodl.ir.verify import verify_graph

TORCH = {DType.F16: torch.float16, DType.BF16: torch.bfloat16}


def hard_float32_values() -> np.ndarray:
    """Random magnitudes over the whole range, values exactly halfway between two bf16/fp16 numbers (both
    parities), subnormals, the largest finite values and the specials."""
    rng = np.random.default_rng(0)
    random = (rng.standard_normal(4000) * np.exp2(rng.integers(-140, 127, 4000))).astype(np.float32)
    mantissas = rng.integers(0, 1 << 23, 500, dtype=np.uint32)
    exponents = rng.integers(1, 254, 500, dtype=np.uint32) << np.uint32(23)
    bf16_ties = ((exponents | (mantissas & ~np.uint32(0xFFFF))) | np.uint32(0x8000)).view(np.float32)
    fp16_ties = (np.float32(1.0) + (rng.integers(0, 1024, 500) * 2 + 1) * np.float32(2.0 ** -11)) \
        * np.exp2(rng.integers(-14, 15, 500)).astype(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.finfo(np.float32).max, -np.finfo(np.float32).max,
                         np.finfo(np.float32).tiny, 1e-45, -1e-45, 65504.0, 65520.0, 65519.99, 6e-8, 3e-8,
                         6.0e-5, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8], np.float32)
    return np.concatenate([random, -random[:100], bf16_ties, -bf16_ties[:50], fp16_ties, specials])


@pytest.mark.parametrize("dtype", [DType.BF16, DType.F16], ids=["bf16", "fp16"])
def test_rounding_matches_torch_conversions_bit_for_bit(dtype: DType) -> None:
    values = hard_float32_values()
    ours = round_to(values.astype(np.float64), dtype).astype(np.float32)
    theirs = torch.from_numpy(values).to(TORCH[dtype]).to(torch.float32).numpy()
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


def test_bf16_keeps_nans_and_their_sign() -> None:
    payloads = np.array([0x7F800001, 0x7FC00000, 0xFF800001, 0x7FFFFFFF, 0xFFFF0001], np.uint32).view(np.float32)
    bits = bf16_bits(payloads)
    assert np.all(np.isnan(bf16_to_float32(bits)))
    assert [int(b) >> 15 for b in bits] == [0, 0, 1, 0, 1]
    assert bf16_bits(np.array([np.inf, -np.inf], np.float32)).tolist() == [0x7F80, 0xFF80]
    assert round_to(np.array(3.0), DType.BF16).shape == ()


def elementwise_graph(op_type: str, dtype: DType, arity: int, attrs: dict | None = None) -> Graph:  # type: ignore[type-arg]
    graph = Graph(op_type)
    t = TensorType((64, 33), dtype)
    inputs = [graph.add_input(f"in{i}", t) for i in range(arity)]
    out = graph.new_value("out", t, Role.ACT)
    graph.append(Op(op_type, inputs, [out], attrs or {}, Phase.FORWARD, "n"))
    graph.outputs = [out]
    verify_graph(graph)
    return graph


@pytest.mark.parametrize("dtype", [DType.BF16, DType.F16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("op_type,arity,torch_fn", [
    ("add", 2, torch.add), ("relu", 1, torch.relu), ("relu_grad", 2, lambda dy, x: torch.where(x > 0, dy, 0 * dy)),
])
def test_a_single_operation_rounds_like_torch_bit_for_bit(dtype: DType, op_type: str, arity: int, torch_fn) -> None:  # type: ignore[no-untyped-def]
    # One float32 operation rounded to fp16 (bf16) equals the correctly rounded fp16 (bf16) result, which is
    # what torch's CPU half-precision ops return: the executor must agree to the bit.
    rng = np.random.default_rng(1)
    raw = [round_to(rng.standard_normal((64, 33)) * 100, dtype) for _ in range(arity)]
    env = Executor(elementwise_graph(op_type, dtype, arity)).run({f"in{i}": a for i, a in enumerate(raw)})
    expected = torch_fn(*[torch.from_numpy(a).to(TORCH[dtype]) for a in raw]).to(torch.float64).numpy()
    np.testing.assert_array_equal(env["out"], expected)


@pytest.mark.parametrize("dtype", [DType.BF16, DType.F16], ids=["bf16", "fp16"])
def test_a_compound_op_is_within_half_an_ulp_of_the_exact_result(dtype: DType) -> None:
    # Sigmoid is evaluated exactly and rounded once: torch's half-precision sigmoid (computed in float32)
    # may differ by one unit in the last place, never more.
    rng = np.random.default_rng(2)
    x = round_to(rng.standard_normal((64, 33)) * 4, dtype)
    env = Executor(elementwise_graph("sigmoid", dtype, 1)).run({"in0": x})
    exact = 1.0 / (1.0 + np.exp(-x))
    spacing = np.abs(np.spacing(np.float16(exact))).astype(np.float64) if dtype is DType.F16 \
        else np.abs(exact) * 2.0 ** -7
    assert np.all(np.abs(env["out"] - exact) <= 0.5 * spacing + 1e-12)
    theirs = torch.sigmoid(torch.from_numpy(x).to(TORCH[dtype])).to(torch.float64).numpy()
    assert np.all(np.abs(env["out"] - theirs) <= spacing)


def test_gemm_accumulates_exactly_and_rounds_its_result_once() -> None:
    rng = np.random.default_rng(4)
    a, b = round_to(rng.standard_normal((8, 300)), DType.F16), round_to(rng.standard_normal((300, 5)), DType.F16)
    graph = Graph("mm")
    values = [graph.add_input("a", TensorType(a.shape, DType.F16)), graph.add_input("b", TensorType(b.shape, DType.F16))]
    y16 = graph.new_value("y16", TensorType((8, 5), DType.F16), Role.ACT)
    y32 = graph.new_value("y32", TensorType((8, 5), DType.F32), Role.ACT)
    graph.append(Op("gemm", values, [y16], {}, Phase.FORWARD, "mm"))
    graph.append(Op("gemm", values, [y32], {"out_dtype": "f32"}, Phase.FORWARD, "mm"))
    graph.outputs = [y16, y32]
    verify_graph(graph)
    env = Executor(graph).run({"a": a, "b": b})
    exact = torch.from_numpy(a) @ torch.from_numpy(b)  # float64
    np.testing.assert_allclose(env["y32"], exact.numpy(), rtol=1e-13)
    np.testing.assert_array_equal(env["y16"], exact.to(torch.float32).to(torch.float16).to(torch.float64).numpy())


def scaler_graph(shape: tuple[int, ...], init_scale: float, growth_interval: int) -> Graph:
    """The loss-scaling steps around one SGD update, fed the raw gradient (d loss / d w) as an input."""
    graph = Graph("scaler")
    t = TensorType(shape, DType.F32)
    w = graph.add_param("w", np.ones(shape, np.float32), t, trainable=True)
    grad = graph.add_input("grad", t)
    scale = graph.add_state("amp.scale", TensorType((), DType.F32), np.float32(init_scale))
    tracker = graph.add_state("amp.growth_tracker", TensorType((), DType.I32))
    scaled = graph.new_value("grad.scaled", t, Role.GRAD)
    unscaled = graph.new_value("grad.unscaled", t, Role.GRAD)
    found = graph.new_value("found_inf", TensorType((), DType.I32), Role.GRAD)
    graph.append(Op("amp_scale", [grad, scale], [scaled], {}, Phase.BACKWARD, "loss"))
    graph.append(Op("amp_unscale", [scaled, scale], [unscaled, found], {"to": "f32"}, Phase.UPDATE, "w"))
    graph.append(Op("sgd_update", [w, unscaled, found], [], {"lr": 0.1, "guard": 1}, Phase.UPDATE, "w"))
    graph.append(Op("amp_update_scale", [scale, tracker, found], [],
                    {"growth_interval": growth_interval, "growth_factor": 2.0, "backoff_factor": 0.5},
                    Phase.UPDATE, "loss_scale"))
    graph.outputs = [found]
    verify_graph(graph)
    return graph


def test_loss_scaling_follows_torch_grad_scaler_step_for_step() -> None:
    factors = [1.0, 2.0, np.inf, 0.5, 1.0, np.nan, 1.0, 1.0, 1.0, 1.0, -np.inf, 3.0, 1.0, 1.0]
    graph = scaler_graph((3,), 1024.0, growth_interval=3)
    executor = Executor(graph)
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_factor=2.0, backoff_factor=0.5,
                                  growth_interval=3)
    weights = np.array([0.5, -1.0, 2.0])
    for step, factor in enumerate(factors):
        optimizer.zero_grad()
        loss = (param * torch.from_numpy(weights).float() * factor).sum()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        with np.errstate(invalid="ignore"):
            env = executor.run({"grad": weights * factor})
        assert bool(env["found_inf"]) == (not np.isfinite(factor)), step
        assert float(executor.param("amp.scale")) == scaler.get_scale(), step
        np.testing.assert_allclose(executor.param("w"), param.detach().numpy(), rtol=1e-6, err_msg=str(step))


def test_the_scale_stops_growing_where_float32_would_overflow() -> None:
    graph = scaler_graph((2,), 2.0 ** 127, growth_interval=1)
    executor = Executor(graph)
    executor.run({"grad": np.zeros(2)})
    assert float(executor.param("amp.scale")) == 2.0 ** 127 and int(executor.param("amp.growth_tracker")) == 0

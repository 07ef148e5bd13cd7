"""Reduced precision through the API and the CLI: --dtype, --precision NODE=DTYPE, loss-scaling options,
the reference report (scale per step, skipped steps, distance to fp32), float16 ONNX models, and the
one-line refusal of the targets that need C kernels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tinyodl
from tinyodl.driver.options import Options
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.ir.types import DType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinyodl", *args], capture_output=True, text=True, timeout=300)


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("tinyodl: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def fp16_model(path: Path) -> Path:
    """A float16 model: float16 input, initializers and output."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((5, 8)).astype(np.float16), "fc.weight")
    bias = numpy_helper.from_array(rng.standard_normal(5).astype(np.float16), "fc.bias")
    nodes = [helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["h"], name="fc", transB=1),
             helper.make_node("Relu", ["h"], ["y"], name="act")]
    graph = helper.make_graph(nodes, "half", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4, 5])], [weight, bias])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_mixed_reference_run_reports_the_scale_of_every_step_and_the_distance_to_fp32() -> None:
    result = tinyodl.simulate(EXAMPLES / "mlp.onnx", target="reference", steps=8, lr=0.05, dtype="mixed",
                              loss_scale_init=2.0 ** 20, loss_scale_interval=2)
    steps = result.report["steps"]
    assert [s["loss"] for s in steps] == result.losses
    section = result.report["precision"]
    # 2^20 overflows this model's fp16 gradients: skipped steps until the scale fits, then growth.
    skipped = section["skipped_steps"]
    assert 0 in skipped and len(skipped) < 8
    assert [s["skipped"] for s in steps] == [i in skipped for i in range(8)]
    scales = [s["loss_scale"] for s in steps]
    expected, clean = [2.0 ** 20], 0
    for step in range(7):  # GradScaler's rules, driven by the skips the run reports
        if step in skipped:
            expected.append(expected[-1] / 2)
            clean = 0
        else:
            clean += 1
            expected.append(expected[-1] * 2 if clean == 2 else expected[-1])
            clean %= 2
    assert scales == expected
    assert section["loss_scaling"]["scales"] == scales
    versus = section["vs_fp32"]
    fp32 = tinyodl.simulate(EXAMPLES / "mlp.onnx", target="reference", steps=8, lr=0.05)
    assert versus["losses_fp32"] == fp32.losses
    assert versus["loss_abs_diff"] == [abs(a - b) for a, b in zip(result.losses, fp32.losses, strict=True)]
    # The skipped steps kept the initial parameters, so fp32 moved further: the distance shows it.
    assert versus["params_max_rel_l2"] > 0 and set(versus["params"]) == set(fp32.params)
    assert "precision" not in fp32.report and "loss_scale" not in fp32.report["steps"][0]


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_reduced_precision_trains_close_to_fp32(dtype: str) -> None:
    result = tinyodl.simulate(EXAMPLES / "lenet.onnx", target="reference", steps=3, lr=0.05, dtype=dtype)
    versus = result.report["precision"]["vs_fp32"]
    # bf16 keeps 8 bits of mantissa, fp16 11: the loss moves by about their rounding error, not more.
    bound = 0.05 if dtype == "bf16" else 0.01
    assert 0 < versus["loss_max_abs_diff"] < bound
    assert 0 < versus["params_max_rel_l2"] < bound
    assert result.report["precision"]["loss_scaling"] is None and result.report["dtype"] == dtype
    memory = versus["memory"]
    assert 0.45 < memory["l2_peak_bytes"] / memory["l2_peak_bytes_fp32"] < 0.55
    assert 0 < memory["dma_bytes"] <= 0.55 * memory["dma_bytes_fp32"]
    layers = result.report["precision"]["layers"]
    assert layers and all(layer["dtypes"] == [DType.parse(dtype).value] for layer in layers)


def test_per_node_override_from_the_api_as_a_mapping() -> None:
    options = Options.from_kwargs(dtype="bf16", precision={"/fc1/Gemm": "fp32"})
    graph = build_training_graph(EXAMPLES / "mlp.onnx", options)
    by_name = {v.name: v for v in graph.all_values()}
    assert by_name["fc1.weight"].dtype is DType.F32 and by_name["fc2.weight"].dtype is DType.BF16


def test_fp16_onnx_model_is_accepted_and_trains_in_fp16_and_mixed(tmp_path: Path) -> None:
    model = fp16_model(tmp_path / "half.onnx")
    for dtype in ("fp16", "mixed"):
        result = tinyodl.simulate(model, target="reference", steps=2, loss="mse", dtype=dtype)
        assert all(np.isfinite(result.losses))
    saved = tmp_path / "trained.onnx"
    trained = tinyodl.simulate(model, target="reference", steps=1, loss="mse", dtype="fp16", lr=0.1)
    from tinyodl.driver.onnx_io import save_onnx

    save_onnx(model, saved, trained.params)
    weight = next(i for i in onnx.load(saved).graph.initializer if i.name == "fc.weight")
    assert weight.data_type == TensorProto.FLOAT16


def test_fp16_halves_the_l2_plan_and_doubles_the_elements_a_tile_holds() -> None:
    plans = {}
    for dtype in ("fp32", "fp16"):
        graph = build_training_graph(EXAMPLES / "resnet8.onnx", Options.from_kwargs(dtype=dtype, l1_bytes=32768))
        assert graph.memory_plan is not None
        loops = [op for op in graph.ops if op.type == "tile_loop" and op.attrs["tiled_op"] == "conv2d"]
        plans[dtype] = (graph.memory_plan.peak_bytes, loops)
    peak32, loops32 = plans["fp32"]
    peak16, loops16 = plans["fp16"]
    assert 0.45 < peak16 / peak32 < 0.55
    # The same L1 holds tiles of twice the elements: fewer tiles for the layers that had to be cut.
    tiles32 = sum(int(op.attrs["tiles"]) for op in loops32)
    tiles16 = sum(int(op.attrs["tiles"]) for op in loops16)
    assert tiles16 < tiles32
    for loop32, loop16 in zip(loops32, loops16, strict=True):
        assert int(loop16.attrs["l1_bytes"]) <= 32768 and int(loop16.attrs["tiles"]) <= int(loop32.attrs["tiles"])


def test_cli_reference_report_and_one_line_errors(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    result = cli("simulate", str(EXAMPLES / "mlp.onnx"), "--target", "reference", "--steps", "2", "--quiet",
                 "--dtype", "fp16", "--precision", "/fc4/Gemm=fp32", "--loss-scale", "dynamic",
                 "--loss-scale-interval", "1", "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert "loss scaling dynamic" in result.stdout and "fp16 vs the fp32 reference" in result.stdout
    data = json.loads(report.read_text())
    assert data["precision"]["overrides"] == ["/fc4/Gemm=fp32"]
    assert [s["loss_scale"] for s in data["steps"]] == [65536.0, 131072.0]
    one_line_error(cli("ir", str(EXAMPLES / "mlp.onnx"), "--dtype", "mixed", "--precision", "/fc9/Gemm=fp16"),
                   "--precision /fc9/Gemm=fp16", "no node '/fc9/Gemm'")
    one_line_error(cli("ir", str(EXAMPLES / "mlp.onnx"), "--loss-scale", "huge"), "--loss-scale huge")
    one_line_error(cli("simulate", str(EXAMPLES / "mlp.onnx"), "--dtype", "bf16"),
                   "--dtype bf16", "--target qemu", "C kernels")
    out = tmp_path / "project"
    one_line_error(cli("compile", str(EXAMPLES / "mlp.onnx"), "--dtype", "mixed", "-o", str(out)),
                   "--dtype mixed", "compile")
    assert not out.exists()


def test_ir_dump_shows_casts_and_eval_runs_in_reduced_precision(tmp_path: Path) -> None:
    dump = cli("ir", str(EXAMPLES / "mlp.onnx"), "--dtype", "mixed")
    assert dump.returncode == 0, dump.stderr
    assert "%fc1.weight.f16 = tile_loop(%fc1.weight)" in dump.stdout and 'tiled_op = "cast"' in dump.stdout
    assert "amp_update_scale(" in dump.stdout
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, input=rng.standard_normal((3, 64)).astype(np.float32), target=np.array([1, 2, 3]))
    evaluation = tinyodl.evaluate(EXAMPLES / "mlp.onnx", data=data, dtype="fp16")
    fp32 = tinyodl.evaluate(EXAMPLES / "mlp.onnx", data=data)
    assert evaluation.loss != fp32.loss and abs(evaluation.loss - fp32.loss) < 0.01


@pytest.mark.parametrize("dtype,elem", [("bf16", TensorProto.BFLOAT16), ("fp16", TensorProto.FLOAT16)])
def test_training_graph_exports_to_onnx_in_its_dtypes(dtype: str, elem: int) -> None:
    from tinyodl.ir.onnx_export import export_onnx

    graph = build_training_graph(EXAMPLES / "lenet.onnx", Options.from_kwargs(dtype=dtype))
    model = export_onnx(graph)
    onnx.checker.check_model(model)
    weight = next(i for i in model.graph.initializer if i.name == "conv1.weight")
    assert weight.data_type == elem
    exported = numpy_helper.to_array(weight).astype(np.float64)
    np.testing.assert_array_equal(exported, np.asarray(graph.initial["conv1.weight"], np.float64))


def test_a_mixed_run_resumes_with_its_loss_scale(tmp_path: Path) -> None:
    from tinyodl.driver.onnx_io import save_state

    first = tinyodl.simulate(EXAMPLES / "mlp.onnx", target="reference", steps=3, dtype="mixed", momentum=0.9,
                             loss_scale_init=2.0 ** 20, loss_scale_interval=1)
    state = tmp_path / "state.npz"
    save_state(state, first.params, first.state)
    resumed = tinyodl.simulate(EXAMPLES / "mlp.onnx", target="reference", steps=1, dtype="mixed", momentum=0.9,
                               loss_scale_init=2.0 ** 20, loss_scale_interval=1, init_params=state)
    assert resumed.report["steps"][0]["loss_scale"] == float(first.state["amp.scale"])
    assert float(first.state["amp.scale"]) != 2.0 ** 20
    # The fp32 comparison starts from the same parameters and momentum (it has no loss scale to restore).
    plain = tmp_path / "plain.npz"
    save_state(plain, first.params, {k: v for k, v in first.state.items() if not k.startswith("amp.")})
    fp32 = tinyodl.simulate(EXAMPLES / "mlp.onnx", target="reference", steps=1, momentum=0.9, init_params=plain)
    assert resumed.report["precision"]["vs_fp32"]["losses_fp32"] == fp32.losses


@pytest.mark.parametrize("target", ["qemu", "gvsoc"])
def test_every_simulated_target_refuses_reduced_precision_until_its_kernels_exist(target: str) -> None:
    # GVSoC builds the same C as QEMU: neither has fp16/bf16 kernels yet, so both refuse before building
    with pytest.raises(tinyodl.UserError, match=f"--target {target} needs the fp16/bf16 C kernels"):
        tinyodl.simulate(EXAMPLES / "mlp.onnx", target=target, dtype="fp16")
    with pytest.raises(tinyodl.UserError, match=f"eval --target {target} needs the fp16/bf16 C kernels"):
        tinyodl.evaluate(EXAMPLES / "mlp.onnx", data=EXAMPLES / "missing.npz", target=target, dtype="bf16")

"""Model out and in on the command line: --save-onnx, --save-params (every parameter), --save-state and
--init-params (a run split in two equals one long run), `ir --format onnx`; one-line errors, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from tinyodl.driver.evaluate import forward_graph, load_eval_data, reference_outputs
from tinyodl.driver.onnx_io import STATE_PREFIX, init_from
from tinyodl.driver.options import Options
from tinyodl.driver.pipeline import build_training_graph

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MLP = EXAMPLES / "mlp.onnx"


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinyodl", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def digits_like(path: Path, rows: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, input=rng.standard_normal((rows, 64)).astype(np.float32), target=rng.integers(0, 10, rows))
    return path


def assert_one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_saved_onnx_is_valid_and_runs_like_our_forward(tmp_path: Path) -> None:
    train = digits_like(tmp_path / "train.npz", 4)
    result = run("simulate", MLP, "--target", "reference", "--data", train, "--steps", "4", "--lr", "0.05",
                 "--train", "last:1", "--save-onnx", tmp_path / "out.onnx", "--save-params", tmp_path / "p.npz",
                 "--quiet")
    assert result.returncode == 0, result.stderr
    saved = onnx.load(str(tmp_path / "out.onnx"))
    onnx.checker.check_model(saved, full_check=True)
    original = onnx.load(str(MLP))
    assert {init.name for init in saved.graph.initializer} == {init.name for init in original.graph.initializer}
    params = np.load(tmp_path / "p.npz")
    assert set(params.files) == {init.name for init in original.graph.initializer
                                 if init.data_type == onnx.TensorProto.FLOAT}
    changed = [init.name for init, before in zip(saved.graph.initializer, original.graph.initializer, strict=True)
               if not np.array_equal(onnx.numpy_helper.to_array(init), onnx.numpy_helper.to_array(before))]
    assert changed == ["fc4.weight", "fc4.bias"]  # --train last:1: only the last layer learned, the rest as it was

    test = digits_like(tmp_path / "test.npz", 5, seed=3)
    graph = forward_graph(MLP, Options())
    init_from(graph, tmp_path / "p.npz", MLP, fold_bn=False)
    ours = reference_outputs(graph, load_eval_data(graph, test))
    evaluator = ReferenceEvaluator(saved)
    inputs = np.load(test)["input"]
    theirs = np.concatenate([evaluator.run(None, {"input": inputs[row:row + 1]})[0] for row in range(5)])
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", [["--momentum", "0.9", "--nesterov"], ["--optimizer", "adam"],
                                       ["--optimizer", "adamw", "--weight-decay", "0.01"]])
def test_two_runs_of_two_steps_equal_one_run_of_four(tmp_path: Path, optimizer: list[str]) -> None:
    rows = np.load(digits_like(tmp_path / "all.npz", 4, seed=5))
    np.savez(tmp_path / "first.npz", input=rows["input"][:2], target=rows["target"][:2])
    np.savez(tmp_path / "second.npz", input=rows["input"][2:], target=rows["target"][2:])
    common = ["--target", "reference", "--quiet", "--lr", "0.05", *optimizer]
    whole = run("simulate", MLP, *common, "--data", tmp_path / "all.npz", "--steps", "4",
                "--save-state", tmp_path / "four.npz")
    first = run("simulate", MLP, *common, "--data", tmp_path / "first.npz", "--steps", "2",
                "--save-state", tmp_path / "two.npz")
    second = run("simulate", MLP, *common, "--data", tmp_path / "second.npz", "--steps", "2",
                 "--init-params", tmp_path / "two.npz", "--save-state", tmp_path / "resumed.npz")
    for result in (whole, first, second):
        assert result.returncode == 0, result.stderr
    losses = [line for line in first.stdout.splitlines() + second.stdout.splitlines() if line.startswith("step")]
    expected = [line for line in whole.stdout.splitlines() if line.startswith("step")]
    assert [line.split(": ")[1] for line in losses] == [line.split(": ")[1] for line in expected]
    four, resumed = np.load(tmp_path / "four.npz"), np.load(tmp_path / "resumed.npz")
    assert sorted(four.files) == sorted(resumed.files)
    assert any(name.startswith(STATE_PREFIX) for name in four.files)
    for name in four.files:
        np.testing.assert_array_equal(resumed[name], four[name], err_msg=name)


def test_init_params_errors_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", **{"fc1.weight": np.zeros((3, 3), np.float32)})
    np.savez(tmp_path / "alien.npz", **{"conv9.weight": np.zeros(3, np.float32)})
    for source, message in (("bad.npz", "'fc1.weight' has shape [3, 3]"), ("alien.npz", "'conv9.weight' is not a "
                                                                          "parameter"),
                            ("missing.npz", "no such parameter file")):
        result = run("simulate", MLP, "--target", "reference", "--init-params", source, "--save-params", "p.npz",
                     "--save-onnx", "m.onnx", cwd=tmp_path)
        assert_one_line_error(result, message)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["alien.npz", "bad.npz"]


def test_save_onnx_refuses_fold_bn_before_any_work(tmp_path: Path) -> None:
    result = run("simulate", EXAMPLES / "dscnn.onnx", "--target", "reference", "--fold-bn", "--save-onnx",
                 tmp_path / "m.onnx")
    assert_one_line_error(result, "--fold-bn")
    assert not any(tmp_path.iterdir())


def test_ir_format_onnx(tmp_path: Path) -> None:
    result = run("ir", EXAMPLES / "lenet.onnx", "--format", "onnx", "-o", tmp_path / "train.onnx",
                 "--optimizer", "adam")
    assert result.returncode == 0, result.stderr
    model = onnx.load(str(tmp_path / "train.onnx"))
    onnx.checker.check_model(model, full_check=False)
    assert len(model.graph.node) == len(build_training_graph(EXAMPLES / "lenet.onnx", Options(optimizer="adam")).ops)
    assert_one_line_error(run("ir", MLP, "--format", "onnx"), "-o FILE.onnx")
    assert_one_line_error(run("ir", MLP, "--format", "onnx", "-o", tmp_path / "x.onnx", "--print-after", "training"),
                          "--print-after")
    assert not (tmp_path / "x.onnx").exists()


def test_simulate_eval_before_and_after_in_output_and_report(tmp_path: Path) -> None:
    train = digits_like(tmp_path / "train.npz", 8, seed=1)
    test = digits_like(tmp_path / "test.npz", 11, seed=2)
    result = run("simulate", MLP, "--target", "reference", "--data", train, "--steps", "8", "--lr", "0.1",
                 "--eval", test, "--report", tmp_path / "r.json", "--quiet")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("eval ")]
    assert len(lines) == 2 and "before training" in lines[0] and "after training" in lines[1]
    entry = json.loads((tmp_path / "r.json").read_text())["eval"]
    assert entry["before"]["samples"] == entry["after"]["samples"] == 11
    assert entry["before"]["loss"] != entry["after"]["loss"]
    before = json.loads(run("eval", MLP, "--data", test, "--json").stdout.splitlines()[-1])
    assert before["loss"] == pytest.approx(entry["before"]["loss"], rel=1e-12)


@pytest.mark.slow
@pytest.mark.qemu
def test_a_simulated_run_saves_the_programs_own_state(tmp_path: Path) -> None:
    """The optimizer state in --save-state is what the program printed after its last step (float32), close to
    the reference's (float64); --save-onnx writes the simulator's parameters."""
    train = digits_like(tmp_path / "train.npz", 6)
    common = ["--data", train, "--steps", "3", "--momentum", "0.9", "--lr", "0.05", "--cores", "2", "--quiet"]
    simulated = run("simulate", MLP, *common, "--save-state", tmp_path / "q.npz", "--save-onnx", tmp_path / "q.onnx")
    reference = run("simulate", MLP, *common, "--target", "reference", "--save-state", tmp_path / "r.npz")
    assert simulated.returncode == 0, simulated.stderr
    assert reference.returncode == 0, reference.stderr
    ours, golden = np.load(tmp_path / "q.npz"), np.load(tmp_path / "r.npz")
    assert sorted(ours.files) == sorted(golden.files)
    assert f"{STATE_PREFIX}fc1.weight.momentum" in ours.files
    for name in golden.files:
        assert ours[name].dtype == np.float32 and golden[name].dtype == np.float64
        np.testing.assert_allclose(ours[name], golden[name], rtol=1e-4, atol=1e-6, err_msg=name)
    model = onnx.load(str(tmp_path / "q.onnx"))
    onnx.checker.check_model(model, full_check=True)
    stored = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    np.testing.assert_array_equal(stored["fc1.weight"], ours["fc1.weight"])

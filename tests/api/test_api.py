"""The Python API: what simulate and compile return, how options are validated, and the README's example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import tinyodl

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
REPORT_KEYS = {"model", "target", "platform", "dtype", "cores", "steps_run", "steps", "check", "layers", "totals",
               "memory", "notes"}


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in onnx.load(path).graph.initializer}


def test_reference_simulate_returns_losses_every_parameter_and_the_report() -> None:
    model = EXAMPLES / "lenet.onnx"
    result = tinyodl.simulate(model, target="reference", steps=3, train="last:1", lr=0.05)
    assert len(result.losses) == 3 and all(isinstance(loss, float) and np.isfinite(loss) for loss in result.losses)
    assert result.losses == [step["loss"] for step in result.report["steps"]]
    initial = _initializers(model)
    assert set(result.params) == set(initial)  # frozen ones too, not only the last layer
    changed = {name for name in initial if not np.array_equal(result.params[name], initial[name])}
    assert changed and len(changed) < len(initial)  # last:1 trains the last layer only
    for name, array in result.params.items():
        assert array.shape == initial[name].shape
    assert REPORT_KEYS <= set(result.report)
    assert result.report["layers"] == [] and result.report["steps_run"] == 3
    assert result.report["platform"]["name"] == "pulp8"
    assert result.ok and result.check is result.report["check"]


def test_model_may_be_a_model_proto() -> None:
    proto = onnx.load(EXAMPLES / "mlp.onnx")
    from_proto = tinyodl.simulate(proto, target="reference", steps=2)
    from_path = tinyodl.simulate(str(EXAMPLES / "mlp.onnx"), target="reference", steps=2)
    assert from_proto.losses == from_path.losses


def test_platform_options_resolve_through_the_target() -> None:
    result = tinyodl.simulate(EXAMPLES / "mlp.onnx", target="reference", platform="gap8", cores=4)
    platform = result.report["platform"]
    assert platform["name"] == "gap8" and platform["cores"] == 4 and result.report["cores"] == 4


def test_unknown_option_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="learning_rate"):
        tinyodl.simulate(EXAMPLES / "mlp.onnx", target="reference", learning_rate=0.1)


@pytest.mark.parametrize(("options", "fragment"), [
    ({"lr": -1.0}, "--lr"), ({"optimizer": "rmsprop"}, "--optimizer rmsprop"), ({"dtype": "fp8"}, "--dtype fp8"),
    ({"platform": "nosuchchip"}, "--platform nosuchchip"), ({"cores": 0}, "--cores"),
    ({"target": "fpga"}, "--target fpga"), ({"steps": 0}, "--steps"), ({"timeout": float("nan")}, "--timeout"),
])
def test_bad_values_are_user_errors_of_one_line(options: dict[str, object], fragment: str) -> None:
    with pytest.raises(tinyodl.UserError) as caught:
        tinyodl.simulate(EXAMPLES / "mlp.onnx", **{"target": "reference", **options})  # type: ignore[arg-type]
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_compile_writes_the_project(tmp_path: Path) -> None:
    out = tinyodl.compile(EXAMPLES / "mlp.onnx", tmp_path / "project", steps=2, optimizer="adam")
    assert out == tmp_path / "project"
    assert (out / "Makefile").is_file() and (out / "src" / "network.c").is_file()


def test_options_dataclass_is_shared_by_api_and_cli() -> None:
    from tinyodl.cli import _options, build_parser

    args = build_parser().parse_args(["simulate", "m.onnx", "--lr", "0.5", "--platform", "gap9", "--l1", "32k",
                                      "--no-tiling", "--betas", "0.8,0.99"])
    options = _options(args)
    assert options == tinyodl.Options(lr=0.5, platform="gap9", l1_bytes=32 * 1024, tiling=False, betas=(0.8, 0.99))
    assert options.target().l1_bytes == 32 * 1024 and options.target().name == "gap9"


def _readme_block(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, f"no python block in the README's section {title!r}"
    return blocks[0]


def test_readme_api_example_runs(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(EXAMPLES)
    script = tmp_path / "example.py"
    script.write_text(_readme_block("Python API"))
    env = {**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "build" / "mlp" / "Makefile").is_file()


@pytest.mark.slow
@pytest.mark.qemu
def test_qemu_simulate_returns_the_same_shapes_and_report_keys_as_the_reference(
        capsys: pytest.CaptureFixture[str]) -> None:
    model = EXAMPLES / "mlp.onnx"
    simulated = tinyodl.simulate(model, steps=2, train="last:2", cores=3, progress=True)
    shown = capsys.readouterr().err.splitlines()  # progress streamed from the guest's LOSS lines
    assert "[tinyodl] running 2 step(s) in QEMU on 3 cores" in shown
    assert [line.split("  ")[0] for line in shown if "qemu: step" in line] == [
        "[tinyodl] qemu: step 1/2", "[tinyodl] qemu: step 2/2"]
    reference = tinyodl.simulate(model, steps=2, train="last:2", cores=3, target="reference")
    assert simulated.ok, simulated.check
    assert set(simulated.params) == set(reference.params) == set(_initializers(model))
    for name, array in simulated.params.items():
        np.testing.assert_allclose(array, reference.params[name], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(simulated.losses, reference.losses, rtol=1e-4)
    assert set(simulated.report) == set(reference.report)
    assert set(simulated.report["totals"]) == set(reference.report["totals"])
    assert set(simulated.report["memory"]) == set(reference.report["memory"])
    assert simulated.report["layers"] and reference.report["layers"] == []

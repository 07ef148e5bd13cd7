"""The GVSoC target: the same step on GVSoC pulp-open, checked like QEMU's, with measured counters; how
a missing GVSoC or one of other sizes is reported. The tests that run GVSoC skip without one."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyodl
from tinyodl.cli import main
from tinyodl.driver.qemu import SimulationFailed
from tinyodl.ir.target import TARGETS
from tinyodl.runtime import gvsoc, host

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
import zoo  # noqa: E402 - the end-to-end tests' small models


@pytest.fixture(scope="session")
def gvsoc_platform() -> str:
    """The preset whose sizes the found GVSoC has (skips without a GVSoC or without such a preset)."""
    try:
        chip = gvsoc.find_gvsoc()
    except Exception as exc:  # noqa: BLE001 - any reason not to have one is a reason to skip
        pytest.skip(f"GVSoC not available: {exc}")
    for name, target in TARGETS.items():
        if (target.l1_bytes, target.l2_bytes) == (chip.l1_bytes, chip.l2_bytes):
            return name
    pytest.skip(f"no platform preset has the sizes of {chip.launcher} (L1 {chip.l1_bytes} B, L2 {chip.l2_bytes} B)")


def _fake_gvsoc(root: Path, l1_bytes: int, l2_bytes: int) -> Path:
    """An install tree with the chip description a pulp-open build installs, and a launcher that fails."""
    chip = root / "install" / "generators" / "pulp" / "chips" / "pulp_open"
    chip.mkdir(parents=True)
    (chip / "cluster.json").write_text(f'{{"l1": {{"mapping": {{"base": "0x10000000", "size": "{l1_bytes:#x}"}}}}}}')
    (chip / "soc.json").write_text(f'{{"l2": {{"shared": {{"mapping": {{"size": "{l2_bytes:#x}"}}}}}}}}')
    launcher = root / "install" / "bin" / "gvsoc"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\nexit 99\n")
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    return launcher


def test_the_chip_sizes_come_from_the_install_tree(tmp_path: Path) -> None:
    launcher = _fake_gvsoc(tmp_path, 65536, 1572864)
    assert gvsoc.chip_sizes(launcher) == (65536, 1572864)


def test_without_gvsoc_the_target_is_one_line_saying_how_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(gvsoc.ENV_VAR, raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if not (Path(p) / "gvsoc").exists()))
    assert main(["simulate", str(EXAMPLES / "mlp.onnx"), "--target", "gvsoc", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("tinyodl: error: GVSoC not found") and "make build TARGETS=pulp-open" in err[0]


def test_a_preset_the_gvsoc_was_not_built_for_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(gvsoc.ENV_VAR, str(_fake_gvsoc(tmp_path, 65536, 1572864)))  # the stock sizes
    assert main(["simulate", str(EXAMPLES / "mlp.onnx"), "--target", "gvsoc", "--platform", "pulp8",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "platform pulp8 has L1 131072 B and L2 2097152 B" in err[0]
    assert "built with L1 65536 B and L2 1572864 B" in err[0] and "GVSOC_L1_BYTES=131072" in err[0]


def test_doctor_reports_the_gvsoc_and_its_sizes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    launcher = _fake_gvsoc(tmp_path, 131072, 2097152)
    monkeypatch.setenv(gvsoc.ENV_VAR, str(launcher))
    main(["doctor"])
    assert f"ok   GVSoC (optional, --target gvsoc): {launcher}: pulp-open with L1 131072 B, L2 2097152 B" \
        in capsys.readouterr().out


@pytest.mark.gvsoc
@pytest.mark.parametrize("cores", [1, 8])
@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_examples_pass_the_check_with_measured_counters(gvsoc_platform: str, name: str, cores: int) -> None:
    result = tinyodl.simulate(EXAMPLES / f"{name}.onnx", target="gvsoc", platform=gvsoc_platform, cores=cores)
    assert result.ok, result.check
    report = result.report
    assert report["target"] == "gvsoc" and report["totals"]["cycles_est"] is None
    for layer in report["layers"]:
        assert layer["cycles_measured"] > 0 and len(layer["cycles_measured_per_core"]) == cores
        assert max(layer["instructions"]) > 0
        assert layer["cycles_measured"] >= max(layer["instructions"]) // 2  # RI5CY issues at most one a cycle
        stalls = layer["stalls_measured"]
        assert set(stalls) == {"icache_miss", "load_use", "jump_register", "branch_taken", "other"}
    totals = report["totals"]
    assert totals["cycles_measured_run"] == sum(layer["cycles_measured"] for layer in report["layers"])
    assert totals["mac_per_cycle_measured"] > 0


def _conv_zoo_tiled(tmp_path: Path, platform: str) -> tinyodl.api.SimulationResult:
    """The model and budget of the QEMU test of the same (tests/e2e/test_tiled.py)."""
    return tinyodl.simulate(zoo.conv_zoo(tmp_path / "conv_zoo.onnx"), target="gvsoc", platform=platform, steps=1,
                            l1_bytes=4096, dma_check=True)


@pytest.mark.gvsoc
def test_the_checking_build_passes_with_the_waits_on_mchan(tmp_path: Path, gvsoc_platform: str) -> None:
    result = _conv_zoo_tiled(tmp_path, gvsoc_platform)
    assert result.ok, result.check
    assert result.report["memory"]["dma_bytes"] > 0
    assert result.report["totals"]["dma_wait_cycles_measured"] > 0


@pytest.mark.gvsoc
def test_a_dropped_dma_wait_fails_the_check_on_gvsoc(tmp_path: Path, gvsoc_platform: str,
                                                     without_input_wait: None) -> None:
    """The tile loop without its wait for a tile's inputs: in the checking build mchan only copies once somebody
    waits, so the kernels read the poison (NaN): the golden check fails, or the run stops where a poisoned
    value became an address."""
    try:
        passed = _conv_zoo_tiled(tmp_path, gvsoc_platform).ok
    except SimulationFailed as exc:
        assert "invalid access" in str(exc) or "check failed" in str(exc), exc
        passed = False
    assert not passed


def test_an_invalid_access_is_named_not_taken_for_a_failed_check(tmp_path: Path) -> None:
    """GVSoC stops a load from an unmapped address with exit code 1, the runtime's code of a failed check."""
    line = ("14763374298: 1063490: [\x1b[31m/chip/cluster/pe3/lsu          \x1b[0m] Invalid access (pc: 0x1c0437d0, "
            "offset: 0x0f037ab4, size: 0x4, is_write: 0)")
    toolchain = host.Toolchain(gcc=Path("gcc"), qemu=Path("qemu"), addr2line=None, nm=None, plugin=None)
    failure = gvsoc.describe_failure(1, "LOSS 0 3f800000\n", line, tmp_path / "none.elf", toolchain)
    assert failure == "invalid access: load from 0x0f037ab4 at pc=0x1c0437d0, cluster/pe3"
    assert gvsoc.describe_failure(1, "mismatch\n", "", tmp_path / "none.elf", toolchain) == "check failed: mismatch"


@pytest.mark.gvsoc
def test_eval_on_gvsoc_checks_the_outputs(tmp_path: Path, gvsoc_platform: str) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "eval.npz"
    np.savez(data, input=rng.standard_normal((3, 64)).astype(np.float32), target=rng.integers(0, 10, 3))
    evaluation = tinyodl.evaluate(EXAMPLES / "mlp.onnx", data=data, target="gvsoc", platform=gvsoc_platform)
    assert evaluation.samples == 3 and evaluation.check is not None and evaluation.check["ok"]

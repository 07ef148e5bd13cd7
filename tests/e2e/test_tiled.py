"""Tiled programs in QEMU: kernels on L1 tiles moved by the DMA engine hart, checked against the reference
on several core counts and budgets; a missing DMA wait is caught by the checking build."""

from __future__ import annotations

from pathlib import Path

import pytest
import zoo

import tinyodl

pytestmark = pytest.mark.qemu


def conv_zoo_model(tmp_path: Path) -> Path:
    return zoo.conv_zoo(tmp_path / "conv_zoo.onnx")


@pytest.mark.parametrize("cores", [1, 3, 5, 7, 8])
def test_awkward_model_tiled_into_4k_of_l1(tmp_path: Path, toolchain, cores: int) -> None:
    model = conv_zoo_model(tmp_path)
    result = tinyodl.simulate(model, steps=2, cores=cores, l1_bytes=4096, momentum=0.9, weight_decay=0.01)
    assert result.ok, result.check
    layers = result.report["layers"]
    assert sum(layer["tiles"] for layer in layers) > len(layers)  # really cut into tiles
    assert all(layer["dma_bytes"] > 0 for layer in layers if layer["tiles"])
    assert result.report["memory"]["l1_bytes"] <= 4096


def test_tiled_and_untiled_runs_agree(tmp_path: Path, toolchain) -> None:
    """The same step tiled and untiled (kernels on L2) gives the same loss; only the tiled one moves data by
    DMA. (On a model this small the loops' bookkeeping costs more than tiling saves: the gain shows on
    ResNet8-sized layers, see the README's bench figures.)"""
    model = conv_zoo_model(tmp_path)
    tiled = tinyodl.simulate(model, steps=1, l1_bytes=16 * 1024, momentum=0.9)
    untiled = tinyodl.simulate(model, steps=1, tiling=False, momentum=0.9)
    assert tiled.ok and untiled.ok
    assert tiled.losses[0] == pytest.approx(untiled.losses[0], rel=1e-5)
    assert untiled.report["memory"]["dma_bytes"] == 0 and tiled.report["memory"]["dma_bytes"] > 0
    assert all(layer["tiles"] == 0 for layer in untiled.report["layers"])


def test_checking_build_passes_with_the_waits(tmp_path: Path, toolchain) -> None:
    result = tinyodl.simulate(conv_zoo_model(tmp_path), steps=1, l1_bytes=4096, dma_check=True)
    assert result.ok, result.check


def test_a_missing_dma_wait_fails_the_check(tmp_path: Path, toolchain, without_input_wait: None) -> None:
    """Drop the wait for a tile's inputs from the runtime: in the checking build the kernel then reads
    poisoned (NaN) inputs, and the golden check must fail."""
    result = tinyodl.simulate(conv_zoo_model(tmp_path), steps=1, l1_bytes=4096, dma_check=True)
    assert not result.ok

"""The DMA engine (hart RT_NUM_CORES): transfers, waits, checking mode, timing model, and its
coexistence with barriers. Guest programs are in tests/runtime/guest/dma_*.c."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from guests import RUN_TIMEOUT_S, build_guest, host

from tinyodl.ir.target import PULP8

# (row_bytes, rows) of the geometries in dma_transfers.c, each moved L2 -> L1 and back
TRANSFER_CASES = [(1, 1), (1001, 1), (4096, 1), (13, 7), (64, 5), (5, 9), (3, 31), (1, 0)]
MANY_TRANSFERS, MANY_CHUNK_BYTES, CORE_CHUNK_BYTES = 200, 16, 400
TIMING_PROBE_BYTES = 1001 + 1000 + 8


def modelled_cycles(bytes_moved: int, setup: int, bytes_per_100_cycles: int) -> int:
    return setup + -(-100 * bytes_moved // bytes_per_100_cycles)


@pytest.mark.qemu
@pytest.mark.parametrize("cores", [1, 8])
def test_transfers_move_exactly_the_right_bytes(tmp_path: Path, toolchain: host.Toolchain, cores: int) -> None:
    elf = build_guest(tmp_path, toolchain, "dma_transfers", cores=cores, MANY_TRANSFERS=MANY_TRANSFERS)
    result = host.run_qemu(elf, cores, RUN_TIMEOUT_S, count=False, toolchain=toolchain)
    assert result.ok, result.failure + result.stdout
    transfers = 2 * len(TRANSFER_CASES) + MANY_TRANSFERS + cores + 3
    moved = (2 * sum(row_bytes * rows for row_bytes, rows in TRANSFER_CASES) + MANY_TRANSFERS * MANY_CHUNK_BYTES
             + cores * CORE_CHUNK_BYTES + TIMING_PROBE_BYTES)
    assert f"errors=0 transfers={transfers} bytes={moved}\n" in result.stdout


@pytest.mark.qemu
@pytest.mark.parametrize(
    ("defines", "l2_to_l1", "l1_to_l2"),
    [({}, (21, 800), (23, 776)),
     ({"RT_DMA_L2_TO_L1_SETUP_CYCLES": 100, "RT_DMA_L1_TO_L2_BYTES_PER_100_CYCLES": 400}, (100, 800), (23, 400))],
    ids=["gvsoc-defaults", "overridden"],
)
def test_modelled_cycles_follow_direction_and_parameters(
    tmp_path: Path, toolchain: host.Toolchain, defines: dict[str, int], l2_to_l1: tuple[int, int],
    l1_to_l2: tuple[int, int],
) -> None:
    elf = build_guest(tmp_path, toolchain, "dma_transfers", MANY_TRANSFERS=8, **defines)
    result = host.run_qemu(elf, 8, RUN_TIMEOUT_S, count=False, toolchain=toolchain)
    assert result.ok, result.failure
    # a destination outside L1 (L2 -> L2 as well) takes the L1 -> L2 parameters
    assert (f"cycles l2->l1 1001 B: {modelled_cycles(1001, *l2_to_l1)}, "
            f"l1->l2 1000 B: {modelled_cycles(1000, *l1_to_l2)}, l2->l2 8 B: {modelled_cycles(8, *l1_to_l2)}\n"
            ) in result.stdout


def poisoned_then_copied(offsets: list[int], size: int) -> tuple[str, str]:
    """dma_check.c's 16-byte buffer before and after the wait: rows at `offsets` of 3 bytes each
    (source bytes 0x10 + 4 * row + i), poisoned byte-wise by address, zeros between them."""
    before, after = [0] * size, [0] * size
    for row, offset in enumerate(offsets):
        for i in range(3):
            before[offset + i] = (0x7FC0DEAD >> (8 * ((offset + i) % 4))) & 0xFF
            after[offset + i] = 0x10 + 4 * row + i
    return bytes(before).hex(), bytes(after).hex()


@pytest.mark.qemu
def test_checking_mode_poisons_a_destination_until_the_wait(tmp_path: Path, toolchain: host.Toolchain) -> None:
    elf = build_guest(tmp_path, toolchain, "dma_check", RT_DMA_CHECK=1)
    result = host.run_qemu(elf, 8, RUN_TIMEOUT_S, count=False, toolchain=toolchain)
    assert result.ok, result.failure
    before, after = poisoned_then_copied([1, 6, 11], 16)
    assert result.stdout == (
        "early=7fc0dead late=3fc00000\n"
        f"bytes={before} after={after}\n"
        "source=40200000\n"  # copied at the wait: a source written after the start is what arrives
        "chained=3fc00000\n"
        "many=0\n"
    )


@pytest.mark.qemu
def test_without_checking_mode_the_wait_gives_the_data(tmp_path: Path, toolchain: host.Toolchain) -> None:
    elf = build_guest(tmp_path, toolchain, "dma_check", RT_DMA_CHECK=0)
    result = host.run_qemu(elf, 8, RUN_TIMEOUT_S, count=False, toolchain=toolchain)
    assert result.ok, result.failure
    _, after = poisoned_then_copied([1, 6, 11], 16)
    # what is read before a wait is a race in this mode, so only the waited-for values are checked
    assert " late=3fc00000\n" in result.stdout
    assert f" after={after}\n" in result.stdout
    assert "chained=3fc00000\nmany=0\n" in result.stdout


@pytest.mark.qemu
@pytest.mark.parametrize("cores", [3, 8])
def test_barriers_and_transfers_interleave_and_the_engine_is_not_a_core(
    tmp_path: Path, toolchain: host.Toolchain, cores: int
) -> None:
    iterations, big_bytes = 2000, 32768
    elf = build_guest(tmp_path, toolchain, "dma_barriers", cores=cores, ITERATIONS=iterations, BIG_BYTES=big_bytes)
    result = host.run_qemu(elf, cores, RUN_TIMEOUT_S, count=True, toolchain=toolchain)
    assert result.ok, result.failure
    assert f"iterations={iterations} checks={iterations - 1} errors=0" in result.stdout
    # 4000 sleeping barriers take well under a second; a lost wake-up would hang until the host timeout
    assert result.wall_seconds < 8.0
    regions = result.per_hart_regions
    assert sorted(regions) == list(range(cores + 1))
    # core 0 only programs and awaits the 32 KiB copy; the engine's hart does it (>= one load per word)
    assert regions[0][4].insns < 200
    assert all(4 not in regions[hart] for hart in range(1, cores))
    assert list(regions[cores]) == [0]
    assert regions[cores][0].insns > big_bytes // 4


def test_runtime_timing_defaults_are_the_default_platforms() -> None:
    """The runtime's counters and the report's DMA figures must use the same parameters."""
    header = (host.RUNTIME_C_DIR / "tinyodl_rt.h").read_text()
    defaults = dict(re.findall(r"#define (RT_DMA_\w+_(?:CYCLES|SLOTS)) (\d+)u?\n", header))
    assert defaults["RT_DMA_L2_TO_L1_SETUP_CYCLES"] == str(PULP8.dma_in_setup_cycles)
    assert defaults["RT_DMA_L1_TO_L2_SETUP_CYCLES"] == str(PULP8.dma_out_setup_cycles)
    assert int(defaults["RT_DMA_L2_TO_L1_BYTES_PER_100_CYCLES"]) == round(100 * PULP8.dma_in_bytes_per_cycle)
    assert int(defaults["RT_DMA_L1_TO_L2_BYTES_PER_100_CYCLES"]) == round(100 * PULP8.dma_out_bytes_per_cycle)
    for size in (1, 194, 1000, 4096, 65537):
        assert modelled_cycles(size, 21, 800) == PULP8.dma_cycles(size, to_l1=True)
        assert modelled_cycles(size, 23, 776) == PULP8.dma_cycles(size, to_l1=False)

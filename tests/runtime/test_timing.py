"""The plugin's memory model on QEMU: L1/L2 access counts per region and the cycles the Target's
parameters predict (guest: tests/runtime/guest/mem_timing.c)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from tinyodl.ir.target import PULP8, Target
from tinyodl.runtime import host

GUEST = Path(__file__).parent / "guest" / "mem_timing.c"
RUN_TIMEOUT_S = 30.0
N_L1, N_L2, LOOP_ITERS = 100, 50, 40


@pytest.fixture(scope="module")
def elf(tmp_path_factory: pytest.TempPathFactory, toolchain: host.Toolchain) -> Path:
    out = tmp_path_factory.mktemp("timing") / "mem_timing.elf"
    return host.compile_and_link([GUEST], out, defines={"N_L1": N_L1, "N_L2": N_L2, "LOOP_ITERS": LOOP_ITERS},
                                 l1_bytes=4096, l2_bytes=1 << 20, cores=8, toolchain=toolchain)


def expected_regions(target: Target) -> dict[int, host.RegionCount]:
    """What each region of mem_timing.c must count under `target`, each starting with its 1-cycle marker.
    An L1 access costs the block model's cycle; an L2 load or store costs l2_load / l2_store cycles, and
    a load whose value the next instruction uses waits l2_load_use (L1: l1_load_use_stall) more."""
    load, store = target.l2_load_cycles, target.l2_store_cycles
    return {
        20: host.RegionCount(1 + N_L1, 1 + N_L1, l1_accesses=N_L1),
        21: host.RegionCount(1 + N_L2, 1 + N_L2 * load, l2_accesses=N_L2),
        22: host.RegionCount(1 + N_L2, 1 + N_L2 * store, l2_accesses=N_L2),
        23: host.RegionCount(1 + N_L1, 1 + N_L1, l1_accesses=N_L1),
        24: host.RegionCount(3, 1 + load + 1 + target.l2_load_use_stall, l2_accesses=1),
        25: host.RegionCount(3, 3, l1_accesses=2),
        # marker, li, then per iteration lw + addi + bnez; each taken bnez costs 2 more cycles
        26: host.RegionCount(2 + 3 * LOOP_ITERS, 2 + LOOP_ITERS * (load + 2) + (LOOP_ITERS - 1) * 2,
                             l2_accesses=LOOP_ITERS),
    }


@pytest.mark.qemu
@pytest.mark.parametrize("target", [
    PULP8,
    dataclasses.replace(PULP8, name="slow-l2", l2_load_cycles=40, l2_store_cycles=3, l2_load_use_stall=4),
], ids=["pulp8", "other-latencies"])
def test_loads_and_stores_are_counted_and_charged_by_where_they_land(
    elf: Path, toolchain: host.Toolchain, target: Target
) -> None:
    result = host.run_qemu(elf, 8, RUN_TIMEOUT_S, count=True, toolchain=toolchain, target=target)
    assert result.ok, result.failure
    core0 = result.per_hart_regions[0]
    assert {region: core0[region] for region in range(20, 27)} == expected_regions(target)
    for hart in range(1, 8):
        assert not set(result.per_hart_regions[hart]) & set(range(20, 27)), f"hart {hart}"
    assert {name: result.cycle_model[name] for name in ("load_use_stall", "l2_load_cycles", "l2_store_cycles",
                                                         "l2_load_use_stall")} == {
        "load_use_stall": target.l1_load_use_stall, "l2_load_cycles": target.l2_load_cycles,
        "l2_store_cycles": target.l2_store_cycles, "l2_load_use_stall": target.l2_load_use_stall}


@pytest.mark.qemu
def test_l1_ranges_come_from_the_elf_symbols(elf: Path, toolchain: host.Toolchain) -> None:
    arguments = host.plugin_memory_arguments(elf, toolchain, PULP8)
    usage = host.memory_usage(elf, toolchain)
    ranges = [argument.removeprefix("l1=").split(":") for argument in arguments if argument.startswith("l1=")]
    starts_and_sizes = [(int(start, 16), int(end, 16) - int(start, 16)) for start, end in ranges]
    assert starts_and_sizes[0][1] == usage.l1_bytes == 4096
    # the per-hart block: 8 stacks of 8 KiB plus trap stacks and thread-local blocks
    assert 8 * 8192 < starts_and_sizes[1][1] < 8 * 8192 + 8 * 2048
    assert arguments[len(ranges):] == ["load_use=1", "l2_load=15", "l2_store=15", "l2_load_use=1"]


@pytest.mark.qemu
@pytest.mark.parametrize(("argument", "message"), [
    ("l1=0x2000:0x1000", "l1=0x2000:0x1000 is not START:END with START < END"),
    ("l2_load=0", "l2_load and l2_store must be between 1 and"),
    ("l2_load_use=0", "l2_load_use (0) must be >= load_use (1)"),
    ("cache=1", "unknown argument 'cache'"),
])
def test_plugin_refuses_bad_memory_arguments(
    elf: Path, toolchain: host.Toolchain, tmp_path: Path, argument: str, message: str
) -> None:
    command = host.qemu_command(elf, 8, toolchain, tmp_path / "counts.json")
    command[-1] += f",{argument}"
    completed = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert completed.returncode != 0
    assert message in completed.stderr

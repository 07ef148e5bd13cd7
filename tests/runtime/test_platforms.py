"""Platform presets: cited sizes, every parameter described, budgets that override only the sizes."""

from __future__ import annotations

import dataclasses

import pytest

from tinyodl.ir.target import GAP8, GAP9, PULP8, PULP_OPEN, TARGETS, Target

KIB = 1024


def test_presets_are_registered_by_name_and_pulp8_is_one() -> None:
    assert set(TARGETS) == {"pulp8", "gap8", "gap9", "pulp-open"}
    assert all(TARGETS[name].name == name for name in TARGETS)
    assert TARGETS["pulp8"] is PULP8


@pytest.mark.parametrize(("target", "cores", "l1_bytes", "l2_bytes", "fp16"), [
    (PULP8, 8, 128 * KIB, 2 * 1024 * KIB, True),
    (GAP8, 8, 64 * KIB, 512 * KIB, False),     # Bitcraze AI-deck docs; GreenWaves GAP8/GAP9 table
    (GAP9, 8, 128 * KIB, 1536 * KIB, True),    # GreenWaves GAP8/GAP9 table: L1 128 kB, RAM 1.5 MB
    (PULP_OPEN, 8, 64 * KIB, 1536 * KIB, True),  # GVSoC's stock pulp-open: cluster.json, soc.json
])
def test_presets_have_the_cited_sizes(target: Target, cores: int, l1_bytes: int, l2_bytes: int, fp16: bool) -> None:
    assert (target.cores, target.l1_bytes, target.l2_bytes, target.fp16) == (cores, l1_bytes, l2_bytes, fp16)
    assert target.source and "\n" not in target.source


@pytest.mark.parametrize("target", list(TARGETS.values()), ids=list(TARGETS))
def test_describe_names_every_parameter(target: Target) -> None:
    described = target.describe()
    assert list(described) == [field.name for field in dataclasses.fields(Target)]
    for name in ("l1_load_use_stall", "l2_load_cycles", "l2_store_cycles", "l2_load_use_stall",
                 "dma_in_setup_cycles", "dma_in_bytes_per_cycle", "dma_out_setup_cycles",
                 "dma_out_bytes_per_cycle", "l1_banks", "source"):
        assert described[name] == getattr(target, name)


def test_gvsoc_pulp_open_timing_is_the_default() -> None:
    timing = (PULP8.l1_load_use_stall, PULP8.l2_load_cycles, PULP8.l2_store_cycles, PULP8.l2_load_use_stall)
    assert timing == (1, 15, 15, 1)
    assert "GVSoC pulp-open" in PULP8.source
    assert all("assumed" in target.source for target in (GAP8, GAP9))


def test_with_budget_overrides_only_the_sizes_it_is_given() -> None:
    budget = PULP8.with_budget(cores=3, l1_bytes=8 * KIB)
    assert (budget.cores, budget.l1_bytes, budget.l2_bytes) == (3, 8 * KIB, PULP8.l2_bytes)
    assert dataclasses.replace(budget, cores=8, l1_bytes=PULP8.l1_bytes) == PULP8
    assert PULP8.with_budget() == PULP8


def test_dma_cycles_are_setup_plus_bytes_over_bandwidth() -> None:
    # 16 KB L2 -> L1 took 2,069 cycles in GVSoC pulp-open: 21 + 16384 / 8 = 2,069
    assert PULP8.dma_cycles(16 * KIB, to_l1=True) == 2069
    assert PULP8.dma_cycles(1000, to_l1=False) == 23 + 129  # ceil(1000 / 7.76) = 129
    assert PULP8.dma_cycles(0, to_l1=True) == 0

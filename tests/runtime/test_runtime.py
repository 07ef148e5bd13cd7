"""The on-target runtime, the instruction-count plugin and the host runner, on QEMU.

Each test builds a small guest program from tests/runtime/guest/ with compile_and_link and runs it
with run_qemu. Tests marked `qemu` skip when the toolchain (or the plugin) is missing (see conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from guests import RUN_TIMEOUT_S, build_guest, host

DMA_HART = 8  # the engine's hart when built for 8 cores


@pytest.mark.qemu
@pytest.mark.parametrize(("cores", "items"), [(1, 1001), (7, 1001), (8, 1001), (8, 5)])
def test_parallel_vector_sum_covers_every_item_once(
    tmp_path: Path, toolchain: host.Toolchain, cores: int, items: int
) -> None:
    elf = build_guest(tmp_path, toolchain, "vector_sum", cores=cores, VECTOR_N=items)
    result = host.run_qemu(elf, cores, RUN_TIMEOUT_S, count=False, toolchain=toolchain)
    assert result.ok, result.failure
    assert f"n={items} cores={cores} sum=" in result.stdout
    smallest, largest = items // cores, -(-items // cores)
    assert f"chunks={smallest}..{largest}" in result.stdout


@pytest.mark.qemu
def test_two_thousand_barriers_are_correct_and_fast(tmp_path: Path, toolchain: host.Toolchain) -> None:
    elf = build_guest(tmp_path, toolchain, "barriers", NUM_BARRIERS=2000)
    result = host.run_qemu(elf, 8, RUN_TIMEOUT_S, count=True, toolchain=toolchain)
    assert result.ok, result.failure
    assert "barriers=2000 counter=16000 errors=0" in result.stdout
    # 4000 sleeping barriers x 8 harts take ~0.4 s; a spinning barrier would take tens of seconds
    assert result.wall_seconds < 8.0
    per_barrier = [result.per_hart_regions[hart][7].insns / 2000 for hart in range(8)]
    assert max(per_barrier) < 100
    assert list(result.per_hart_regions[DMA_HART]) == [0]


@pytest.mark.qemu
def test_region_counts_are_exact_and_repeatable(tmp_path: Path, toolchain: host.Toolchain) -> None:
    iterations = 1000
    elf = build_guest(tmp_path, toolchain, "regions", LOOP_ITERS=iterations)
    runs = [host.run_qemu(elf, 8, RUN_TIMEOUT_S, count=True, toolchain=toolchain) for _ in range(2)]
    for result in runs:
        assert result.ok, result.failure
        assert sorted(result.per_hart_regions) == [*range(8), DMA_HART]
        assert list(result.per_hart_regions[DMA_HART]) == [0]
        for hart in range(8):
            regions = result.per_hart_regions[hart]
            loop = host.RegionCount(insns=2 + 2 * iterations, cycles=2 + 4 * iterations - 2)
            assert regions[5] == loop, f"hart {hart}"
            if hart != 0:
                assert regions[8] == host.RegionCount(5, 5), f"hart {hart}"
                assert regions[9] == host.RegionCount(3, 3), f"hart {hart}"
        # the cycle model's probes (see regions.c): load-use (from the stack: L1), fdiv use, div, mulh, fmadd chain
        probes = {region: result.per_hart_regions[0][region] for region in range(10, 15)}
        assert probes == {10: host.RegionCount(3, 4, l1_accesses=1), 11: host.RegionCount(3, 21), 12: host.RegionCount(2, 33),
                          13: host.RegionCount(2, 6), 14: host.RegionCount(3, 4)}
    exact = (5, 8, 9)
    first, second = ({hart: {region: regions.get(region) for region in exact}
                      for hart, regions in run.per_hart_regions.items()} for run in runs)
    assert first == second


@pytest.mark.qemu
@pytest.mark.parametrize(
    ("kind", "hart", "cause"), [(0, 3, "illegal_instruction (mcause 2)"), (1, 0, "load_access_fault (mcause 5)")]
)
def test_trap_names_cause_and_function(
    tmp_path: Path, toolchain: host.Toolchain, kind: int, hart: int, cause: str
) -> None:
    elf = build_guest(tmp_path, toolchain, "trap", TRAP_KIND=kind, TRAP_HART=hart)
    result = host.run_qemu(elf, 8, RUN_TIMEOUT_S, count=False, toolchain=toolchain)
    assert result.exit_code == host.EXIT_TRAP
    assert result.failure is not None
    assert result.failure.startswith(f"trap: {cause} at mepc=0x")
    assert "in do_illegal_thing (trap.c:" in result.failure
    assert result.failure.endswith(f"hart {hart}")


@pytest.mark.qemu
def test_a_transfer_from_a_bad_address_traps_on_the_dma_hart(tmp_path: Path, toolchain: host.Toolchain) -> None:
    elf = build_guest(tmp_path, toolchain, "trap", TRAP_KIND=2, TRAP_HART=3)
    result = host.run_qemu(elf, 8, RUN_TIMEOUT_S, count=False, toolchain=toolchain)
    assert result.exit_code == host.EXIT_TRAP
    assert result.failure is not None
    assert result.failure.startswith("trap: load_access_fault (mcause 5) at mepc=0x")
    assert "in rt_copy_row (rt.c:" in result.failure
    assert result.failure.endswith(f", mtval=0x00000004, hart {DMA_HART}")


@pytest.mark.qemu
@pytest.mark.parametrize(
    ("hang", "check"), [(0, 0), (1, 0), (2, 0), (2, 1)],
    ids=["hart0-loops", "hart1-loops-hart0-in-barrier", "hart0-waits-for-no-transfer", "same-in-checking-mode"],
)
def test_watchdog_ends_a_hang(tmp_path: Path, toolchain: host.Toolchain, hang: int, check: int) -> None:
    elf = build_guest(tmp_path, toolchain, "watchdog", HANG_KIND=hang, RT_WATCHDOG_MS=200, RT_DMA_CHECK=check)
    result = host.run_qemu(elf, 8, RUN_TIMEOUT_S, count=False, toolchain=toolchain)
    assert result.exit_code == host.EXIT_WATCHDOG
    assert result.failure is not None and result.failure.startswith("watchdog: WATCHDOG expired after 200 ms")


@pytest.mark.qemu
def test_host_timeout_kills_a_hang_without_watchdog(tmp_path: Path, toolchain: host.Toolchain) -> None:
    elf = build_guest(tmp_path, toolchain, "watchdog", HANG_KIND=0, RT_WATCHDOG_MS=0)
    result = host.run_qemu(elf, 8, 1.0, count=True, toolchain=toolchain)
    assert result.exit_code == host.EXIT_HOST_TIMEOUT
    assert result.failure == "host timeout: QEMU still running after 1 s, killed"


@pytest.mark.qemu
@pytest.mark.parametrize(
    ("defines", "exit_code", "failure"),
    [
        ({"EXIT_VALUE": 0}, 0, None),
        ({"EXIT_VALUE": 1}, 1, "check failed: mismatch in tensor w0: max error 1.5e-3"),
        ({"EXIT_HOW": 1, "EXIT_VALUE": 7}, 7, "exited with code 7: hart 2 exits"),
    ],
    ids=["main-returns-0", "main-returns-1", "hart2-rt_exit-7"],
)
def test_exit_codes(
    tmp_path: Path, toolchain: host.Toolchain, defines: dict[str, int], exit_code: int, failure: str | None
) -> None:
    elf = build_guest(tmp_path, toolchain, "exit_codes", **defines)
    result = host.run_qemu(elf, 8, RUN_TIMEOUT_S, count=False, toolchain=toolchain)
    assert (result.exit_code, result.failure) == (exit_code, failure)


@pytest.mark.qemu
def test_stack_peak_is_measured(tmp_path: Path, toolchain: host.Toolchain) -> None:
    elf = build_guest(tmp_path, toolchain, "stack", RECURSION_DEPTH=4, STACK_HART=2)
    result = host.run_qemu(elf, 8, RUN_TIMEOUT_S, count=False, toolchain=toolchain)
    assert result.ok, result.failure
    peaks = {int(line.split()[1]): int(line.split()[-1]) for line in result.stdout.splitlines()}
    assert 4 * 256 < peaks[2] < 2048
    assert all(0 < peak < 256 for hart, peak in peaks.items() if hart != 2)


@pytest.mark.qemu
def test_stack_overflow_is_reported(tmp_path: Path, toolchain: host.Toolchain) -> None:
    elf = build_guest(tmp_path, toolchain, "stack", RECURSION_DEPTH=40, STACK_HART=2)
    result = host.run_qemu(elf, 8, RUN_TIMEOUT_S, count=False, toolchain=toolchain)
    assert result.exit_code == host.EXIT_STACK
    assert result.failure == "stack overflow on hart 2: its 8192-byte stack is too small (raise the stack size)"


@pytest.mark.qemu
@pytest.mark.parametrize(("built_for", "machine"), [(8, 4), (4, 8), (8, 7)], ids=["fewer", "more", "no-dma-hart"])
def test_wrong_hart_count_is_detected(
    tmp_path: Path, toolchain: host.Toolchain, built_for: int, machine: int
) -> None:
    elf = build_guest(tmp_path, toolchain, "vector_sum", cores=built_for)
    result = host.run_qemu(elf, machine, RUN_TIMEOUT_S, count=False, toolchain=toolchain)
    assert result.exit_code == host.EXIT_HART_COUNT
    harts = f"more than {built_for + 1}" if machine > built_for else str(machine + 1)
    assert result.failure == (f"wrong hart count: the machine has {harts} harts, the program was built for "
                              f"RT_NUM_CORES={built_for} and needs {built_for + 1} (the cores and the DMA engine)")


@pytest.mark.qemu
def test_l1_buffer_dma_and_float_printf(tmp_path: Path, toolchain: host.Toolchain) -> None:
    elf = build_guest(tmp_path, toolchain, "l1_dma", l1_bytes=4096, l2_bytes=1 << 20)
    result = host.run_qemu(elf, 8, RUN_TIMEOUT_S, count=False, toolchain=toolchain)
    assert result.ok, result.failure
    # two transfers into L1: 256 B (21 + 256/8 cycles) and 15 rows of 256 B (21 + 3840/8 cycles)
    assert "sum=256.000 pi=3.1416 bytes=4096 transfers=2 cycles=554" in result.stdout
    usage = host.memory_usage(elf, toolchain)
    assert (usage.l1_used, usage.l1_bytes, usage.l2_bytes) == (4096, 4096, 1 << 20)
    assert 0 < usage.l2_used < usage.l2_bytes


@pytest.mark.qemu
def test_l1_overflow_is_a_link_error(tmp_path: Path, toolchain: host.Toolchain) -> None:
    with pytest.raises(host.BuildError) as raised:
        build_guest(tmp_path, toolchain, "l1_dma", l1_bytes=4095)
    assert str(raised.value) == "ld: region `L1' overflowed by 1 byte"


@pytest.mark.qemu
def test_compile_error_gives_first_error_line(tmp_path: Path, toolchain: host.Toolchain) -> None:
    source = tmp_path / "broken.c"
    source.write_text("int main(void)\n{\n    return missing_value;\n}\n")
    with pytest.raises(host.BuildError) as raised:
        host.compile_and_link([source], tmp_path / "broken.elf", toolchain=toolchain)
    assert str(raised.value).startswith(f"{source}:3:12: error: 'missing_value' undeclared")


@pytest.mark.qemu
def test_core_count_of_runtime_and_linker_script_must_agree(tmp_path: Path, toolchain: host.Toolchain) -> None:
    with pytest.raises(host.BuildError) as raised:
        build_guest(tmp_path, toolchain, "vector_sum", cores=8, RT_NUM_CORES=4)
    assert str(raised.value) == "ld: tinyodl: RT_NUM_CORES of the runtime differs from the linker script's num_cores"


def write_makefile_project(project: Path, source: str) -> None:
    """A minimal project in the shape the C backend generates: `make` builds build/prog.elf."""
    project.mkdir()
    (project / "prog.c").write_text(source)
    (project / "link.ld").write_text(host.render_linker_script(128 * 1024, 1 << 20, 8192, 2))
    compile_flags = " ".join([*host.COMPILE_ARCH_FLAGS, *host.COMMON_FLAGS, "-DRT_NUM_CORES=2",
                              "-DRT_STACK_BYTES=8192", f"-I{host.RUNTIME_C_DIR}"])
    link_flags = " ".join([*host.LINK_ARCH_FLAGS, *host.COMMON_FLAGS, *host.LINK_FLAGS, "-T link.ld"])
    sources = " ".join(str(path) for path in (*host.RUNTIME_SOURCES, project / "prog.c"))
    (project / "Makefile").write_text(
        f"all:\n\tmkdir -p build\n"
        f"\tfor f in {sources}; do {host.GCC} {compile_flags} -c $$f -o build/$$(basename $$f).o || exit 1; done\n"
        f"\t{host.GCC} {link_flags} build/*.o -o build/prog.elf\n"
    )


@pytest.mark.qemu
def test_build_runs_make_and_returns_the_elf(tmp_path: Path, toolchain: host.Toolchain) -> None:
    project = tmp_path / "project"
    write_makefile_project(project, '#include "tinyodl_rt.h"\nint main(void) { rt_puts("made\\n"); return 0; }\n')
    elf = host.build(project)
    assert elf == project / "build" / "prog.elf"
    result = host.run_qemu(elf, 2, RUN_TIMEOUT_S, count=False, toolchain=toolchain)
    assert (result.ok, result.stdout) == (True, "made\n")


@pytest.mark.qemu
def test_build_error_carries_the_compilers_first_error(tmp_path: Path, toolchain: host.Toolchain) -> None:
    project = tmp_path / "project"
    write_makefile_project(project, "int main(void) { return 0 }\n")
    with pytest.raises(host.BuildError) as raised:
        host.build(project)
    assert str(raised.value).startswith(f"{project / 'prog.c'}:1:26: error: expected ';'")


@pytest.mark.qemu
def test_doctor_reports_every_piece(toolchain: host.Toolchain) -> None:
    checks = host.doctor()
    assert [name for name, _, _ in checks] == [host.GCC, "picolibc", host.QEMU, "instruction-count plugin"]
    assert all(ok for _, ok, _ in checks), checks


def test_linker_script_has_an_l1_region_of_exactly_l1_bytes() -> None:
    script = host.render_linker_script(l1_bytes=100_000, l2_bytes=1_000_001, stack_bytes=4096, num_cores=8)
    assert "L2 (rwx) : ORIGIN = 0x80000000, LENGTH = 1000001" in script
    assert "L1 (rw)  : ORIGIN = 0x800f5000, LENGTH = 100000" in script
    assert "__stack_bytes = 4096;" in script


def test_linker_script_rejects_sizes_beyond_qemu_memory() -> None:
    with pytest.raises(ValueError, match="exceed"):
        host.render_linker_script(l1_bytes=128 * 1024, l2_bytes=126 * 1024 * 1024, stack_bytes=8192, num_cores=8)


def test_counts_json_is_parsed_per_hart_and_region() -> None:
    text = '{"cycle_model": {}, "harts": [{"hart": 0, "regions": {"0": {"insns": 5, "cycles": 7}}}, ' \
           '{"hart": 1, "regions": {}}]}'
    assert host.parse_counts(text) == {0: {0: host.RegionCount(5, 7)}, 1: {}}

"""Instruction counts of the conv and gemm kernels in QEMU, per core, at 1 and 8 cores.

Run by hand (not part of the test suite):

    python tests/kernels/bench_kernels.py [--batch N] [--keep DIR]

Method: one hart (`-smp 1 -icount shift=0,sleep=off`, so minstret is exact) plays each core of the
team in turn (tests/kernels/bench/tinyodl_rt.h), so every core's share is counted exactly. The conv
kernels need no barrier, which makes this equivalent to a real parallel run.

Printed per kernel: MACs, instructions of the busiest core, MAC/instruction on the busiest core
(MACs / cores / busiest core's instructions), and the balance (mean / max instructions over cores).
"""
from __future__ import annotations

import argparse
import collections
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
KERNELS = HERE.parent.parent / "backend_c" / "kernels"
BENCH = HERE / "bench"
CFLAGS = ["-march=rv32imafc", "-mabi=ilp32f", "-mcmodel=medany", "-O2", "-std=c11", "-Wall",
          "-ffunction-sections", "-fdata-sections", "--specs=picolibc.specs"]


def build(out_dir: pathlib.Path, batch: int) -> pathlib.Path:
    elf = out_dir / "bench.elf"
    sources = [BENCH / "crt0.S", BENCH / "bench_main.c", *sorted(KERNELS.glob("conv*.c")), KERNELS / "linear.c"]
    cmd = ["riscv64-unknown-elf-gcc", *CFLAGS, f"-DBENCH_N={batch}", f"-I{BENCH}", f"-I{KERNELS}",
           *map(str, sources), "-nostartfiles", "-T", str(BENCH / "link.ld"), "-Wl,--gc-sections",
           "-o", str(elf)]
    subprocess.run(cmd, check=True)
    return elf


def run(elf: pathlib.Path) -> str:
    cmd = ["qemu-system-riscv32", "-machine", "virt", "-m", "128M", "-smp", "1", "-cpu", "rv32",
           "-icount", "shift=0,sleep=off", "-bios", "none", "-kernel", str(elf), "-display", "none",
           "-serial", "stdio", "-monitor", "none", "-no-reboot"]
    result = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    if "DONE" not in result.stdout:
        sys.exit(f"benchmark did not finish:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def report(output: str) -> None:
    counts: dict[tuple[str, str, int], list[int]] = collections.defaultdict(list)
    macs: dict[tuple[str, str], int] = {}
    for line in output.splitlines():
        if not line.startswith("R "):
            continue
        _, name, phase, cores, _core, insns, mac = line.split()
        counts[(name, phase, int(cores))].append(int(insns))
        macs[(name, phase)] = int(mac)
    print(f"{'kernel':28s} {'phase':12s} {'MACs':>9s} | {'1 core insns':>12s} {'MAC/insn':>8s} | "
          f"{'8 cores max':>11s} {'MAC/insn':>8s} {'balance':>7s} {'speed-up':>8s}")
    for (name, phase), mac in macs.items():
        one = counts[(name, phase, 1)][0]
        eight = counts[(name, phase, 8)]
        busiest = max(eight)
        balance = sum(eight) / len(eight) / busiest
        print(f"{name:28s} {phase:12s} {mac:9d} | {one:12d} {mac / one:8.3f} | "
              f"{busiest:11d} {mac / 8 / busiest:8.3f} {balance:7.2f} {one / busiest:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1, help="batch size N of the conv cases")
    parser.add_argument("--keep", type=pathlib.Path, help="keep the ELF and raw output in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.keep or pathlib.Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        output = run(build(out_dir, args.batch))
        if args.keep:
            (out_dir / "bench.txt").write_text(output)
    report(output)


if __name__ == "__main__":
    main()

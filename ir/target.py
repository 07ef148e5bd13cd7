"""Target descriptions: what the passes, the backend and the cycle model may assume about the cluster.

A `Target` holds the sizes (cores, L1, L2), the ISA and the memory timing every cycle figure rests on.
Timing is seen from one cluster core: an L1 (TCDM) access takes one cycle, as in the core's pipeline
model; an L2 access blocks the core for `l2_load_cycles` / `l2_store_cycles`; the DMA engine moves a
transfer in `setup + ceil(bytes / bytes_per_cycle)` cycles. Where no public source gives a chip's
timing, the preset keeps the GVSoC pulp-open figures and its `source` says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

KIB = 1024


@dataclass(frozen=True)
class Target:
    name: str
    cores: int
    l1_bytes: int
    l2_bytes: int
    isa: str
    fp16: bool
    # TCDM banks shared by the cores (informational: the cycle model has no bank conflicts)
    l1_banks: int
    # extra cycles when the instruction right after an L1 load uses its value
    l1_load_use_stall: int
    # cycles an L2 load or store blocks a cluster core (L1 latency included), and the extra cycle when the
    # next instruction uses the loaded value
    l2_load_cycles: int
    l2_store_cycles: int
    l2_load_use_stall: int
    # cluster DMA: L2 -> L1 ("in") and L1 -> L2 ("out"), setup cycles and sustained bytes per cycle
    dma_in_setup_cycles: int
    dma_in_bytes_per_cycle: float
    dma_out_setup_cycles: int
    dma_out_bytes_per_cycle: float
    # where the sizes and timing come from, one line
    source: str

    def with_budget(self, *, cores: int | None = None, l1_bytes: int | None = None,
                    l2_bytes: int | None = None) -> Target:
        return replace(self, cores=self.cores if cores is None else cores,
                       l1_bytes=self.l1_bytes if l1_bytes is None else l1_bytes,
                       l2_bytes=self.l2_bytes if l2_bytes is None else l2_bytes)

    def dma_cycles(self, nbytes: int, *, to_l1: bool) -> int:
        """Modelled cycles of one DMA transfer of `nbytes`, L2 -> L1 when `to_l1`, else L1 -> L2."""
        if nbytes <= 0:
            return 0
        if to_l1:
            return self.dma_in_setup_cycles + math.ceil(nbytes / self.dma_in_bytes_per_cycle)
        return self.dma_out_setup_cycles + math.ceil(nbytes / self.dma_out_bytes_per_cycle)

    def describe(self) -> dict[str, Any]:
        """Every size and timing parameter by name (the report shows this next to every cycle figure)."""
        return asdict(self)


# Memory timing of the GVSoC `pulp-open` model (repositories gvsoc/gvsoc and gvsoc/gvsoc-pulp, files
# pulp/pulp_open/cluster.py and soc.py), measured there with bare-metal programs and warm instruction
# caches. An L2 access from a cluster core = L1 1 + cluster interconnect 2 + SoC AXI interconnect 12
# = 15 cycles, blocking, one more when the next instruction uses the value; the model has no contention.
# The cluster DMA (mchan) took 21 + bytes/8 cycles L2 -> L1 and 23 + bytes/7.76 L1 -> L2 (256-byte
# bursts) from the issuing core's first register access to completion.
_GVSOC_PULP_OPEN_TIMING: dict[str, Any] = {
    "l1_load_use_stall": 1,       # CV32E40P user manual, pipeline chapter: load-use stall of 1 cycle
    "l2_load_cycles": 15,         # GVSoC pulp-open, see above
    "l2_store_cycles": 15,        # GVSoC pulp-open: stores block as long as loads
    "l2_load_use_stall": 1,       # GVSoC pulp-open: 16 cycles when the next instruction uses the value
    "dma_in_setup_cycles": 21,    # GVSoC pulp-open mchan, L2 -> L1
    "dma_in_bytes_per_cycle": 8.0,
    "dma_out_setup_cycles": 23,   # GVSoC pulp-open mchan, L1 -> L2
    "dma_out_bytes_per_cycle": 7.76,
}

# A generic PULP cluster: 8 RI5CY/CV32E40P-class cores with FPUs sharing a 128 KiB L1 scratchpad in 16
# word-interleaved banks (the bank count of pulp-open's TCDM), GVSoC pulp-open timing, and the 2 MB of L2
# SRAM of the PULP platform PULP-TrainLib was evaluated on (Nadalini et al., "PULP-TrainLib: Enabling
# On-Device Training for RISC-V Multi-Core MCUs through Performance-Driven Autotuning", SAMOS 2022:
# "a 2 MB SRAM memory (L2)"), taken as 2 MiB.
PULP8 = Target(
    name="pulp8", cores=8, l1_bytes=128 * KIB, l2_bytes=2 * 1024 * KIB, isa="rv32imafc_zfh", fp16=True,
    l1_banks=16, **_GVSOC_PULP_OPEN_TIMING,
    source="generic PULP cluster (8 cores, 128 KiB L1, 2 MB L2 as in PULP-TrainLib's SAMOS 2022 platform); "
           "timing: GVSoC pulp-open model",
)

# GreenWaves GAP8: 8 cluster cores sharing 64 kB of L1, 512 kB of L2 (Bitcraze AI-deck documentation,
# "GAP8" infrastructure page: "the CL L1 memory (64kB)", "the shared L2 memory (512kB)"; GreenWaves'
# GAP8/GAP9 comparison lists L1 80 kB = 64 kB cluster + 16 kB fabric controller, RAM 512 kB). The GAP8
# cluster has no FPU ("Floating Point: None" in the same comparison), so fp32 code built for rv32imafc
# does not run on the real chip; the preset describes its memory. 16 TCDM banks and the timing are
# pulp-open's (assumption: no public GAP8 figures for them).
GAP8 = Target(
    name="gap8", cores=8, l1_bytes=64 * KIB, l2_bytes=512 * KIB, isa="rv32imc", fp16=False,
    l1_banks=16, **_GVSOC_PULP_OPEN_TIMING,
    source="GreenWaves GAP8 (L1 64 kB, L2 512 kB: Bitcraze AI-deck docs, GreenWaves GAP8/GAP9 table; "
           "no cluster FPU); timing: GVSoC pulp-open model (assumed)",
)

# GreenWaves GAP9: 8 compute cores plus a cluster controller, L1 128 kB and 1.5 MB of L2 RAM, FP16/FP32
# (GreenWaves' GAP8/GAP9 comparison, greenwaves-technologies.com/gap8_gap9: "L1 128 kB", "RAM 1.5 MB",
# "Floating Point 16/16alt/32"). 1.5 MB is taken as 1536 KiB. 16 TCDM banks and the timing are
# pulp-open's (assumption).
GAP9 = Target(
    name="gap9", cores=8, l1_bytes=128 * KIB, l2_bytes=1536 * KIB, isa="rv32imafc_zfh", fp16=True,
    l1_banks=16, **_GVSOC_PULP_OPEN_TIMING,
    source="GreenWaves GAP9 (L1 128 kB, L2 1.5 MB, FP16/FP32: GreenWaves GAP8/GAP9 table); "
           "timing: GVSoC pulp-open model (assumed)",
)

# GVSoC's pulp-open as it is built upstream: 8 cluster cores, 64 KiB of TCDM in 16 banks and 1.5 MiB of
# shared L2 (pulp/chips/pulp_open/cluster.json and soc.json of gvsoc/gvsoc-pulp: L1 size 0x10000, shared L2
# 0x180000 in 12 regions), with the model's own timing. The preset to run on a stock GVSoC.
PULP_OPEN = Target(
    name="pulp-open", cores=8, l1_bytes=64 * KIB, l2_bytes=1536 * KIB, isa="rv32imafc_zfh", fp16=True,
    l1_banks=16, **_GVSOC_PULP_OPEN_TIMING,
    source="GVSoC pulp-open as built upstream (L1 64 KiB, L2 1.5 MiB: pulp_open/cluster.json, soc.json); "
           "timing: GVSoC pulp-open model",
)

TARGETS = {target.name: target for target in (PULP8, GAP8, GAP9, PULP_OPEN)}

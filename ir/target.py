"""Target descriptions: what the passes and the backend may assume about the cluster."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Target:
    name: str
    cores: int
    l1_bytes: int
    l2_bytes: int
    isa: str
    fp16: bool

    def with_budget(self, *, cores: int | None = None, l1_bytes: int | None = None,
                    l2_bytes: int | None = None) -> Target:
        return replace(self, cores=self.cores if cores is None else cores,
                       l1_bytes=self.l1_bytes if l1_bytes is None else l1_bytes,
                       l2_bytes=self.l2_bytes if l2_bytes is None else l2_bytes)

    def describe(self) -> dict[str, Any]:
        return asdict(self)


# A PULP-style cluster: 8 RI5CY/CV32E40P-class cores sharing a 128 KiB L1 scratchpad; L2 is what the
# simulated machine leaves after code and the L1 region (QEMU virt with 128 MiB of RAM).
PULP8 = Target(name="pulp8", cores=8, l1_bytes=128 * 1024, l2_bytes=64 * 1024 * 1024, isa="rv32imafc_zfh",
               fp16=True)
TARGETS = {PULP8.name: PULP8}

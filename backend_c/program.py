"""Typed description of the C program the templates render: buffers, kernel calls, regions."""

from __future__ import annotations

from dataclasses import dataclass, field

from tinyodl.backend_c.names import identifier


@dataclass
class Buffer:
    """One tensor in memory. `alias_of` buffers share another's storage (reshape is free). Its identifiers
    share one stem: the buffer's own and those of its initial contents and data (names.py)."""

    symbol: str
    stem: str
    ctype: str            # "float" or "int32_t"
    numel: int
    kind: str             # input | param | const | state | scratch
    value_name: str
    alias_of: Buffer | None = None
    init: str = ""        # C initializer list for params/consts/state, empty for zeros
    offset: int = 0       # byte offset in the L2 arena (the memory plan's), for buffers that are not views

    @property
    def nbytes(self) -> int:
        return self.numel * 4

    def companion(self, kind: str) -> str:
        """The identifier of something the templates declare for this buffer: `init`, `data`, `rows`, `gather`."""
        return identifier(kind, self.stem)


@dataclass
class StructDecl:
    ctype: str
    symbol: str
    fields: list[tuple[str, str]]


@dataclass
class KernelCall:
    """A statement every core executes (a kernel call or a short inline statement)."""

    code: str
    comment: str
    region: int
    decls: list[StructDecl] = field(default_factory=list)
    definitions: str = ""   # C at file scope after the parameter structs (a tile loop's tables and kernel)


@dataclass
class Region:
    """A perf region: one layer (ONNX node) in one phase."""

    id: int
    node: str
    phase: str
    ops: list[str] = field(default_factory=list)
    macs: int = 0


@dataclass
class Program:
    name: str
    cores: int
    steps: int
    buffers: list[Buffer]
    calls: list[KernelCall]
    regions: list[Region]
    inputs: list[Buffer]                 # per-step data inputs (filled by network_set_batch)
    trainable: list[tuple[str, Buffer]]  # (ONNX name, buffer)
    loss: Buffer
    # The copy of each trainable parameter's gradient that the program keeps off-chip (.l3) for the host:
    # the gradient's own L2 storage is reused once its update has read it. None when the loss does not
    # reach the parameter.
    grads: list[Buffer | None] = field(default_factory=list)
    l1_bytes: int = 0  # the L1 scratchpad the tile loops use (0: an untiled program)
    arena_bytes: int = 0  # the static L2 arena holding every buffer that is not a view

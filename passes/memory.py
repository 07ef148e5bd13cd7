"""memory: schedule optimizer updates early, compute liveness over the step, place every value in one
static L2 arena (offsets on the values, a summary on the graph).

Lifetimes are closed intervals of op indices. Index -1 stands for "before the step" (the batch is copied
in, persistent values hold last step's contents) and len(ops) for "after the step" (the host reads the
loss). Parameters, constants and optimizer state persist across steps and live over [-1, len(ops)]; the
step's inputs over [-1, last use]; any other value from its producer to its last use (the loss and the
model's output, which the host reads, to len(ops)). A reshape is a view: it has no bytes of its own and
its uses count as uses of its source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tinyodl.ir.graph import Graph, MemoryPlan, Op, PlannedTensor, Value
from tinyodl.ir.registry import kernel_of, mutated_operands
from tinyodl.ir.types import Phase, Role
from tinyodl.passes.manager import Pass, PassError, register_pass

ALIGN_BYTES = 8
PERSISTENT_ROLES = (Role.PARAM, Role.CONST, Role.STATE)
# Kernels that compute each output element from the input elements at the same index only, so their
# result may overwrite an input of the same size (documented in backend_c/kernels/tinyodl_kernels.h).
IN_PLACE_SAFE = frozenset({
    "add", "relu", "relu_grad", "leaky_relu", "leaky_relu_grad", "sigmoid", "sigmoid_grad", "tanh",
    "tanh_grad", "clip", "clip_grad", "batchnorm", "batchnorm_grad_input",
})


@register_pass
@dataclass(frozen=True)
class Memory(Pass):
    name = "memory"
    l2_bytes: int = 0               # the arena must fit this many bytes; 0 = no budget
    in_place: bool = True           # element-wise results may take over an input's storage where it dies
    schedule_updates: bool = True   # move each optimizer update up to the earliest legal point

    def requires(self, graph: Graph) -> None:
        if self.l2_bytes < 0:
            raise PassError(f"the L2 budget must be >= 0 bytes, got {self.l2_bytes}")

    def run(self, graph: Graph) -> bool:
        if self.schedule_updates:
            graph.ops = schedule_updates(graph.ops)
        plan = plan_memory(graph, in_place=self.in_place)
        if self.l2_bytes and plan.peak_bytes > self.l2_bytes:
            op = graph.ops[plan.peak_op]
            raise PassError(f"the L2 plan needs {plan.peak_bytes} bytes at op #{plan.peak_op} {_kernel(op)} "
                            f"(node {op.node!r}), more than the L2 budget of {self.l2_bytes} bytes")
        return True


# -- update scheduling ------------------------------------------------------------------------------
def schedule_updates(ops: list[Op]) -> list[Op]:
    """The same ops with every update moved up to just after the last op it must follow: the producer of
    anything it reads, any op that reads or writes what it overwrites (conv2d_grad_input and the gemm of
    the input gradient read the weights), and any earlier update touching the same values. Updates never
    move before the loss, and everything else keeps its order."""
    root = _view_roots(ops)
    reads = {id(op): {root(v) for v in op.inputs} for op in ops}
    writes = {id(op): {root(v) for v in op.outputs + written_operands(op)} for op in ops}
    scheduled: list[Op] = []
    floor = 0  # index in `scheduled` after the last forward or loss op
    for op in ops:
        if op.phase is not Phase.UPDATE:
            scheduled.append(op)
            if op.phase in (Phase.FORWARD, Phase.LOSS):
                floor = len(scheduled)
            continue
        touched = reads[id(op)] | writes[id(op)]
        position = floor
        for index, earlier in enumerate(scheduled):
            if writes[id(earlier)] & touched or reads[id(earlier)] & writes[id(op)]:
                position = max(position, index + 1)
        # Updates landing on the same spot keep their original order.
        while position < len(scheduled) and scheduled[position].phase is Phase.UPDATE:
            position += 1
        scheduled.insert(position, op)
    return scheduled


def written_operands(op: Op) -> list[Value]:
    """Operands an op overwrites in place (a tile loop: those its kernel overwrites)."""
    positions = mutated_operands(op)
    return [v for i, v in enumerate(op.inputs) if i in positions]


def _kernel(op: Op) -> str:
    return kernel_of(op.type, op.attrs)[0]


def _view_roots(ops: list[Op]) -> Callable[[Value], Value]:
    """A function mapping a value to the value that owns its storage (through chains of reshapes)."""
    source = {op.outputs[0]: op.inputs[0] for op in ops if _kernel(op) == "reshape"}

    def root(value: Value) -> Value:
        while value in source:
            value = source[value]
        return value
    return root


# -- liveness -------------------------------------------------------------------------------------
@dataclass
class Interval:
    """A block of `size` bytes live over ops [first, last]; `offset` is set by place()."""

    size: int
    first: int
    last: int
    offset: int = -1
    members: list[Value] = field(default_factory=list)   # values stored here, the first one owns it

    def overlaps(self, other: Interval) -> bool:
        return self.first <= other.last and other.first <= self.last


def _aligned(nbytes: int) -> int:
    return -(-max(nbytes, 1) // ALIGN_BYTES) * ALIGN_BYTES


Lifetimes = dict[Value, tuple[int, int]]


def live_intervals(graph: Graph, *, in_place: bool) -> tuple[list[Interval], dict[Value, Interval], Lifetimes]:
    """One interval per block of storage, the block of every non-view value and that value's own lifetime
    (a block taken over in place lives from its first owner's birth to its last member's death)."""
    end = len(graph.ops)
    root = _view_roots(graph.ops)
    last_use: dict[Value, int] = {}
    for index, op in enumerate(graph.ops):
        for value in op.inputs:
            last_use[root(value)] = index
    # The host reads the graph's outputs (the loss) and the model's output (the loss's prediction operand,
    # for `tinyodl eval`) after the step.
    for value in graph.outputs + [op.inputs[0] for op in graph.ops if op.phase is Phase.LOSS and op.inputs]:
        last_use[root(value)] = end
    blocks: list[Interval] = []
    block_of: dict[Value, Interval] = {}
    lifetime: Lifetimes = {}

    def new_block(value: Value, first: int, last: int) -> None:
        lifetime[value] = (first, last)
        block = Interval(_aligned(value.type.nbytes), first, last, members=[value])
        blocks.append(block)
        block_of[value] = block

    for value in graph.graph_values():
        if value.role in PERSISTENT_ROLES:
            new_block(value, -1, end)
        else:
            new_block(value, -1, last_use.get(value, -1))
    for index, op in enumerate(graph.ops):
        if _kernel(op) == "reshape":
            continue
        for value in op.outputs:
            last = max(index, last_use.get(value, index))
            donor = _in_place_donor(op, value, block_of, root, index) if in_place else None
            if donor is None:
                new_block(value, index, last)
            else:
                lifetime[value] = (index, last)
                donor.members.append(value)
                donor.last = max(donor.last, last)
                block_of[value] = donor
    return blocks, block_of, lifetime


def _in_place_donor(op: Op, result: Value, block_of: dict[Value, Interval], root: Callable[[Value], Value],
                    index: int) -> Interval | None:
    """The block of an input whose storage `result` may take: the kernel is element-wise, the input has the
    result's size and type, does not persist across steps, and is not read after this op."""
    if _kernel(op) not in IN_PLACE_SAFE or len(op.outputs) != 1:
        return None
    for value in op.inputs:
        block = block_of.get(root(value))
        if block is None or block.members[0].role in PERSISTENT_ROLES:
            continue
        if value.type.nbytes == result.type.nbytes and value.dtype is result.dtype and block.last == index:
            return block
    return None


# -- placement ------------------------------------------------------------------------------------
def place(blocks: list[Interval]) -> int:
    """Give every block an offset so that blocks live at the same time never share a byte; return the
    arena size. Greedy: blocks in a given order each go to the lowest aligned offset that fits between the
    blocks already placed whose lifetimes overlap. Persistent blocks (live over the whole step) go first so
    they pack at the bottom; the rest is tried in three orders (by size, by lifetime length, by size x
    length) and the smallest arena wins."""
    if not blocks:
        return 0
    span = (min(b.first for b in blocks), max(b.last for b in blocks))
    persistent = sorted((b for b in blocks if (b.first, b.last) == span), key=lambda b: -b.size)
    others = [b for b in blocks if (b.first, b.last) != span]
    orders = [
        sorted(others, key=lambda b: (-b.size, b.first)),
        sorted(others, key=lambda b: (b.first - b.last, -b.size, b.first)),
        sorted(others, key=lambda b: (-b.size * (b.last - b.first + 1), b.first)),
    ]
    best: list[int] | None = None
    best_peak = 0
    for order in orders:
        offsets = _place_in_order(persistent + order)
        peak = max(offsets[id(b)] + b.size for b in blocks)
        if best is None or peak < best_peak:
            best, best_peak = [offsets[id(b)] for b in blocks], peak
    assert best is not None
    for block, offset in zip(blocks, best, strict=True):
        block.offset = offset
    return best_peak


def _place_in_order(order: list[Interval]) -> dict[int, int]:
    placed: list[tuple[Interval, int]] = []
    offsets: dict[int, int] = {}
    for block in order:
        taken = sorted((offset, offset + other.size) for other, offset in placed if other.overlaps(block))
        offset = 0
        for low, high in taken:
            if offset + block.size <= low:
                break
            offset = max(offset, high)
        offsets[id(block)] = offset
        placed.append((block, offset))
    return offsets


def live_bytes(blocks: list[Interval], end: int) -> list[int]:
    """Bytes live during each op index -1 .. end (inclusive): the lower bound of any placement."""
    delta = [0] * (end + 3)
    for block in blocks:
        delta[block.first + 1] += block.size
        delta[block.last + 2] -= block.size
    totals, running = [], 0
    for change in delta[:-1]:
        running += change
        totals.append(running)
    return totals


# -- the plan ------------------------------------------------------------------------------------
def plan_memory(graph: Graph, *, in_place: bool = True) -> MemoryPlan:
    """Place every value of `graph` (in its current op order) in the L2 arena: sets Value.l2_offset on
    every value and graph.memory_plan, and returns the plan."""
    end = len(graph.ops)
    blocks, block_of, lifetime = live_intervals(graph, in_place=in_place)
    peak = place(blocks)
    root = _view_roots(graph.ops)
    for value in graph.all_values():
        value.l2_offset = block_of[root(value)].offset
    totals = live_bytes(blocks, end)
    top = [b for b in blocks if b.offset + b.size == peak]
    # The peak op: among the ops where a block reaching the top of the arena is live, the one with the
    # most live bytes (the op that forces the arena to be this large).
    candidates = [t for t in range(end) if any(b.first <= t <= b.last for b in top)]
    peak_op = max(candidates, key=lambda t: (totals[t + 1], -t)) if candidates else 0
    tensors = []
    for value, block in block_of.items():
        owner = block.members[0]
        first, last = lifetime[value]
        tensors.append(PlannedTensor(value.name, block.offset, _aligned(value.type.nbytes), first, last,
                                     "" if owner is value else owner.name))
    plan = MemoryPlan(peak_bytes=peak, peak_op=peak_op,
                      naive_bytes=sum(_aligned(v.type.nbytes) for v in block_of),
                      lower_bound_bytes=max(totals) if totals else 0, tensors=tuple(tensors))
    graph.memory_plan = plan
    return plan

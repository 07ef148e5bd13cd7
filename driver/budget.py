"""An early, cheap check that a training step can fit the platform's L2 at all.

The memory pass plans L2 exactly, but only after the tiling pass, whose search grows with the tensors; a
model imported with a batch far too large for the platform would spend minutes there before the plan fails.
Every step holds all parameters and its inputs in L2 for the whole step and each forward activation at some
point, so their sum is a lower bound of the plan's peak that is known right after import.
"""

from __future__ import annotations

from tinyodl.driver.options import UserError
from tinyodl.ir.graph import Graph
from tinyodl.ir.target import Target


def check_fits_l2(graph: Graph, target: Target) -> None:
    """Refuse, naming the sizes, a forward graph whose parameters, inputs and largest activation exceed L2."""
    params = sum(value.type.nbytes for value in graph.params)
    inputs = sum(value.type.nbytes for value in graph.inputs)
    largest, node = 0, ""
    for op in graph.ops:
        produced = sum(value.type.nbytes for value in op.outputs)
        if produced > largest:
            largest, node = produced, op.node
    needed = params + inputs + largest
    if needed > target.l2_bytes:
        raise UserError(f"the training step needs at least {needed} bytes of L2 (parameters {params}, inputs "
                        f"{inputs}, the output of node '{node}' {largest}); the platform's L2 is "
                        f"{target.l2_bytes} bytes (--l2, or a smaller --batch)")

"""ONNX model -> forward IR graph.

Data inputs become graph inputs, initializers read as tensors become frozen parameters (the training pass
decides what learns), Constant nodes become constants, and every node becomes one IR op or an alias.
Operands known at import time (Reshape shapes, Clip bounds) are folded into attributes.
"""

from __future__ import annotations

from tinyodl.frontend.errors import FrontendError
from tinyodl.frontend.onnx_load import (
    DEFAULT_DOMAINS,
    Source,
    data_inputs,
    first_line,
    load_model,
    shown,
    tensor_array,
)
from tinyodl.frontend.onnx_ops import CONVERTERS, ImportState, NodeContext
from tinyodl.ir.graph import Graph
from tinyodl.ir.types import DType, TensorType
from tinyodl.ir.verify import verify_graph


def import_onnx(path_or_model: Source, *, batch: int | None = None) -> Graph:
    """Import an ONNX file (or ModelProto) as a verified forward graph with static shapes.

    `batch` replaces axis 0 of every data input (and constant Reshape targets that spell the old batch).
    Raises FrontendError, with a one-line message naming the file, input or node, for any model that
    tinyodl cannot take.
    """
    loaded = load_model(path_or_model, batch)
    onnx_graph = loaded.model.graph
    graph = Graph(loaded.name)
    state = ImportState(graph, loaded.opset, loaded.shapes)
    for vi in data_inputs(onnx_graph):
        state.values[vi.name] = graph.add_input(vi.name, TensorType(loaded.shapes[vi.name], DType.F32))
    for name, init in loaded.initializers.items():
        try:
            state.constants[name] = tensor_array(init)
        except ValueError as exc:  # storage numpy cannot decode (the sizes are checked when loading)
            raise FrontendError(f"{loaded.where}: initializer '{shown(name)}' cannot be decoded: "
                                f"{first_line(exc)}") from None
        state.initializers.add(name)
    state.consumed = {name for node in onnx_graph.node for name in node.input}
    state.consumed |= {vi.name for vi in onnx_graph.output}

    for index, node in enumerate(onnx_graph.node):
        cx = NodeContext(state, node, index)
        convert = CONVERTERS.get(node.op_type) if node.domain in DEFAULT_DOMAINS else None
        if convert is None:
            raise cx.error("unsupported operator")
        convert(cx)

    for vi in onnx_graph.output:
        try:
            graph.outputs.append(state.tensor(vi.name))
        except KeyError:
            raise FrontendError(f"{loaded.where}: graph output '{vi.name}' is not computed by any "
                                "supported node") from None
    # Parameters in initializer order (as exported, e.g. a PyTorch state_dict), untied copies after the
    # initializer they copy, then constants.
    order = {name: position for position, name in enumerate(loaded.initializers)}
    graph.params.sort(key=lambda value: order.get(state.untied.get(value.name, value.name), len(order)))
    verify_graph(graph)
    return graph

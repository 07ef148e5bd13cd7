"""The training graph as ONNX: every example exports, passes the checker, one node per op; its standard
part computes what the reference executor computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from tinyodl.driver.options import Options
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.ir.executor import Executor
from tinyodl.ir.graph import Graph
from tinyodl.ir.onnx_export import DOMAIN, export_onnx
from tinyodl.ir.text import parse_graph, print_graph

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.onnx"))


def training_graph(model: Path, **options: object) -> Graph:
    """The default pipeline's graph: trained, tiled for L1, planned in L2."""
    return build_training_graph(model, Options(**options))  # type: ignore[arg-type]


@pytest.mark.parametrize("model", EXAMPLES, ids=lambda path: path.stem)
@pytest.mark.parametrize("optimizer, tiling", [("sgd", True), ("adam", True), ("sgd", False)])
def test_every_example_exports_one_node_per_op(model: Path, optimizer: str, tiling: bool) -> None:
    graph = training_graph(model, optimizer=optimizer, momentum=0.9 if optimizer == "sgd" else 0.0, tiling=tiling)
    exported = export_onnx(graph)
    onnx.checker.check_model(exported, full_check=False)
    assert len(exported.graph.node) == len(graph.ops)
    assert {entry.domain for entry in exported.opset_import} == {"", DOMAIN}
    custom = [node for node in exported.graph.node if node.domain == DOMAIN]
    assert any("_grad" in node.op_type for node in custom)
    update = next(node for node in custom if node.op_type == f"{optimizer}_update")
    assert {attr.name for attr in update.attribute} >= {"lr", "weight_decay"}
    # An update overwrites its parameter: the new contents are a fresh single-assignment value.
    assert any(name.endswith(".next") for name in update.output)
    if tiling:  # a tile loop is exported as the kernel it tiles, its tiling in the doc string
        assert any("tile loop" in node.doc_string for node in exported.graph.node if node.domain == "")
    # The memory plan shows on every tensor Netron lists.
    assert all("L2 arena offset" in info.doc_string for info in exported.graph.value_info)


@pytest.mark.parametrize("model", EXAMPLES, ids=lambda path: path.stem)
def test_forward_and_loss_match_the_reference_executor(model: Path) -> None:
    """With nothing trained, the graph is forward + loss, all standard ONNX: onnx's own evaluator runs it."""
    graph = training_graph(model, train="none")
    exported = export_onnx(graph)
    assert all(node.domain == "" for node in exported.graph.node)
    rng = np.random.default_rng(3)
    feed = {}
    for value in graph.inputs:
        if value.dtype.is_float:
            feed[value.name] = rng.standard_normal(value.shape).astype(np.float32)
        else:
            feed[value.name] = rng.integers(0, 2, value.shape).astype(np.int64)
    (theirs,) = ReferenceEvaluator(exported).run(None, feed)
    ours = Executor(graph).run(feed)[graph.outputs[0].name]
    np.testing.assert_allclose(float(theirs), float(ours), rtol=1e-5)


def test_values_without_contents_become_graph_inputs() -> None:
    """A graph read from IR text has shapes but no parameter contents: parameters are declared as inputs."""
    text = print_graph(training_graph(EXAMPLES[0], optimizer="sgd", momentum=0.9, tiling=False))
    graph = parse_graph(text)
    exported = export_onnx(graph)
    onnx.checker.check_model(exported, full_check=False)
    initialized = {init.name for init in exported.graph.initializer}
    declared = {vi.name for vi in exported.graph.input}
    assert graph.params and {value.name for value in graph.params} <= declared - initialized

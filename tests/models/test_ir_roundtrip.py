"""The textual IR round-trips for every bundled example after every pass of several pipelines."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tinyodl.driver.options import Options
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.ir.text import parse_graph, print_graph
from tinyodl.ir.verify import verify_graph

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _dumps(model: Path, options: Options) -> list[str]:
    out = io.StringIO()
    build_training_graph(model, options, print_after={"all"}, out=out)
    chunks = out.getvalue().split("// ----- IR after ")[1:]
    return [chunk.split("\n", 1)[1] for chunk in chunks]


@pytest.mark.parametrize("options", [Options(), Options(optimizer="adamw", momentum=0.0,
                                                                         train="last:3", fold_bn=True),
                                     Options(loss="mse", optimizer="sgd", momentum=0.9, train="bias")],
                         ids=["sgd", "adamw-foldbn-last3", "mse-bias"])
@pytest.mark.parametrize("name", ["resnet8", "dscnn", "lenet", "mlp"])
def test_every_stage_round_trips(name: str, options: Options) -> None:
    dumps = _dumps(EXAMPLES / f"{name}.onnx", options)
    assert len(dumps) == 5  # import, canonicalize, training, tiling, memory
    for text in dumps:
        graph = parse_graph(text)
        verify_graph(graph)
        assert _without_comments(print_graph(graph)) == _without_comments(text)


def _without_comments(text: str) -> str:
    """The memory plan's summary is a comment line derived from the offsets, which do round-trip."""
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith("//"))

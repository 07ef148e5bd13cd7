"""Export the example models of ``examples/models.py`` to ONNX.

Usage::

    python examples/make_examples.py [--out examples] [--models resnet8 dscnn ...]

Every model is exported with the legacy TorchScript exporter (``dynamo=False``) in eval
mode, opset 17, batch 1, graph input ``input`` and output ``logits``, *without* constant
folding (constant folding would also fuse Conv+BatchNormalization, and the compiler wants
to see the BatchNormalization nodes).  The result is then cleaned up with the onnx API:

* the constant-only subgraph that computes the pads of a zero ``Pad`` is evaluated and the
  Pad is folded into the following ``Conv``'s ``pads`` attribute (DS-CNN's asymmetric
  TensorFlow 'same' padding);
* dead nodes and unused initializers are removed; initializers are ordered like the
  PyTorch ``state_dict()`` (their names *are* the state_dict keys);
* doc strings and stale shape annotations are dropped, shapes are re-inferred (static);
* the model is checked with ``onnx.checker.check_model(full_check=True)``.

The output is byte-deterministic: running the script twice produces identical files.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

HERE = Path(__file__).resolve().parent
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

ALLOWED_OPS = frozenset(
    {
        "Conv", "Gemm", "MatMul", "Add", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip",
        "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape",
        "BatchNormalization", "Softmax", "Identity", "Dropout", "Constant",
    }
)  # fmt: skip


def load_models_module() -> ModuleType:
    """Import ``examples/models.py`` by path (``examples`` is not a package)."""
    spec = importlib.util.spec_from_file_location("tinyodl_example_models", HERE / "models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- export


def torch_export(module: object, input_shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """Raw legacy-TorchScript export of an eval-mode module, returned as a ModelProto."""
    import torch

    assert list(input_shapes) == [INPUT_NAME], input_shapes
    example = torch.zeros(input_shapes[INPUT_NAME])
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The legacy exporter is deprecated (but still the one that yields clean graphs),
        # and without constant folding it warns about the unfoldable Slice of ZeroPad2d.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,  # type: ignore[arg-type]
            (example,),
            Path(tmp) / "raw.onnx",
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            do_constant_folding=False,  # keeps BatchNormalization (no Conv+BN fusion)
            training=torch.onnx.TrainingMode.EVAL,
            export_params=True,
            keep_initializers_as_inputs=False,
        )
        return onnx.load(str(Path(tmp) / "raw.onnx"))


# --------------------------------------------------------------------------- cleanup


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [node for node in graph.node if name in node.input]


def _eval_constant(graph: onnx.GraphProto, name: str) -> np.ndarray:
    """Evaluate tensor ``name`` if it only depends on Constant-like nodes (no inputs/weights)."""
    producers = _producers(graph)
    order: list[onnx.NodeProto] = []
    seen: set[str] = set()

    def visit(tensor: str) -> None:
        if tensor in seen:
            return
        seen.add(tensor)
        node = producers.get(tensor)
        if node is None:
            raise ValueError(f"{name!r} is not a constant expression (depends on {tensor!r})")
        for inp in node.input:
            if inp:
                visit(inp)
        if node not in order:
            order.append(node)

    visit(name)
    sub = helper.make_graph(
        order, "const", [], [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)]
    )
    sub_model = helper.make_model(sub, opset_imports=[helper.make_opsetid("", OPSET)])
    (value,) = ReferenceEvaluator(sub_model).run(None, {})
    return np.asarray(value)


def fold_zero_pad_into_conv(model: onnx.ModelProto) -> int:
    """Fold every constant-zero ``Pad`` feeding only a 2-D ``Conv`` into the Conv's pads."""
    graph = model.graph
    folded = 0
    for pad in [n for n in graph.node if n.op_type == "Pad"]:
        mode = next((a.s.decode() for a in pad.attribute if a.name == "mode"), "constant")
        if mode != "constant":
            continue
        pads = _eval_constant(graph, pad.input[1]).astype(np.int64).tolist()
        if len(pad.input) > 2 and pad.input[2] and np.any(_eval_constant(graph, pad.input[2]) != 0):
            continue  # non-zero fill value
        if len(pad.input) > 3 and pad.input[3]:
            continue  # 'axes' input: not produced by torch, keep it simple
        consumers = _consumers(graph, pad.output[0])
        if len(consumers) != 1 or consumers[0].op_type != "Conv" or len(pads) != 8:
            continue
        conv = consumers[0]
        if pads[0] or pads[1] or pads[4] or pads[5]:
            continue  # padding batch or channel dims cannot be folded into a Conv
        attrs = {a.name: a for a in conv.attribute}
        if "auto_pad" in attrs and attrs["auto_pad"].s not in (b"", b"NOTSET"):
            continue
        old = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]
        # ONNX Pad: [n_b, c_b, h_b, w_b, n_e, c_e, h_e, w_e]; Conv: [h_b, w_b, h_e, w_e].
        extra = [pads[2], pads[3], pads[6], pads[7]]
        new = [a + b for a, b in zip(old, extra, strict=True)]
        if "pads" in attrs:
            attrs["pads"].ints[:] = new  # in place: keeps the attribute order
        else:
            conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        graph.node.remove(pad)
        folded += 1
    return folded


def remove_dead_nodes(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs are not needed for the graph outputs, and unused initializers."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def order_initializers(model: onnx.ModelProto, key_order: list[str]) -> None:
    """Sort initializers by ``state_dict`` order (names not in it go last, by name)."""
    rank = {k: i for i, k in enumerate(key_order)}
    inits = sorted(model.graph.initializer, key=lambda t: (rank.get(t.name, len(rank)), t.name))
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)


def strip_metadata(model: onnx.ModelProto) -> None:
    model.doc_string = ""
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        vi.doc_string = ""
    for t in model.graph.initializer:
        t.doc_string = ""
    del model.metadata_props[:]


def set_static_io(
    model: onnx.ModelProto, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
) -> None:
    """Pin graph input/output shapes and re-infer every intermediate shape from scratch."""
    graph = model.graph
    (inp,) = graph.input
    (out,) = graph.output
    f32 = onnx.TensorProto.FLOAT
    graph.input.remove(inp)
    graph.input.append(helper.make_tensor_value_info(INPUT_NAME, f32, list(input_shape)))
    graph.output.remove(out)
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, f32, list(output_shape)))
    del graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    graph.value_info.extend(inferred.graph.value_info)


def check_static(model: onnx.ModelProto) -> None:
    """Every tensor (inputs, outputs, intermediates) must have a fully static shape."""
    graph = model.graph
    typed = {vi.name: vi for vi in [*graph.input, *graph.output, *graph.value_info]}
    for node in graph.node:
        for name in node.output:
            if name not in typed:
                raise ValueError(f"no inferred type for {name!r} ({node.op_type})")
    for vi in typed.values():
        dims = vi.type.tensor_type.shape.dim
        if not vi.type.tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in dims):
            raise ValueError(f"tensor {vi.name!r} does not have a static shape")


def postprocess(
    model: onnx.ModelProto,
    key_order: list[str],
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
) -> onnx.ModelProto:
    fold_zero_pad_into_conv(model)
    remove_dead_nodes(model)
    order_initializers(model, key_order)
    strip_metadata(model)
    set_static_io(model, input_shape, output_shape)
    onnx.checker.check_model(model, full_check=True)
    check_static(model)
    bad = sorted({n.op_type for n in model.graph.node} - ALLOWED_OPS)
    if bad:
        raise ValueError(f"ops outside the allowed set: {bad}")
    if [o.domain for o in model.opset_import] != [""] or model.opset_import[0].version != OPSET:
        raise ValueError(f"unexpected opset imports {model.opset_import}")
    return model


def export_example(name: str, models: ModuleType | None = None) -> onnx.ModelProto:
    """Build model ``name`` from models.py and return its cleaned-up ONNX ModelProto."""
    import torch

    models = models or load_models_module()
    module, shapes = models.build(name)
    with torch.no_grad():
        out_shape = tuple(module(torch.zeros(shapes[INPUT_NAME])).shape)
    raw = torch_export(module, shapes)
    keys = models.used_state_dict_keys(module)
    model = postprocess(raw, keys, tuple(shapes[INPUT_NAME]), out_shape)
    names = [t.name for t in model.graph.initializer]
    if names != keys:
        raise ValueError(f"{name}: initializer names {names} != state_dict keys {keys}")
    return model


def serialize(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: examples/)")
    parser.add_argument("--models", nargs="*", default=None, help="subset of models to export")
    args = parser.parse_args(argv)

    models = load_models_module()
    names = args.models or list(models.MODEL_NAMES)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        model = export_example(name, models)
        data = serialize(model)
        path = args.out / f"{name}.onnx"
        path.write_bytes(data)
        module, _ = models.build(name)
        print(f"{name}: {models.count_parameters(module)} parameters, {len(data)} bytes -> {path}")
        print("  ops: " + ", ".join(f"{op} x{n}" for op, n in op_histogram(model).items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

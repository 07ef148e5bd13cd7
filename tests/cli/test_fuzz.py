"""Seeded fuzz of the command line: valid models and data files, mutated (attributes, dims, dtypes,
initializer bytes, node inputs, opsets; wrong, missing, extra or non-finite arrays), through `simulate
--target reference`, `eval` and `ir` (frontend, pipeline and reference; no C is built). Every case must end
with exit code 0 or 2, and a refusal with exactly one stderr line `tinyodl: error: ...`, no traceback.

TINYODL_FUZZ_CASES sets the number of cases (default 200; the acceptance run uses 1000).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinyodl.cli import main

CASES = int(os.environ.get("TINYODL_FUZZ_CASES", "200"))
A = onnx.AttributeProto


def _f32(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.3).astype(np.float32)


def _graph(name: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], x: tuple[int, ...],
           y: tuple[int, ...], opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv_net() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(_f32(rng, 3, 1, 3, 3), "cw"), numpy_helper.from_array(_f32(rng, 3), "cb"),
             numpy_helper.from_array(np.ones(3, np.float32), "s"), numpy_helper.from_array(_f32(rng, 3), "b"),
             numpy_helper.from_array(np.zeros(3, np.float32), "m"), numpy_helper.from_array(np.ones(3, np.float32), "v"),
             numpy_helper.from_array(_f32(rng, 4, 27), "fw"), numpy_helper.from_array(_f32(rng, 4), "fb")]
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[1, 1],
                         kernel_shape=[3, 3], dilations=[1, 1], group=1),
        helper.make_node("Identity", ["s"], ["s2"], name="tie"),
        helper.make_node("BatchNormalization", ["c", "s2", "b", "m", "v"], ["n"], name="bn", epsilon=1e-5),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1, alpha=1.0, beta=1.0),
    ]
    return _graph("conv_net", nodes, inits, (2, 1, 6, 6), (2, 4), 17)


def _pool_net() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(_f32(rng, 2, 3), "w"), numpy_helper.from_array(np.float32(-0.5), "lo"),
             numpy_helper.from_array(np.float32(2.0), "hi")]
    nodes = [
        helper.make_node("AveragePool", ["x"], ["a"], name="avg", kernel_shape=[2, 2], strides=[1, 1],
                         pads=[0, 0, 1, 1], count_include_pad=0),
        helper.make_node("LeakyRelu", ["a"], ["l"], name="leaky", alpha=0.1),
        helper.make_node("Clip", ["l", "lo", "hi"], ["c"], name="clip"),
        helper.make_node("ReduceMean", ["c"], ["g"], name="gap", axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["g", "w"], ["z"], name="mm"),
        helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=1),
    ]
    return _graph("pool_net", nodes, inits, (2, 2, 4, 4), (2, 3), 17)


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(np.array([2, 2, 4], np.int64), "shape3"),
             numpy_helper.from_array(np.array([0, -1], np.int64), "shape2"),
             numpy_helper.from_array(_f32(rng, 8, 5), "w1"), numpy_helper.from_array(_f32(rng, 5), "b1"),
             numpy_helper.from_array(_f32(rng, 5, 3), "w2")]
    nodes = [
        helper.make_node("Reshape", ["x", "shape3"], ["r3"], name="to3"),
        helper.make_node("Reshape", ["r3", "shape2"], ["r2"], name="to2"),
        helper.make_node("MatMul", ["r2", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="bias"),
        helper.make_node("Tanh", ["hb"], ["t"], name="tanh"),
        helper.make_node("Dropout", ["t"], ["d"], name="drop"),
        helper.make_node("Sigmoid", ["d"], ["s"], name="sigmoid"),
        helper.make_node("Gemm", ["s", "w2"], ["y"], name="fc", alpha=0.5),
    ]
    return _graph("mlp", nodes, inits, (2, 8), (2, 3), 13)


def _gap_net() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(_f32(rng, 2, 1, 3, 3), "dw"), numpy_helper.from_array(_f32(rng, 2, 2), "w"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "axes")]
    nodes = [
        helper.make_node("Conv", ["x", "dw"], ["c"], name="depthwise", group=2, auto_pad="SAME_UPPER"),
        helper.make_node("ReduceMean", ["c", "axes"], ["g"], name="mean", keepdims=1),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Constant", [], ["k"], name="k", value=numpy_helper.from_array(np.float32(2.0))),
        helper.make_node("Gemm", ["f", "w"], ["z"], name="fc"),
        helper.make_node("GlobalAveragePool", ["x"], ["gx"], name="gapx"),
        helper.make_node("Flatten", ["gx"], ["fx"], name="flatx", axis=-3),
        helper.make_node("MatMul", ["fx", "w"], ["zx"], name="mmx"),
        helper.make_node("Add", ["z", "zx"], ["y"], name="sum"),
    ]
    return _graph("gap_net", nodes, inits, (2, 2, 5, 5), (2, 2), 18)


BASES: list[tuple[Callable[[], onnx.ModelProto], tuple[int, ...], int]] = [
    (_conv_net, (1, 6, 6), 4), (_pool_net, (2, 4, 4), 3), (_mlp, (8,), 3), (_gap_net, (2, 5, 5), 2)]

INTS = [0, 1, -1, 2, 3, -7, 5, 2**31, 2**62, -(2**62), 4611686018427387904]
FLOATS = [0.0, -1.0, 1e-12, 1e38, -1e38, float("inf"), float("-inf"), float("nan"), 3.5]
ATTR_NAMES = ["alpha", "beta", "axis", "axes", "pads", "strides", "kernel_shape", "dilations", "group", "epsilon",
              "keepdims", "transA", "transB", "auto_pad", "ceil_mode", "count_include_pad", "allowzero",
              "training_mode", "noop_with_empty_axes", "storage_order", "value_float", "momentum"]
OP_TYPES = ["Relu", "Conv", "Gemm", "MatMul", "Add", "Flatten", "Softmax", "Identity", "MaxPool", "ReduceMean",
            "BatchNormalization", "Clip", "Reshape", "Transpose", "Mul", "LeakyRelu", "Dropout", "If", "Loop"]


def _random_attribute(rng: random.Random, name: str) -> onnx.AttributeProto:
    kind = rng.choice(["int", "float", "ints", "floats", "string"])
    if kind == "int":
        return helper.make_attribute(name, rng.choice(INTS))
    if kind == "float":
        return helper.make_attribute(name, rng.choice(FLOATS))
    if kind == "ints":
        return helper.make_attribute(name, [rng.choice(INTS) for _ in range(rng.choice([0, 1, 2, 4, 5]))],
                                     attr_type=A.INTS)
    if kind == "floats":
        return helper.make_attribute(name, [rng.choice(FLOATS) for _ in range(rng.randint(1, 3))])
    return helper.make_attribute(name, rng.choice(["", "NOTSET", "SAME_LOWER", "VALID", "same_upper", "\n\x1b"]))


def _mutate_attribute(rng: random.Random, node: onnx.NodeProto) -> str:
    if not node.attribute or rng.random() < 0.25:
        name = rng.choice(ATTR_NAMES)
        for attr in list(node.attribute):
            if attr.name == name:
                node.attribute.remove(attr)
        node.attribute.append(_random_attribute(rng, name))
        return f"{node.name}: set {name}"
    attr = rng.choice(list(node.attribute))
    if rng.random() < 0.15:
        node.attribute.remove(attr)
        return f"{node.name}: removed {attr.name}"
    if attr.type == A.INT:
        attr.i = rng.choice(INTS)
    elif attr.type == A.FLOAT:
        attr.f = rng.choice(FLOATS)
    elif attr.type == A.INTS:
        values = list(attr.ints)
        if values and rng.random() < 0.7:
            values[rng.randrange(len(values))] = rng.choice(INTS)
        else:
            values = values[:-1] if values and rng.random() < 0.5 else values + [rng.choice(INTS)]
        del attr.ints[:]
        attr.ints.extend(values)
    else:
        node.attribute.remove(attr)
        node.attribute.append(_random_attribute(rng, attr.name))
    return f"{node.name}: changed {attr.name}"


def _mutate_tensor_bytes(rng: random.Random, init: onnx.TensorProto) -> str:
    if init.HasField("raw_data"):
        data = bytearray(init.raw_data)
    else:
        try:
            data = bytearray(numpy_helper.from_array(numpy_helper.to_array(init)).raw_data)
        except (ValueError, TypeError):  # already damaged by an earlier mutation
            data = bytearray()
    choice = rng.choice(["flip", "truncate", "extend", "special"])
    if choice == "flip" and data:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif choice == "truncate":
        data = data[:rng.randrange(len(data) + 1)]
    elif choice == "extend":
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
    elif len(data) % 4 == 0 and data and init.data_type == TensorProto.FLOAT:
        values = np.frombuffer(bytes(data), np.float32).copy()
        values[rng.randrange(len(values))] = rng.choice([np.nan, np.inf, 3e38, -3e38, 1e-45])
        data = bytearray(values.tobytes())
    for field_name in ("float_data", "int64_data", "int32_data", "double_data"):
        init.ClearField(field_name)
    init.raw_data = bytes(data)
    return f"bytes of {init.name}: {choice}"


def _mutate_model(rng: random.Random, model: onnx.ModelProto) -> str:
    graph = model.graph
    kind = rng.choice(["attribute", "attribute", "attribute", "dims", "dtype", "bytes", "bytes", "inputs",
                       "opset", "op_type", "order", "output"])
    node = rng.choice(list(graph.node))
    if kind == "attribute":
        return _mutate_attribute(rng, node)
    if kind == "dims":
        if rng.random() < 0.5:
            target = rng.choice([*graph.input, *graph.output]).type.tensor_type.shape.dim
            dim = target[rng.randrange(len(target))]
            if rng.random() < 0.2:
                dim.dim_param = "batch"
            else:
                dim.dim_value = rng.choice([0, 1, 3, 7, 2**31, 2**40, 1000003])
            return "io dims"
        init = rng.choice(list(graph.initializer))
        dims = list(init.dims)
        if dims and rng.random() < 0.7:
            dims[rng.randrange(len(dims))] = rng.choice([0, 1, 2, 5, 2**40])
        else:
            dims = dims[:-1] if dims and rng.random() < 0.5 else dims + [1]
        del init.dims[:]
        init.dims.extend(dims)
        return f"dims of {init.name}"
    if kind == "dtype":
        dtype = rng.choice([0, 2, 3, 5, 6, 7, 9, 10, 11, 16, 25, 67])
        if rng.random() < 0.5:
            graph.input[0].type.tensor_type.elem_type = dtype
            return f"input dtype {dtype}"
        init = rng.choice(list(graph.initializer))
        init.data_type = dtype
        return f"dtype of {init.name}: {dtype}"
    if kind == "bytes":
        return _mutate_tensor_bytes(rng, rng.choice(list(graph.initializer)))
    if kind == "inputs":
        names = [v.name for v in graph.input] + [i.name for i in graph.initializer] + \
            [o for n in graph.node for o in n.output]
        inputs = list(node.input)
        action = rng.choice(["replace", "drop", "add", "blank"])
        if action == "replace" and inputs:
            inputs[rng.randrange(len(inputs))] = rng.choice([*names, "nowhere"])
        elif action == "drop" and inputs:
            inputs.pop(rng.randrange(len(inputs)))
        elif action == "add":
            inputs.append(rng.choice(names))
        elif inputs:
            inputs[rng.randrange(len(inputs))] = ""
        del node.input[:]
        node.input.extend(inputs)
        return f"{node.name}: inputs {action}"
    if kind == "opset":
        model.opset_import[0].version = rng.choice([1, 7, 11, 12, 13, 15, 17, 18, 20, 21, 22, 99])
        return f"opset {model.opset_import[0].version}"
    if kind == "op_type":
        node.op_type = rng.choice(OP_TYPES)
        return f"{node.name}: op {node.op_type}"
    if kind == "order":
        nodes = list(graph.node)
        rng.shuffle(nodes)
        del graph.node[:]
        graph.node.extend(nodes)
        return "node order"
    graph.output[0].name = rng.choice([o for n in graph.node for o in n.output] + ["nothing"])
    return f"output {graph.output[0].name}"


def _data(rng: random.Random, sample: tuple[int, ...], classes: int) -> tuple[dict[str, Any], str]:
    seeded = np.random.default_rng(rng.randrange(2**32))
    rows = 4
    arrays: dict[str, Any] = {"x": seeded.standard_normal((rows, *sample)).astype(np.float32),
                              "target": seeded.integers(0, classes, rows)}
    if rng.random() < 0.5:
        return arrays, "valid"
    kind = rng.choice(["shape", "dtype", "nan", "missing", "extra", "scalar", "empty", "labels", "target_dtype",
                       "rows"])
    key = rng.choice(["x", "target"])
    if kind == "shape":
        arrays[key] = np.zeros(rng.choice([(rows, 3), (rows, *sample, 1), (rows,), (rows, 2, 2, 2, 2)]), np.float32)
    elif kind == "dtype":
        arrays[key] = arrays[key].astype(rng.choice([np.int8, np.float16, np.float64, np.complex64, np.bool_, "U3"]))
    elif kind == "nan":
        values = arrays["x"].copy()
        values.flat[rng.randrange(values.size)] = rng.choice([np.nan, np.inf, -np.inf])
        arrays["x"] = values
    elif kind == "missing":
        del arrays[key]
    elif kind == "extra":
        arrays[rng.choice(["extra", "x2", "target.npy"])] = np.zeros(rng.choice([(3,), (rows, 2)]))
    elif kind == "scalar":
        arrays[key] = np.float32(1.0)
    elif kind == "empty":
        arrays = {name: array[:0] for name, array in arrays.items()}
    elif kind == "labels":
        arrays["target"] = np.full(rows, rng.choice([-1, classes, 2**40]), np.int64)
    elif kind == "target_dtype":
        arrays["target"] = arrays["target"].astype(np.float32)
    else:
        arrays[key] = arrays[key][:rng.randint(1, 3)]
    return arrays, kind


def _case(seed: int, folder: Path) -> tuple[list[str], str]:
    rng = random.Random(seed)
    build, sample, classes = rng.choice(BASES)
    model = build()
    mutations = [_mutate_model(rng, model) for _ in range(rng.choice([0, 1, 1, 1, 2, 3]))]
    blob = model.SerializeToString()
    if rng.random() < 0.05:
        damaged = bytearray(blob)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        blob = bytes(damaged)
        mutations.append("serialized bytes")
    model_path = folder / "m.onnx"
    model_path.write_bytes(blob)
    arrays, data_kind = _data(rng, sample, classes)
    data_path = folder / "d.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.savez(data_path, **arrays)
    command = rng.choice(["simulate", "simulate", "eval", "ir"])
    if command == "ir":
        argv = ["ir", str(model_path)]
    elif command == "eval":
        argv = ["eval", str(model_path), "--data", str(data_path)]
    else:
        argv = ["simulate", str(model_path), "--target", "reference", "--quiet", "--steps", str(rng.randint(1, 2))]
        if rng.random() < 0.8:
            argv += ["--data", str(data_path), "--epochs", "1"]
    return argv, f"model {build.__name__} {mutations or ['unmutated']}, data {data_kind}, argv {argv}"


def _run(argv: list[str]) -> tuple[int, str, list[str]]:
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException:  # noqa: BLE001 - any escape is what this test looks for
            return -1, traceback.format_exc(), []
    return code, err.getvalue(), [f"{w.category.__name__}: {w.message}" for w in caught]


@pytest.mark.parametrize("seed", range(CASES))
def test_fuzzed_inputs_end_in_one_line_or_succeed(seed: int, tmp_path: Path) -> None:
    argv, what = _case(seed, tmp_path)
    code, stderr, caught = _run(argv)
    assert code != -1, f"seed {seed}: {what}: traceback\n{stderr}"
    assert code in (0, 2), f"seed {seed}: {what}: exit {code}\n{stderr}"
    assert not caught, f"seed {seed}: {what}: Python warnings {caught}"
    lines = stderr.splitlines()
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("tinyodl: error: "), f"seed {seed}: {what}:\n{stderr}"
    else:
        assert all(line.startswith("tinyodl: warning: ") for line in lines), f"seed {seed}: {what}:\n{stderr}"

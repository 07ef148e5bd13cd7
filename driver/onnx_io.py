"""Model out and in: trained parameters written into the input ONNX model, and saved parameters and
optimizer state read back into a training graph, so that continual learning can be a sequence of runs.

Saved values are tinyodl's parameters after the pipeline, by ONNX initializer name. A state file
(`--save-state`) holds every parameter plus the optimizer state (momentum buffers, Adam moments, the step
count) under `optimizer_state/<state name>`, at the precision the run kept them (float64 on the reference),
so that a run resumed from it continues exactly where the first one stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from tinyodl.driver.check import SimOutput
from tinyodl.driver.files import write_atomic
from tinyodl.driver.options import UserError
from tinyodl.frontend.onnx_load import shown, untied_initializers
from tinyodl.ir.graph import Graph, Value
from tinyodl.ir.types import Role

STATE_PREFIX = "optimizer_state/"


def parameter_values(graph: Graph, trained: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every parameter of the graph by initializer name: the trained value where `trained` has one (flat
    or shaped), the graph's own otherwise (frozen parameters)."""
    values = {}
    for value in _parameters(graph):
        name = value.origin or value.name
        array = trained.get(name)
        values[name] = np.asarray(graph.initial[value.name] if array is None else array).reshape(value.shape)
    return values


def _parameters(graph: Graph) -> list[Value]:
    return [value for value in graph.params if value.role is Role.PARAM]


def save_state(path: Path, params: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray]) -> None:
    """Parameters (by initializer name) and optimizer state (by state value name), precision kept."""
    arrays = dict(params) | {f"{STATE_PREFIX}{name}": array for name, array in state.items()}

    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:
            np.savez(handle, **{name: np.asarray(array) for name, array in arrays.items()})
    write_atomic(path, write)


def final_state(graph: Graph, simulated: SimOutput) -> dict[str, np.ndarray]:
    """The optimizer state a simulated program ended with, by state name (it prints its state after the
    last step as raw float32 / int32 words)."""
    printed = simulated.states[max(simulated.states)].state if simulated.states else {}
    return {value.name: np.asarray(printed[value.name]).view(value.dtype.numpy).reshape(value.shape)
            for value in graph.state if value.name in printed}


# -- ONNX out -----------------------------------------------------------------------------------
def check_onnx_export(fold_bn: bool) -> None:
    """Refuse before any work what `save_onnx` could not write faithfully."""
    if fold_bn:
        raise UserError("--save-onnx cannot be combined with --fold-bn: folded convolution weights are no longer "
                        "the model's initializers (save with --save-params instead)")


def save_onnx(model: Path | onnx.ModelProto, out: Path, params: Mapping[str, np.ndarray]) -> None:
    """Write `model` with each initializer named in `params` replaced by that value (same dtype and dims);
    every other initializer, node and attribute stays as it was."""
    proto = _read_onnx(model)
    _untie(proto.graph, set(params))
    found = set()
    for init in proto.graph.initializer:
        if init.name not in params:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        array = np.asarray(params[init.name]).astype(dtype).reshape(tuple(init.dims))
        init.CopyFrom(numpy_helper.from_array(array, init.name))
        found.add(init.name)
    missing = sorted(set(params) - found)
    if missing:
        raise UserError(f"--save-onnx: parameter '{shown(missing[0])}' is not an initializer of the model")
    onnx.checker.check_model(proto)
    write_atomic(out, lambda temp: onnx.save(proto, str(temp)))


def _untie(graph: onnx.GraphProto, names: set[str]) -> None:
    """The Identity copies of initializers that tinyodl trained as parameters of their own (see
    untied_initializers) become initializers of their own, in place of the Identity that made them."""
    untied = {name: source for name, source in untied_initializers(graph).items() if name in names}
    if not untied:
        return
    inits = {init.name: init for init in graph.initializer}
    kept = [node for node in graph.node if not (node.op_type == "Identity" and node.output[0] in untied)]
    del graph.node[:]
    graph.node.extend(kept)
    for name, source in untied.items():
        copy = graph.initializer.add()
        copy.CopyFrom(inits[source])
        copy.name = name


def _read_onnx(model: Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    try:
        return onnx.load(str(model))  # external data too, inlined in the result
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise UserError(f"{shown(str(model))}: cannot read the model again ({shown(str(exc))})") from None


# -- parameters in ------------------------------------------------------------------------------
@dataclass
class Saved:
    """Arrays read from a parameter or state file."""

    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]


def read_saved(path: Path) -> Saved:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{shown(str(path))}: no such parameter file")
    if path.suffix.lower() == ".onnx":
        return _read_onnx_params(path)
    arrays = _read_npz(path)
    params = {name: array for name, array in arrays.items() if not name.startswith(STATE_PREFIX)}
    state = {name[len(STATE_PREFIX):]: array for name, array in arrays.items() if name.startswith(STATE_PREFIX)}
    return Saved(params, state)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, each checked from its header before it is read (as data files are)."""
    from tinyodl.driver.data import _read_npz as read_checked

    where = shown(str(path))
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except OSError as exc:
        raise UserError(f"{where}: cannot read ({shown(exc.strerror or str(exc))})") from None
    if magic == b"\x93NUMPY":
        raise UserError(f"{where}: a single array, expected an .npz of arrays by initializer name")
    return read_checked(path, where)


def _read_onnx_params(path: Path) -> Saved:
    from tinyodl.frontend import FrontendError
    from tinyodl.frontend.onnx_load import load_model, tensor_array

    try:
        loaded = load_model(path)
    except FrontendError as exc:
        raise UserError(str(exc)) from None
    # Integer initializers (Reshape shapes and the like) are never parameters. Identity copies of an
    # initializer are parameters of their own, holding its values.
    arrays = {name: tensor_array(init) for name, init in loaded.initializers.items()}
    arrays |= {name: arrays[source] for name, source in untied_initializers(loaded.model.graph).items()}
    return Saved({name: array for name, array in arrays.items() if np.issubdtype(array.dtype, np.floating)}, {})


def apply_saved(graph: Graph, saved: Saved, path: Path, *, model_initializers: frozenset[str] = frozenset(),
                optimizer_state: bool = True) -> None:
    """Start from saved values: each named parameter (and optimizer state) takes the saved contents.

    Names the graph does not hold are refused, except initializers of the model itself that the pipeline
    folded away (an .onnx source carries them all); parameters the file lacks keep the model's values.
    Without `optimizer_state` (evaluation) a state file's optimizer state is ignored."""
    where = shown(str(path))
    by_name = {value.origin or value.name: value for value in _parameters(graph)}
    for name, array in sorted(saved.params.items()):
        value = by_name.get(name)
        if value is None:
            if name in model_initializers and path.suffix.lower() == ".onnx":
                continue
            known = ", ".join(list(by_name)[:6]) + (", ..." if len(by_name) > 6 else "")
            raise UserError(f"{where}: '{shown(name)}' is not a parameter of the model (its parameters: "
                            f"{shown(known)})")
        graph.initial[value.name] = _checked(where, name, array, value)
    states = {value.name: value for value in graph.state}
    for name, array in sorted(saved.state.items() if optimizer_state else ()):
        value = states.get(name)
        if value is None:
            raise UserError(f"{where}: optimizer state '{shown(name)}' has no counterpart in this run (saved with "
                            "another optimizer or momentum setting?)")
        graph.initial[value.name] = _checked(where, f"{STATE_PREFIX}{name}", array, value)


def _checked(where: str, name: str, array: np.ndarray, value: Value) -> np.ndarray:
    if array.shape != value.shape:
        raise UserError(f"{where}: '{shown(name)}' has shape {list(array.shape)}, the model's is {list(value.shape)}")
    if value.dtype.is_float:
        if not np.issubdtype(array.dtype, np.floating):
            raise UserError(f"{where}: '{shown(name)}' holds {array.dtype}, expected floating-point values")
        if not np.all(np.isfinite(array)):
            raise UserError(f"{where}: '{shown(name)}' holds NaN or infinite values")
        return array
    if not np.issubdtype(array.dtype, np.integer):
        raise UserError(f"{where}: '{shown(name)}' holds {array.dtype}, expected integers")
    return array.astype(value.dtype.numpy)


def model_initializer_names(model: Path | onnx.ModelProto) -> frozenset[str]:
    """The initializer names of an ONNX model and of its Identity copies of initializers (parameters of their
    own), without reading tensor contents."""
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        try:
            proto = onnx.load(str(model), load_external_data=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"{shown(str(model))}: cannot read the model again ({shown(str(exc))})") from None
    return frozenset(init.name for init in proto.graph.initializer) | set(untied_initializers(proto.graph))


def init_from(graph: Graph, path: Path, model: Path | onnx.ModelProto, *, fold_bn: bool,
              optimizer_state: bool = True) -> None:
    """`--init-params`: parameters (and optimizer state from a state file) from `path` into the graph."""
    path = Path(path)
    if fold_bn and path.suffix.lower() == ".onnx":
        raise UserError(f"--init-params {shown(str(path))}: an .onnx holds unfolded batch-norm parameters, which "
                        "cannot be combined with --fold-bn (use the .npz that --save-params or --save-state wrote)")
    apply_saved(graph, read_saved(path), path, model_initializers=model_initializer_names(model),
                optimizer_state=optimizer_state)


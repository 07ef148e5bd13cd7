"""`tinyodl eval`: the forward pass only, over every sample of a data file, on the reference or the
simulated cluster; loss, accuracy, confusion matrix and predictions.

The graph is the training pipeline's with nothing trained: forward ops and the loss, no backward and no
update, so evaluation runs exactly the kernels that training runs. The data file may hold any number of
rows: they are cut into batches of the model's batch size, and a last partial batch is padded with zero
rows (label 0) that are computed and then discarded, so every metric is over the file's samples only.
Metrics come from the model outputs (the logits before the loss) in float64 on the host: the loss is the
mean over samples of the per-sample loss, as PyTorch's mean reduction gives for one batch of all samples.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tinyodl.driver.options import Options, UserError
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.driver.precision import check_c_backend
from tinyodl.driver.qemu import read_words
from tinyodl.ir.executor import Executor
from tinyodl.ir.graph import Graph, Value
from tinyodl.ir.types import Phase

# The simulated outputs against the float64 reference: fp32 kernels, as for training losses.
RTOL, ATOL = 1e-4, 1e-5
EVAL_TARGETS = ("reference", "qemu", "gvsoc")


def forward_graph(model: Path | onnx.ModelProto, options: Options) -> Graph:
    """The pipeline's graph with nothing trained: forward ops and the loss only."""
    graph = build_training_graph(model, replace(options, train="none"))
    extra = [op for op in graph.ops if op.phase in (Phase.BACKWARD, Phase.UPDATE)]
    if extra:
        raise AssertionError(f"a graph with nothing trained still has {extra[0].phase.value} ops")
    return graph


def loss_operands(graph: Graph) -> tuple[Value, Value]:
    """(model output, target) of the graph's loss op."""
    loss = next(op for op in graph.ops if op.phase is Phase.LOSS)
    return loss.inputs[0], loss.inputs[1]


# -- data -------------------------------------------------------------------------------------
@dataclass
class EvalData:
    feeds: list[dict[str, np.ndarray]]  # per batch, by graph input name; the last one padded
    targets: np.ndarray                 # one row per sample (labels, or mse targets)
    samples: int


def load_eval_data(graph: Graph, data: Path) -> EvalData:
    """Every row of `data` in batches of the graph's batch size; the arrays are checked as for training."""
    from tinyodl.driver.data import read_model_arrays

    output, target = loss_operands(graph)
    inputs = [value for value in graph.inputs if value is not target]
    where, wanted, checked = read_model_arrays(graph, Path(data), inputs, target)
    first = len(checked[wanted[0][0].name])
    for value, key in wanted[1:]:
        if len(checked[value.name]) != first:
            raise UserError(f"{where}: '{key}' has {len(checked[value.name])} rows, the other arrays {first}")
    samples = len(checked[target.name])
    if samples == 0:
        raise UserError(f"{where}: the arrays hold no samples")
    batch = target.shape[0]
    feeds = []
    for start in range(0, samples, batch):
        feed = {}
        for value, _ in wanted:
            chunk = checked[value.name][start:start + batch]
            padded = np.zeros(value.shape, value.dtype.numpy)
            padded[:len(chunk)] = chunk
            feed[value.name] = padded
        feeds.append(feed)
    targets = checked[target.name].astype(np.float64 if target.dtype.is_float else np.int64)
    return EvalData(feeds, targets, samples)


# -- metrics ----------------------------------------------------------------------------------
@dataclass
class Evaluation:
    loss: float
    samples: int
    outputs: np.ndarray                   # the model outputs, one row per sample (logits for cross-entropy)
    predictions: np.ndarray               # argmax class per sample (cross-entropy), the outputs (mse)
    accuracy: float | None = None         # cross-entropy only
    confusion: list[list[int]] | None = None   # [true class][predicted class]
    per_class: list[dict[str, Any]] = field(default_factory=list)
    check: dict[str, Any] | None = None   # simulated outputs against the reference (qemu target)

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"loss": self.loss, "samples": self.samples}
        if self.accuracy is not None:
            result |= {"accuracy": self.accuracy, "confusion": self.confusion, "per_class": self.per_class}
        if self.check is not None:
            result["check"] = self.check
        return result


def metrics(outputs: np.ndarray, targets: np.ndarray, loss: str) -> Evaluation:
    outputs = np.asarray(outputs, np.float64)
    samples = outputs.shape[0]
    if loss == "mse":
        per_sample = ((outputs - targets) ** 2).reshape(samples, -1).mean(axis=1)
        return Evaluation(float(per_sample.mean()), samples, outputs, outputs)
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(samples)
    predicted = outputs.argmax(axis=1)
    classes = outputs.shape[1]
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (targets, predicted), 1)
    per_class = []
    for label in range(classes):
        support, correct = int(confusion[label].sum()), int(confusion[label, label])
        chosen = int(confusion[:, label].sum())
        per_class.append({"class": label, "support": support, "correct": correct,
                          "recall": correct / support if support else None,
                          "precision": correct / chosen if chosen else None})
    return Evaluation(float(-log_probs[rows, targets].mean()), samples, outputs, predicted,
                      accuracy=float((predicted == targets).mean()), confusion=confusion.tolist(), per_class=per_class)


# -- targets ----------------------------------------------------------------------------------
def reference_outputs(graph: Graph, data: EvalData) -> np.ndarray:
    """The model outputs of every sample in float64 (the graph's parameters as they stand)."""
    output, _ = loss_operands(graph)
    executor = Executor(graph)
    chunks = [executor.run(feed)[output.name] for feed in data.feeds]
    return np.concatenate(chunks)[:data.samples]


def evaluate_graph(graph: Graph, data: EvalData, loss: str,
                   params: Mapping[str, np.ndarray] | None = None) -> Evaluation:
    """Evaluate on the reference. `graph` may be a training graph: only its forward ops and loss run, and
    its own contents are not changed. `params` (by initializer name, flat or shaped) replace parameter
    values, e.g. those a training run ended with."""
    return metrics(reference_outputs(_forward_view(graph, params or {}), data), data.targets, loss)


def _forward_view(graph: Graph, params: Mapping[str, np.ndarray]) -> Graph:
    """A graph sharing `graph`'s values that runs its forward ops and loss, with `params` as contents."""
    view = Graph(graph.name)
    view.ops = [op for op in graph.ops if op.phase in (Phase.FORWARD, Phase.LOSS)]
    view.inputs, view.params = graph.inputs, graph.params
    view.initial = dict(graph.initial)
    for value in graph.params:
        trained = params.get(value.origin or value.name)
        if trained is not None:
            view.initial[value.name] = np.asarray(trained).reshape(value.shape)
    view.outputs = [op.outputs[0] for op in view.ops if op.phase is Phase.LOSS]
    return view


def evaluate_model(model: Path | onnx.ModelProto, data: Path, options: Options, *, params: Path | None = None,
                   target: str = "reference", timeout: float = 600.0, build_dir: Path | None = None,
                   progress: Callable[[str], None] = lambda message: None) -> Evaluation:
    """`tinyodl eval`: the model (with `params` from an .npz or .onnx, if given) on every sample of `data`."""
    from tinyodl.driver.onnx_io import init_from

    if target not in EVAL_TARGETS:
        raise UserError(f"--target {target}: choose from {', '.join(EVAL_TARGETS)}")
    if not timeout > 0:  # NaN fails this too
        raise UserError(f"--timeout must be > 0 seconds, got {timeout}")
    if target != "reference":
        check_c_backend(options, f"eval --target {target}")
    graph = forward_graph(model, options)
    if params is not None:
        init_from(graph, Path(params), model, fold_bn=options.fold_bn, optimizer_state=False)
    eval_data = load_eval_data(graph, Path(data))
    if target == "reference":
        return metrics(reference_outputs(graph, eval_data), eval_data.targets, options.loss)
    outputs, check = evaluate_on_qemu(graph, eval_data, options, timeout=timeout, build_dir=build_dir,
                                      progress=progress, simulator=target)
    evaluation = metrics(outputs, eval_data.targets, options.loss)
    evaluation.check = check
    return evaluation


def evaluate_on_qemu(graph: Graph, data: EvalData, options: Options, *, timeout: float,
                     build_dir: Path | None = None, progress: Callable[[str], None] = lambda message: None,
                     simulator: str = "qemu") -> tuple[np.ndarray, dict[str, Any]]:
    """The forward pass of every batch on the simulated cluster (`simulator`: qemu or gvsoc): (outputs per
    sample, check against the reference). Raises UserError for a bad toolchain or build, SimulationFailed
    when the run fails."""
    from tinyodl.driver.files import write_c_project
    from tinyodl.driver.qemu import SIMULATOR_NAMES, SimulationFailed
    from tinyodl.runtime import host
    from tinyodl.runtime.simulators import SimulatorError, open_simulator

    try:
        sim = open_simulator(simulator, options.target(), count=False)
    except SimulatorError as exc:
        raise UserError(str(exc)) from None
    expected = reference_outputs(graph, data)
    work = Path(build_dir) if build_dir else Path(tempfile.mkdtemp(prefix="tinyodl-eval-"))
    try:
        project = work / "project" if build_dir is None else work
        progress(f"compiling the forward pass of {len(data.feeds)} batch(es) into {project}")
        write_c_project(graph, data.feeds, options, project, outputs=True, platform=sim.platform)
        progress("building with riscv64-unknown-elf-gcc")
        try:
            elf = host.build(project)
        except host.BuildError as exc:
            raise UserError(f"build failed: {exc}") from None
        progress(f"running {len(data.feeds)} batch(es) in {SIMULATOR_NAMES[sim.name]} on "
                 f"{options.target().cores} cores")
        result = sim.run(elf, options.target().cores, timeout, count=False)
        if not result.ok:
            raise SimulationFailed(f"simulation failed: {result.failure}")
        try:
            printed = parse_outputs(result.stdout)
        except ValueError as exc:
            raise SimulationFailed(f"the program's output is malformed: {exc}") from None
    finally:
        if build_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    if sorted(printed) != list(range(len(data.feeds))):
        raise SimulationFailed(f"the program printed the outputs of {len(printed)} of {len(data.feeds)} batches")
    flat = np.concatenate([printed[step] for step in range(len(data.feeds))]).astype(np.float64)
    actual = flat.reshape(-1, *expected.shape[1:])[:data.samples]
    return actual, compare_outputs(expected, actual)


def parse_outputs(stdout: str) -> dict[int, np.ndarray]:
    """The OUT blocks of a program rendered with `outputs`: step -> the model output words as float32."""
    found: dict[int, np.ndarray] = {}
    lines = iter(stdout.splitlines())
    for line in lines:
        parts = line.split()
        if len(parts) != 3 or parts[0] != "OUT":
            continue
        step, numel = int(parts[1]), int(parts[2])
        found[step] = read_words(f"outputs of step {step}", numel, lines).view(np.float32)
    return found


def compare_outputs(expected: np.ndarray, actual: np.ndarray) -> dict[str, Any]:
    """Elementwise |actual - expected| <= ATOL + RTOL |expected|; the worst ratio to that tolerance."""
    diff = np.abs(actual - expected)
    ratio = float(np.max(diff / (ATOL + RTOL * np.abs(expected)), initial=0.0))
    if not np.all(np.isfinite(actual)):
        ratio = float("inf")
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-30)
    return {"ok": ratio <= 1.0, "worst": {"tensor": "outputs", "rel_err": float(np.max(diff, initial=0.0)) / scale,
                                          "tolerance_ratio": ratio},
            "tolerance": {"rtol": RTOL, "atol": ATOL}}


def print_evaluation(evaluation: Evaluation) -> None:
    """Human-readable lines: loss, accuracy, and for cross-entropy the confusion matrix."""
    line = f"loss {evaluation.loss:.6f} over {evaluation.samples} samples"
    if evaluation.accuracy is not None:
        correct = int(round(evaluation.accuracy * evaluation.samples))
        line += f", accuracy {evaluation.accuracy:.4f} ({correct}/{evaluation.samples})"
    print(line)
    if evaluation.confusion is None:
        return
    classes = len(evaluation.confusion)
    width = max(5, len(str(evaluation.samples)) + 1)
    print("confusion (rows: true class, columns: predicted)")
    print(" " * 6 + "".join(f"{c:>{width}}" for c in range(classes)) + f"{'recall':>9}")
    for label_index, row in enumerate(evaluation.confusion):
        recall = evaluation.per_class[label_index]["recall"]
        print(f"{label_index:>6}" + "".join(f"{count:>{width}}" for count in row)
              + (f"{recall:>9.3f}" if recall is not None else f"{'-':>9}"))


def evaluate_before_after(graph: Graph, data: EvalData, loss: str, trained: Mapping[str, np.ndarray],
                          where: Path) -> dict[str, Any]:
    """`simulate --eval`: the report's `eval` entry, on the reference, before training (the graph's own
    parameters) and after (`trained`, the values the run ended with)."""
    before = evaluate_graph(graph, data, loss)
    after = evaluate_graph(graph, data, loss, trained)
    return {"data": str(where), "before": before.to_json(), "after": after.to_json()}


def print_before_after(entry: dict[str, Any]) -> None:
    for when in ("before", "after"):
        result = entry[when]
        line = f"eval {when} training: loss {result['loss']:.6f} over {result['samples']} samples"
        if "accuracy" in result:
            line += f", accuracy {result['accuracy']:.4f}"
        print(line)


def write_predictions(path: Path, evaluation: Evaluation) -> None:
    """The predictions as one .npy: a class per sample (cross-entropy), the raw outputs (mse)."""
    from tinyodl.driver.files import write_atomic

    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:
            np.save(handle, evaluation.predictions)
    write_atomic(path, write)


def print_check(check: dict[str, Any]) -> None:
    worst = check["worst"]
    print(f"check: {'ok' if check['ok'] else 'FAILED'} (simulated outputs vs reference: relative error "
          f"{worst['rel_err']:.3g}, {worst['tolerance_ratio']:.3g}x the tolerance)")

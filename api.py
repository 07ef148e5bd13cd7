"""The Python API: compile an ONNX model to a C project, or simulate training steps and get the losses,
the trained parameters and the report back. The command line is a thin layer over these functions.

`model` is a path to an .onnx file or an `onnx.ModelProto`. Options are keyword arguments with the names of
`tinyodl.Options` (loss, optimizer, lr, momentum, ..., dtype, precision, loss_scale, ..., platform, cores,
l1_bytes, l2_bytes, tiling): an unknown name is a TypeError, a bad value a `tinyodl.UserError` with the CLI's
one-line message.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tinyodl.driver.data import load_batches
from tinyodl.driver.evaluate import Evaluation, evaluate_before_after, load_eval_data
from tinyodl.driver.files import write_c_project
from tinyodl.driver.onnx_io import (
    apply_saved,
    final_state,
    init_from,
    model_initializer_names,
    parameter_values,
    read_saved,
)
from tinyodl.driver.options import Options, UserError
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.driver.precision import check_c_backend, reduced, report_precision
from tinyodl.driver.progress import Progress
from tinyodl.driver.reference import run_reference
from tinyodl.driver.report import reference_report

Model = str | os.PathLike[str] | onnx.ModelProto
SIMULATION_TARGETS = ("qemu", "gvsoc", "reference")


@dataclass
class SimulationResult:
    losses: list[float]                # one per step
    params: dict[str, np.ndarray]      # every parameter (trained or frozen) by ONNX initializer name, after the run
    report: dict[str, Any]             # what `--report` writes; the same keys for every target
    # Optimizer state by IR name after the run (float64 on the reference, the program's float32 on qemu).
    state: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def check(self) -> dict[str, Any]:
        """The comparison against the reference: `ok`, the `worst` tensor, tolerances."""
        return self.report["check"]  # type: ignore[no-any-return]

    @property
    def ok(self) -> bool:
        return bool(self.check["ok"])


def compile(model: Model, out_dir: str | os.PathLike[str], *, data: str | os.PathLike[str] | None = None,
            steps: int = 1, epochs: int | None = None, shuffle: int | None = None, force: bool = False,
            **options: Any) -> Path:
    """Write a self-contained C project (make; make run) that runs `steps` training steps on `data` (a
    deterministic random batch without it; `epochs` and `shuffle` as for `simulate`). Returns the project
    directory. An earlier project there is updated (files tinyodl did not write are kept); a directory that
    holds other files and no project is refused unless `force`."""
    checked = Options.from_kwargs(**options)
    check_c_backend(checked, "compile")
    graph = build_training_graph(_source(model), checked)
    batches = load_batches(graph, _path(data), steps, epochs=epochs, shuffle=shuffle)
    out = Path(out_dir)
    write_c_project(graph, batches, checked, out, force=force)
    return out


def simulate(model: Model, *, data: str | os.PathLike[str] | None = None, steps: int = 1, target: str = "qemu",
             epochs: int | None = None, shuffle: int | None = None,
             init_params: str | os.PathLike[str] | None = None, eval_data: str | os.PathLike[str] | None = None,
             timeout: float = 600.0, build_dir: str | os.PathLike[str] | None = None, progress: bool = False,
             **options: Any) -> SimulationResult:
    """Run `steps` training steps: on the simulated cluster (`target="qemu"`, or `"gvsoc"` for GVSoC pulp-open
    with measured cycles: compile, build, run, check every step against the reference) or on the float64
    reference only (`target="reference"`). With `progress`,
    steps, losses and an ETA go to stderr while it runs. A failed simulated run (trap, timeout) raises
    `tinyodl.SimulationFailed`; a failed check does not raise: see `result.ok` and `result.check`.
    `epochs` replaces `steps` by epochs x floor(rows / batch) (the last partial batch of each epoch is dropped);
    `shuffle` reorders the rows of every epoch from that seed. `init_params` starts from saved parameters (an
    .npz or .onnx, by initializer name; a `--save-state` file also restores the optimizer state); `eval_data`
    evaluates before and after training on the reference (the report's `eval`)."""
    checked = Options.from_kwargs(**options)
    if target not in SIMULATION_TARGETS:
        raise UserError(f"--target {target}: choose from {', '.join(SIMULATION_TARGETS)}")
    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    if not 0 < timeout < math.inf:  # NaN fails this too
        raise UserError(f"--timeout must be a finite number of seconds > 0, got {timeout}")
    if target != "reference":
        check_c_backend(checked, f"--target {target}")
    shown = Progress(quiet=not progress)
    graph = build_training_graph(_source(model), checked)
    if init_params is not None:
        init_from(graph, Path(init_params), _source(model), fold_bn=checked.fold_bn)
    evaluation = load_eval_data(graph, Path(eval_data)) if eval_data is not None else None
    batches = load_batches(graph, _path(data), steps, epochs=epochs, shuffle=shuffle)
    steps = len(batches.steps)
    if target == "reference":
        shown.message(f"reference: {steps} step(s) in float64")
        shown.start_steps("reference", steps)
        reference = run_reference(graph, batches, on_step=shown.step)
        report = reference_report(graph, checked, reference.losses)
        if reduced(checked):
            shown.message(f"reference: the same {steps} step(s) in fp32, to compare")
            report_precision(report, graph, checked, reference,
                             _fp32_reference(model, checked, batches, init_params))
        trained = reference.params
        state = {value.name: reference.executor.param(value.name) for value in graph.state}
    else:
        from tinyodl.driver.qemu import run_on_qemu

        run = run_on_qemu(graph, batches, checked, timeout=timeout, build_dir=_path(build_dir), progress=shown,
                          simulator=target)
        report, trained = run.report, run.simulated.params
        state = final_state(graph, run.simulated)
    if evaluation is not None:
        report["eval"] = evaluate_before_after(graph, evaluation, checked.loss, trained, Path(eval_data or ""))
    losses = [float(item["loss"]) for item in report["steps"]]
    return SimulationResult(losses, parameter_values(graph, trained), report, state)


def _fp32_reference(model: Model, options: Options, batches: Any, init_params: Any) -> Any:
    """The fp32 run of the same steps from the same starting parameters."""
    fp32 = replace(options, dtype="fp32", precision=())
    graph = build_training_graph(_source(model), fp32)
    if init_params is not None:
        # A state file of a loss-scaled run also holds the scale, which the fp32 run has no use for.
        path = Path(init_params)
        saved = read_saved(path)
        ours = {value.name for value in graph.state}
        saved.state = {name: array for name, array in saved.state.items() if name in ours}
        apply_saved(graph, saved, path, model_initializers=model_initializer_names(_source(model)))
    return run_reference(graph, batches)


def evaluate(model: Model, *, data: str | os.PathLike[str], params: str | os.PathLike[str] | None = None,
             target: str = "reference", timeout: float = 600.0, build_dir: str | os.PathLike[str] | None = None,
             progress: bool = False, **options: Any) -> Evaluation:
    """The forward pass only, over every sample of `data` (any number of rows; a last partial batch is padded
    and the padding not counted), with `params` (.npz or .onnx, by initializer name) or the model's own values.
    The result has `loss`, `accuracy` and `confusion` (cross-entropy), `predictions`, `outputs` and, for
    `target="qemu"`, `check` (the simulated outputs against the reference); `to_json()` gives the CLI's JSON."""
    from tinyodl.driver.evaluate import evaluate_model

    checked = Options.from_kwargs(**options)
    return evaluate_model(_source(model), Path(data), checked, params=_path(params), target=target, timeout=timeout,
                          build_dir=_path(build_dir), progress=Progress(quiet=not progress).message)


def _source(model: Model) -> Path | onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, str | os.PathLike):
        return Path(model)
    raise TypeError(f"model must be a path or an onnx.ModelProto, got {type(model).__name__}")


def _path(path: str | os.PathLike[str] | None) -> Path | None:
    return None if path is None else Path(path)

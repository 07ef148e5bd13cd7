"""From a model file and training options to a verified training graph: the compiler's front half."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tinyodl.ir.graph import Graph
from tinyodl.ir.target import PULP8, Target
from tinyodl.ir.text import print_graph
from tinyodl.passes.canonicalize import Canonicalize
from tinyodl.passes.manager import Pass, PassManager, parse_pipeline
from tinyodl.passes.training import Training


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


@dataclass
class TrainingOptions:
    loss: str = "cross_entropy"
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch: int | None = None
    train: str = "all"
    dtype: str = "fp32"
    layout: str = "chw"
    fold_bn: bool = False
    cores: int = 8
    l1_bytes: int = 128 * 1024
    l2_bytes: int = 64 * 1024 * 1024

    def target(self) -> Target:
        """The cluster these options describe: pulp8 with the user's core count and memory budgets."""
        return PULP8.with_budget(cores=self.cores, l1_bytes=self.l1_bytes, l2_bytes=self.l2_bytes)

    def passes(self) -> list[Pass]:
        return [
            Canonicalize(fold_bn=self.fold_bn, strip_softmax=self.loss == "cross_entropy"),
            Training(loss=self.loss, optimizer=self.optimizer, lr=self.lr, momentum=self.momentum,
                     weight_decay=self.weight_decay, nesterov=self.nesterov, beta1=self.betas[0],
                     beta2=self.betas[1], eps=self.eps, train=self.train),
        ]

    def check(self) -> None:
        if self.dtype != "fp32":
            raise UserError(f"--dtype {self.dtype}: only fp32 is implemented so far (fp16/mixed come with the "
                            "precision pass)")
        if self.layout not in ("chw", "auto"):
            raise UserError(f"--layout {self.layout}: only chw is implemented so far (the layout pass is to come)")
        if self.batch is not None and self.batch < 1:
            raise UserError(f"--batch must be >= 1, got {self.batch}")
        if not 1 <= self.cores <= 8:
            raise UserError(f"--cores must be between 1 and 8, got {self.cores}")
        self._check_hyperparameters()

    def _check_hyperparameters(self) -> None:
        """The ranges PyTorch's optimizers accept (a NaN fails every comparison, so it is caught too)."""
        if not 0 < self.lr < math.inf:
            raise UserError(f"--lr must be a finite number > 0, got {self.lr}")
        for option, value in (("--momentum", self.momentum), ("--weight-decay", self.weight_decay),
                              ("--eps", self.eps)):
            if not 0 <= value < math.inf:
                raise UserError(f"{option} must be a finite number >= 0, got {value}")
        if not all(0 <= beta < 1 for beta in self.betas):
            raise UserError(f"--betas must lie in [0, 1), got {self.betas[0]},{self.betas[1]}")
        if not any(part.strip() for part in self.train.split(",")):
            raise UserError("--train is empty (all, none, bias, last:N or initializer names)")


def import_model(model: Path, batch: int | None) -> Graph:
    from tinyodl.frontend import FrontendError, import_onnx

    try:
        graph = import_onnx(model, batch=batch)
    except FrontendError as exc:
        raise UserError(str(exc)) from None
    if graph.name in ("", "main_graph", "torch_jit", "torch-jit-export"):
        graph.name = Path(model).stem  # exporters' placeholder names say nothing; the file name does
    return graph


def build_training_graph(model: Path, options: TrainingOptions, *, pipeline: str | None = None,
                         print_after: set[str] | None = None, time_passes: bool = False,
                         out: TextIO | None = None, printer=print_graph) -> Graph:  # type: ignore[no-untyped-def]
    """Import `model` and run the pipeline (the options' default one, or `pipeline`)."""
    from tinyodl.passes.manager import PassError, PassOptionError

    options.check()
    graph = import_model(model, options.batch)
    try:
        passes = parse_pipeline(pipeline) if pipeline else options.passes()
        _check_print_after(print_after or set(), passes)
        if out is not None and print_after and ("all" in print_after or "import" in print_after):
            out.write("// ----- IR after import -----\n")
            out.write(printer(graph))
        manager = PassManager(passes, print_after=print_after or set(), time_passes=time_passes, out=out,
                              printer=printer)
        return manager.run(graph)
    except PassOptionError as exc:
        raise UserError(str(exc)) from None
    except PassError as exc:
        raise UserError(f"{model}: {exc}") from None


def _check_print_after(print_after: set[str], passes: list[Pass]) -> None:
    known = ["import"] + [p.name for p in passes]
    unknown = sorted(print_after - set(known) - {"all"})
    if unknown:
        raise UserError(f"--print-after {unknown[0]}: no such pass in the pipeline ({', '.join(known)})")

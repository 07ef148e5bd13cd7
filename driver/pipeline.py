"""From a model file and options to a verified training graph: the compiler's front half."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import onnx

from tinyodl.driver.budget import check_fits_l2
from tinyodl.driver.options import Options, UserError
from tinyodl.driver.precision import precision_pass
from tinyodl.ir.graph import Graph
from tinyodl.ir.text import print_graph
from tinyodl.ir.types import Role
from tinyodl.passes.canonicalize import Canonicalize
from tinyodl.passes.manager import Pass, PassManager, parse_pipeline
from tinyodl.passes.memory import Memory
from tinyodl.passes.tiling import Tiling
from tinyodl.passes.training import Training, layers


def default_passes(options: Options) -> list[Pass]:
    """The pipeline that `compile`, `simulate` and `bench` run."""
    target = options.target()
    passes: list[Pass] = [
        Canonicalize(fold_bn=options.fold_bn, strip_softmax=options.loss == "cross_entropy"),
        Training(loss=options.loss, optimizer=options.optimizer, lr=options.lr, momentum=options.momentum,
                 weight_decay=options.weight_decay, nesterov=options.nesterov, beta1=options.betas[0],
                 beta2=options.betas[1], eps=options.eps, train=options.train),
    ]
    precision = precision_pass(options)  # None in fp32: the fp32 pipeline is the one it always was
    if precision is not None:
        passes.append(precision)
    if options.tiling and target.l1_bytes > 0:
        passes.append(Tiling(l1_bytes=target.l1_bytes, cores=target.cores))
    # last: the L2 plan follows the final op order and sees every tensor the program allocates
    passes.append(Memory(l2_bytes=target.l2_bytes))
    return passes


def model_label(model: Path | onnx.ModelProto) -> str:
    """How messages name the model: its file, or its graph for a model given in memory."""
    return str(model) if isinstance(model, Path) else f"model '{model.graph.name}'"


def import_model(model: Path | onnx.ModelProto, batch: int | None) -> Graph:
    from tinyodl.frontend import FrontendError, import_onnx

    try:
        graph = import_onnx(model, batch=batch)
    except FrontendError as exc:
        raise UserError(str(exc)) from None
    if graph.name in ("", "main_graph", "torch_jit", "torch-jit-export"):
        # exporters' placeholder names say nothing; the file name does
        graph.name = model.stem if isinstance(model, Path) else "model"
    return graph


def build_training_graph(model: Path | onnx.ModelProto, options: Options, *, pipeline: str | None = None,
                         print_after: set[str] | None = None, time_passes: bool = False,
                         out: TextIO | None = None, printer=print_graph) -> Graph:  # type: ignore[no-untyped-def]
    """Import `model` and run the pipeline (the options' default one, or `pipeline`)."""
    from tinyodl.passes.manager import PassError, PassOptionError

    options.check()
    graph = import_model(model, options.batch)
    if pipeline is None and options.train.strip() == "all":
        _check_something_to_train(graph, model)
    check_fits_l2(graph, options.target())
    try:
        passes = parse_pipeline(pipeline) if pipeline else default_passes(options)
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
        raise UserError(f"{model_label(model)}: {exc}") from None


def _check_something_to_train(graph: Graph, model: Path | onnx.ModelProto) -> None:
    """`--train all` is the default: a model without parameters asked nothing in particular, and would
    otherwise run a training step that changes nothing."""
    if layers(graph):
        return
    params = [value for value in graph.params if value.role is Role.PARAM]
    lacking = "no initializers" if not params else \
        f"no learnable initializers (its {len(params)} are running statistics)"
    raise UserError(f"{model_label(model)}: {lacking}: nothing to train; use --train none to evaluate")


def _check_print_after(print_after: set[str], passes: list[Pass]) -> None:
    known = ["import"] + [p.name for p in passes]
    unknown = sorted(print_after - set(known) - {"all"})
    if unknown:
        raise UserError(f"--print-after {unknown[0]}: no such pass in the pipeline ({', '.join(known)})")

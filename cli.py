"""tinyodl: compile ONNX models into on-device training steps for RISC-V clusters, simulate and check them."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinyodl.driver import precision
from tinyodl.driver.options import DTYPES, LAYOUTS, LOSSES, OPTIMIZERS, Options, UserError
from tinyodl.ir.target import TARGETS


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already speaks of it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("default" in text or action.default is None or action.nargs == 0  # flags: absent means off
                or action.default == argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """One line `tinyodl: error: ...` for every bad command line, whichever sub-command's parser finds it; an
    unknown option is named with the nearest known one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse says "argument --l1: ..."; the option itself is the name users know
        self.exit(2, f"tinyodl: error: {message.removeprefix('argument ')}\n")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(self._unknown_message(unknown, getattr(parsed, "command", None)))
        return parsed

    def _unknown_message(self, unknown: list[str], command: str | None) -> str:
        known = list(self._option_string_actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                known += list(action.choices[command]._option_string_actions)
        first = unknown[0]
        if not first.startswith("-"):
            return f"unexpected argument {first!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
        nearest = difflib.get_close_matches(first.split("=", 1)[0], known, n=1)
        hint = f" (did you mean {nearest[0]}?)" if nearest else ""
        return f"unknown option {first}{hint}"


SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2}
SIZE_FORMS = "use bytes (65536), or a number with a suffix k, KB or KiB (x 1024), M, MB or MiB (x 1024^2), any case"


def _size(text: str) -> int:
    """Bytes: a whole number, or a number with a binary suffix (KB and MB count 1024s, as memory sizes do)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", text.lower())
    if match is None or match.group(2) not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: {SIZE_FORMS}")
    nbytes = float(match.group(1)) * SIZE_UNITS[match.group(2)]
    if nbytes != int(nbytes):
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: not a whole number of bytes ({nbytes:g})")
    return int(nbytes)


def _betas(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError("expected B1,B2 such as 0.9,0.999")
    return float(parts[0]), float(parts[1])


def _training_parent() -> _Parser:
    parent = _Parser(add_help=False)
    budgets = ", ".join(f"{t.name} {t.cores} cores, L1 {t.l1_bytes // 1024} KiB, L2 {t.l2_bytes // 1024} KiB"
                        for t in TARGETS.values())
    group = parent.add_argument_group("training options")
    group.add_argument("--loss", choices=LOSSES, default="cross_entropy",
                       help="cross_entropy (softmax included; integer labels) or mse")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="the update rule")
    group.add_argument("--lr", type=float, default=0.01, help="learning rate")
    group.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    group.add_argument("--weight-decay", type=float, default=0.0,
                       help="L2 penalty (sgd, adam) or decoupled decay (adamw)")
    group.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd)")
    group.add_argument("--betas", type=_betas, default="0.9,0.999", metavar="B1,B2", help="Adam's betas")
    group.add_argument("--eps", type=float, default=1e-8, help="Adam's epsilon")
    group.add_argument("--batch", type=int, default=None, help="batch size (default: the model's)")
    group.add_argument("--train", default="all",
                       help="what learns: all, none, last:N (last N parametrised layers), bias, or a comma list "
                            "of initializer names")
    group.add_argument("--dtype", choices=DTYPES, default="fp32",
                       help="fp32; fp16 or bf16 (parameters, activations, gradients and optimizer state); mixed "
                            "(fp16 activations and gradients, fp32 master weights, optimizer state and loss). "
                            "Reduced precision runs on --target reference only: the C kernels are fp32")
    precision.add_arguments(group)
    group.add_argument("--layout", choices=LAYOUTS, default="chw", help="activation layout")
    group.add_argument("--fold-bn", action="store_true",
                       help="fold batch norm into the preceding conv; without it batch norm is a layer of its own "
                            "that normalises with its running statistics (PyTorch eval() mode): scale and bias "
                            "train, the statistics stay fixed")
    group.add_argument("--platform", choices=sorted(TARGETS), default="pulp8",
                       help=f"the cluster to compile for (cores, L1, L2, ISA, memory timing): {budgets}")
    group.add_argument("--cores", type=int, default=None, help="compute cores (default: the platform's)")
    group.add_argument("--l1", type=_size, default=None, metavar="BYTES",
                       help="L1 scratchpad bytes, suffix k/KB/KiB or M/MB/MiB (all x 1024) allowed; 0 = no tiling "
                            "(default: the platform's)")
    group.add_argument("--l2", type=_size, default=None, metavar="BYTES",
                       help="L2 bytes, suffixes as for --l1 (default: the platform's)")
    group.add_argument("--no-tiling", dest="tiling", action="store_false",
                       help="kernels read L2 directly (the untiled baseline)")
    group.add_argument("--dma-check", action="store_true",
                       help="checking build: a DMA destination reads NaN until its transfer is waited for, so a "
                            "missing wait fails the check (instruction counts are then not performance figures)")
    parent.add_argument("--debug", action="store_true", help="show tracebacks")
    return parent


def _options(args: argparse.Namespace) -> Options:
    return Options(
        loss=args.loss, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, nesterov=args.nesterov, betas=args.betas, eps=args.eps,
        batch=args.batch, train=args.train, dtype=args.dtype, layout=args.layout, fold_bn=args.fold_bn,
        platform=args.platform, cores=args.cores, l1_bytes=args.l1, l2_bytes=args.l2, tiling=args.tiling,
        dma_check=args.dma_check, **precision.options_from(args))


def _data_order_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="run N passes over the data file instead of --steps: N x floor(rows / batch) steps; "
                             "the last partial batch of each epoch is dropped (default: --steps steps, taking as "
                             "many passes over the file as they need)")
    parser.add_argument("--shuffle", type=int, default=None, metavar="SEED",
                        help="a new order of the rows for every epoch, drawn from SEED (default: file order)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tinyodl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    parent = _training_parent()

    ir = sub.add_parser("ir", parents=[parent], help="print the training graph after the pipeline or any pass")
    ir.add_argument("model", type=Path)
    ir.add_argument("--print-after-all", action="store_true", help="print the graph after import and every pass")
    ir.add_argument("--print-after", action="append", default=[], metavar="PASS",
                    help="print the graph after this pass (repeatable)")
    ir.add_argument("--pipeline", default=None, help='a pipeline string, e.g. "canonicalize,training{lr=0.1}"')
    ir.add_argument("--time-passes", action="store_true", help="print each pass's run time")
    ir.add_argument("--format", choices=["text", "dot", "onnx"], default="text",
                    help="text: the IR; dot: a Graphviz drawing; onnx: the training graph as ONNX for Netron "
                         "(backward and optimizer ops in the 'tinyodl' domain; needs -o)")
    ir.add_argument("-o", "--output", type=Path, default=None, help="write here (default: stdout)")

    simulate = sub.add_parser("simulate", parents=[parent], help="run training steps and check them")
    simulate.add_argument("model", type=Path)
    simulate.add_argument("--target", choices=["qemu", "gvsoc", "reference"], default="qemu",
                          help="qemu: build and run on the simulated cluster, checked against the reference; "
                               "gvsoc: the same on GVSoC pulp-open, with cycles measured by its cores' counters "
                               "(TINYODL_GVSOC or gvsoc on PATH); reference: the numpy reference only")
    simulate.add_argument("--plot", type=Path, default=None, metavar="DIR",
                          help="draw loss.png (runs of several steps) and memory.png (the L2 plan) into DIR; needs "
                               "pip install tinyodl[plot]")
    simulate.add_argument("--data", type=Path, default=None,
                          help=".npz with one array per model input plus 'target'; row s*B+i is sample i of step s "
                               "(default: a deterministic random batch)")
    simulate.add_argument("--steps", type=int, default=1, help="training steps to run")
    _data_order_options(simulate)
    simulate.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    simulate.add_argument("--save-params", type=Path, default=None,
                          help="write every parameter after training (.npz of float32, by initializer name)")
    simulate.add_argument("--save-state", type=Path, default=None, metavar="S.npz",
                          help="write every parameter and the optimizer state (momentum, Adam moments and step) "
                               "at the run's precision, to resume with --init-params S.npz")
    simulate.add_argument("--save-onnx", type=Path, default=None, metavar="OUT.onnx",
                          help="write the input model with the trained parameters as its initializers")
    simulate.add_argument("--init-params", type=Path, default=None, metavar="P.npz|P.onnx",
                          help="start from saved parameters (by initializer name; missing ones keep the model's "
                               "values) and, from a --save-state file, the optimizer state")
    simulate.add_argument("--eval", type=Path, default=None, metavar="TEST.npz",
                          help="evaluate on this data before and after training (on the reference, with the "
                               "parameters the run produced)")
    simulate.add_argument("--timeout", type=float, default=600.0, help="host timeout of the simulator, seconds")
    simulate.add_argument("--quiet", action="store_true",
                          help="only the summary on stdout (the first and last loss, the totals, the check, the "
                               "evaluation): no progress on stderr, no line per step, no per-layer table, no "
                               "'wrote' lines; errors still go to stderr")
    simulate.add_argument("--build-dir", type=Path, default=None, help="keep the generated project here")

    evaluate = sub.add_parser("eval", parents=[parent], help="forward only: loss, accuracy, confusion matrix")
    evaluate.add_argument("model", type=Path)
    evaluate.add_argument("--params", type=Path, default=None, metavar="P.npz|P.onnx",
                          help="parameters to evaluate (by initializer name; default: the model's own)")
    evaluate.add_argument("--data", type=Path, required=True,
                          help=".npz with one array per model input plus 'target', any number of rows: batches "
                               "of the model's batch size, the last one padded with zero rows that are not counted")
    evaluate.add_argument("--target", choices=["reference", "qemu", "gvsoc"], default="reference",
                          help="reference: numpy in float64; qemu: the forward pass on the simulated cluster, "
                               "its outputs checked against the reference; gvsoc: the same on GVSoC pulp-open "
                               "(default: %(default)s)")
    evaluate.add_argument("--json", action="store_true",
                          help="print one JSON object (loss, accuracy, samples, confusion, per_class) as the last line")
    evaluate.add_argument("--predictions", type=Path, default=None, metavar="OUT.npy",
                          help="write the predictions: the class per sample (cross-entropy), the outputs (mse)")
    evaluate.add_argument("--timeout", type=float, default=600.0, help="host timeout of the simulator, seconds")
    evaluate.add_argument("--quiet", action="store_true",
                          help="no progress messages on stderr (the evaluation itself is the summary)")
    evaluate.add_argument("--build-dir", type=Path, default=None, help="keep the generated project here")

    compile_ = sub.add_parser("compile", parents=[parent], help="emit a self-contained C project")
    compile_.add_argument("model", type=Path)
    compile_.add_argument("-o", "--output", type=Path, required=True,
                          help="the project directory (an earlier project there is updated, other files kept)")
    compile_.add_argument("--force", action="store_true",
                          help="also write into a directory that is not a tinyodl project, over files at the "
                               "project's paths (other files are kept)")
    compile_.add_argument("--data", type=Path, default=None, help="the data to embed (default: a random batch)")
    compile_.add_argument("--steps", type=int, default=1, help="training steps the program runs")
    _data_order_options(compile_)

    bench = sub.add_parser("bench", parents=[parent], help="per-layer speed-up and MAC/instruction in QEMU")
    bench.add_argument("model", type=Path)
    bench.add_argument("--baseline-cores", type=int, default=1, help="the core count speed-ups are relative to")
    bench.add_argument("--target", choices=["qemu", "gvsoc"], default="qemu",
                       help="qemu: instruction counts and the cycle model; gvsoc: also cycles and stalls measured on "
                            "GVSoC pulp-open")
    bench.add_argument("--data", type=Path, default=None, help="as for simulate (default: a random batch)")
    bench.add_argument("--steps", type=int, default=1, help="training steps per run")
    bench.add_argument("--timeout", type=float, default=900.0, help="host timeout of each run, seconds")
    bench.add_argument("--report", type=Path, default=None, help="write both runs' reports and the comparison here")
    bench.add_argument("--json", action="store_true", help="also print the totals as one JSON line")

    doctor = sub.add_parser("doctor", help="check the RISC-V toolchain, QEMU and the plugin")
    doctor.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tinyodl.driver.notices import held_warnings, release_warnings
    try:
        from tinyodl.driver import commands
        with held_warnings():  # an error must be the only stderr line: warnings wait for success
            code = int(getattr(commands, f"cmd_{args.command}")(args, _options(args) if args.command != "doctor"
                                                                else None))
            release_warnings()
            return code
    except UserError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"tinyodl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinyodl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

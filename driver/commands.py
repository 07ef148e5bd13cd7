"""The sub-commands behind the CLI; each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import asdict

from tinyodl.driver.evaluate import print_before_after
from tinyodl.driver.files import check_writable, save_params, save_report, write_atomic
from tinyodl.driver.gvsoc import print_measured
from tinyodl.driver.onnx_io import check_onnx_export, save_onnx, save_state
from tinyodl.driver.options import Options, UserError
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.driver.plots import check_plotting, write_plots
from tinyodl.driver.precision import print_precision
from tinyodl.driver.report import print_summary
from tinyodl.ir.dot import to_dot
from tinyodl.ir.text import print_graph


def cmd_ir(args: argparse.Namespace, options: Options) -> int:
    printer = to_dot if args.format == "dot" else print_graph
    print_after = {"all"} if args.print_after_all else set(args.print_after)
    check_writable(args.output)
    if args.format == "onnx":
        return _ir_onnx(args, options, print_after)
    out = io.StringIO()
    graph = build_training_graph(args.model, options, pipeline=args.pipeline, print_after=print_after,
                                 time_passes=args.time_passes, out=out, printer=printer)
    if not print_after:
        out.write(printer(graph))
    if args.output is not None:
        write_atomic(args.output, lambda temp: temp.write_text(out.getvalue()))
    else:
        sys.stdout.write(out.getvalue())
    return 0


def _ir_onnx(args: argparse.Namespace, options: Options, print_after: set[str]) -> int:
    """The training graph as one ONNX file (binary: only into a file)."""
    import onnx

    from tinyodl.ir.onnx_export import export_onnx

    if args.output is None:
        raise UserError("--format onnx writes a binary file: give it with -o FILE.onnx")
    if print_after:
        raise UserError("--format onnx writes the final graph only; --print-after needs --format text or dot")
    graph = build_training_graph(args.model, options, pipeline=args.pipeline, time_passes=args.time_passes,
                                 out=sys.stderr if args.time_passes else None)
    model = export_onnx(graph)
    write_atomic(args.output, lambda temp: onnx.save(model, str(temp)))
    print(f"wrote {args.output} ({len(model.graph.node)} nodes)")
    return 0


def cmd_eval(args: argparse.Namespace, options: Options) -> int:
    from tinyodl.driver.evaluate import evaluate_model, print_check, print_evaluation, write_predictions

    check_writable(args.predictions)
    evaluation = evaluate_model(args.model, args.data, options, params=args.params, target=args.target,
                                timeout=args.timeout, build_dir=args.build_dir,
                                progress=(lambda message: None) if args.quiet else _progress_line)
    print_evaluation(evaluation)
    if evaluation.check is not None:
        print_check(evaluation.check)
    if args.predictions is not None:
        write_predictions(args.predictions, evaluation)
    if args.json:
        print(json.dumps(evaluation.to_json()))
    if evaluation.check is not None and not evaluation.check["ok"]:
        worst = evaluation.check["worst"]
        print(f"tinyodl: check failed: simulated outputs {worst['tolerance_ratio']:.3g}x the tolerance",
              file=sys.stderr)
        return 1
    return 0


def _progress_line(message: str) -> None:
    print(f"[tinyodl] {message}", file=sys.stderr, flush=True)


def cmd_simulate(args: argparse.Namespace, options: Options) -> int:
    from tinyodl import api
    from tinyodl.driver.qemu import SimulationFailed

    check_writable(args.report, args.save_params, args.save_state, args.save_onnx)
    if args.save_onnx is not None:
        check_onnx_export(options.fold_bn)
    if args.plot is not None:
        check_plotting(args.plot)
    try:
        result = api.simulate(args.model, data=args.data, steps=args.steps, epochs=args.epochs, shuffle=args.shuffle,
                              target=args.target, timeout=args.timeout, init_params=args.init_params,
                              eval_data=args.eval, build_dir=args.build_dir, progress=not args.quiet,
                              **asdict(options))
    except SimulationFailed as exc:
        print(f"tinyodl: {exc}", file=sys.stderr)
        return 1
    print_summary(result.report, quiet=args.quiet)
    print_precision(result.report)
    if result.report["target"] == "gvsoc":
        print_measured(result.report)
    if "eval" in result.report:
        print_before_after(result.report["eval"])
    if args.report is not None:
        save_report(args.report, result.report)
    if args.save_params is not None:
        save_params(args.save_params, result.params)
    if args.save_state is not None:
        save_state(args.save_state, result.params, result.state)
    if args.save_onnx is not None:
        save_onnx(args.model, args.save_onnx, result.params)
    if args.plot is not None:
        for path in write_plots(result.report, args.plot):
            if not args.quiet:
                print(f"wrote {path}")
    if not result.ok:
        worst = result.check["worst"]
        print(f"tinyodl: check failed: worst tensor {worst['tensor']} (relative error {worst['rel_err']:.3g}, "
              f"{worst.get('tolerance_ratio', float('inf')):.3g}x the tolerance)", file=sys.stderr)
        return 1
    return 0


def cmd_compile(args: argparse.Namespace, options: Options) -> int:
    from tinyodl import api

    api.compile(args.model, args.output, data=args.data, steps=args.steps, epochs=args.epochs, shuffle=args.shuffle,
                force=args.force, **asdict(options))
    print(f"wrote {args.output} (make && make run)")
    return 0


def cmd_bench(args: argparse.Namespace, options: Options) -> int:
    from tinyodl.driver.bench import cmd_bench as run_bench

    return run_bench(args, options)


def cmd_doctor(args: argparse.Namespace, options: None) -> int:
    from tinyodl.runtime.gvsoc import doctor_check
    from tinyodl.runtime.host import doctor

    failures = 0
    for what, ok, detail in doctor():
        print(f"{'ok  ' if ok else 'MISSING'} {what}: {detail}")
        failures += not ok
    what, ok, detail = doctor_check()  # optional: only --target gvsoc needs it
    print(f"{'ok  ' if ok else 'absent '} {what}: {detail}")
    return 0 if failures == 0 else 1

"""Reduced precision in the driver: the options and their CLI arguments, the pass they configure, the
refusal of targets without reduced-precision C kernels, and the report's precision section (the loss
scale of every step, the steps skipped, and how far the run moved from the fp32 reference)."""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from tinyodl.driver.options import UserError
from tinyodl.ir.graph import Graph, Value
from tinyodl.passes.precision import Precision

PRECISION_DTYPES = ("fp32", "fp16", "bf16")


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--precision", action="append", default=[], metavar="NODE=DTYPE",
                       help="compute this ONNX node (as named in `tinyodl ir` and the report) in fp32, fp16 or bf16; "
                            "repeatable")
    group.add_argument("--loss-scale", default="default", metavar="dynamic|none|VALUE",
                       help="loss scaling: dynamic (PyTorch GradScaler's rules), none, or a fixed scale (default: "
                            "dynamic with --dtype mixed, none otherwise)")
    group.add_argument("--loss-scale-init", type=float, default=65536.0, metavar="S",
                       help="dynamic loss scaling's initial scale")
    group.add_argument("--loss-scale-growth", type=float, default=2.0, metavar="F",
                       help="factor the scale grows by after --loss-scale-interval steps without overflow")
    group.add_argument("--loss-scale-backoff", type=float, default=0.5, metavar="F",
                       help="factor the scale shrinks by on a step whose gradients overflow (the step is skipped)")
    group.add_argument("--loss-scale-interval", type=int, default=2000, metavar="N",
                       help="steps without overflow before the scale grows")


def options_from(args: argparse.Namespace) -> dict[str, Any]:
    return {"precision": tuple(args.precision), "loss_scale": args.loss_scale,
            "loss_scale_init": args.loss_scale_init, "loss_scale_growth": args.loss_scale_growth,
            "loss_scale_backoff": args.loss_scale_backoff, "loss_scale_interval": args.loss_scale_interval}


def check_options(options: Any) -> None:
    """The precision options' own rules (node names are checked against the model by the pass)."""
    for item in options.precision:
        node, sep, dtype = str(item).rpartition("=")
        if not sep or not node or dtype not in PRECISION_DTYPES:
            raise UserError(f"--precision {item}: expected NODE=DTYPE with DTYPE one of {', '.join(PRECISION_DTYPES)}")
    if options.loss_scale not in ("default", "dynamic", "none"):
        try:
            fixed = float(options.loss_scale)
        except ValueError:
            raise UserError(f"--loss-scale {options.loss_scale}: expected dynamic, none or a number") from None
        if not 0 < fixed < math.inf:
            raise UserError(f"--loss-scale {options.loss_scale}: a fixed scale must be a finite number > 0")
    if not 0 < options.loss_scale_init < float(np.finfo(np.float32).max):
        raise UserError(f"--loss-scale-init must be > 0 and within float32's range, got {options.loss_scale_init}")
    if not options.loss_scale_growth > 1 or math.isinf(options.loss_scale_growth):
        raise UserError(f"--loss-scale-growth must be a finite number > 1, got {options.loss_scale_growth}")
    if not 0 < options.loss_scale_backoff < 1:
        raise UserError(f"--loss-scale-backoff must lie in (0, 1), got {options.loss_scale_backoff}")
    if options.loss_scale_interval < 1:
        raise UserError(f"--loss-scale-interval must be >= 1, got {options.loss_scale_interval}")


def reduced(options: Any) -> bool:
    """Whether anything runs in a dtype other than fp32."""
    return options.dtype != "fp32" or any(not str(item).endswith("=fp32") for item in options.precision)


def precision_pass(options: Any) -> Precision | None:
    if not reduced(options):
        return None
    return Precision(dtype=options.dtype, overrides=",".join(options.precision), loss_scale=options.loss_scale,
                     init_scale=options.loss_scale_init, growth_factor=options.loss_scale_growth,
                     backoff_factor=options.loss_scale_backoff, growth_interval=options.loss_scale_interval)


def check_c_backend(options: Any, what: str) -> None:
    """The C kernels are fp32 only so far: refuse a reduced-precision build before anything is written."""
    if reduced(options):
        chosen = f"--dtype {options.dtype}" if options.dtype != "fp32" else f"--precision {options.precision[0]}"
        raise UserError(f"{chosen}: {what} needs the fp16/bf16 C kernels, which do not exist yet (only fp32 "
                        "compiles); run it with `simulate --target reference`")


# -- the report -------------------------------------------------------------------------------------
def loss_scaling_values(graph: Graph) -> tuple[Value, Value] | None:
    """(the loss scale, the step's final found-inf flag) of a graph with loss scaling."""
    unscales = [op for op in graph.ops if op.type == "amp_unscale"]
    if not unscales:
        return None
    return unscales[-1].inputs[1], unscales[-1].outputs[1]


def report_precision(report: dict[str, Any], graph: Graph, options: Any, run: Any, fp32_run: Any) -> None:
    """Add the loss scale and skip of every step to the report's steps and its `precision` section."""
    for item, scale, skip in zip(report["steps"], run.loss_scales, run.skipped, strict=False):
        item["loss_scale"], item["skipped"] = scale, skip
    report["precision"] = precision_section(graph, options, run.loss_scales, run.skipped, run, fp32_run)


def precision_section(graph: Graph, options: Any, scales: list[float], skipped: list[bool],
                      run: Any, fp32_run: Any) -> dict[str, Any]:
    """The report's `precision`: the policy, loss scaling per step, and the distance to the fp32 run of the
    same steps from the same parameters (losses per step; final parameters as max |difference| and the
    relative L2 distance ||p - p32|| / ||p32||)."""
    losses = [abs(a - b) for a, b in zip(run.losses, fp32_run.losses, strict=True)]
    params = {}
    for name, value in fp32_run.params.items():
        mine = np.asarray(run.params[name], np.float64)
        diff = mine - value
        norm = float(np.linalg.norm(value))
        params[name] = {"max_abs_diff": float(np.max(np.abs(diff))) if diff.size else 0.0,
                        "rel_l2": float(np.linalg.norm(diff) / norm) if norm else float(np.linalg.norm(diff))}
    section: dict[str, Any] = {
        "dtype": options.dtype, "overrides": list(options.precision),
        "loss_scaling": None, "skipped_steps": [step for step, skip in enumerate(skipped) if skip],
        "vs_fp32": {"losses_fp32": list(fp32_run.losses), "loss_abs_diff": losses,
                    "loss_max_abs_diff": max(losses) if losses else 0.0,
                    "params": params,
                    "params_max_rel_l2": max((p["rel_l2"] for p in params.values()), default=0.0)},
    }
    if scales:
        section["loss_scaling"] = {"mode": _scaling_mode(graph), "scales": scales}
    section["layers"] = tile_figures(graph)
    fp32_graph = fp32_run.executor.graph
    section["vs_fp32"]["memory"] = {
        "l2_peak_bytes": _peak(graph), "l2_peak_bytes_fp32": _peak(fp32_graph),
        "dma_bytes": sum(f["dma_bytes"] for f in section["layers"]),
        "dma_bytes_fp32": sum(f["dma_bytes"] for f in tile_figures(fp32_graph))}
    return section


def _peak(graph: Graph) -> int | None:
    return graph.memory_plan.peak_bytes if graph.memory_plan is not None else None


def tile_figures(graph: Graph) -> list[dict[str, Any]]:
    """Per tiled kernel: its dtypes, tiles, L1 bytes and DMA bytes per step, all in bytes of the real dtypes
    (what a reduced-precision run saves in L1 and DMA before any simulator measures it)."""
    from tinyodl.ir.ops.tiling import plan_of
    from tinyodl.passes.tiling import dma_totals

    figures = []
    for op in graph.ops:
        if op.type != "tile_loop":
            continue
        plan = plan_of(op)
        loaded, stored, _ = dma_totals(plan)
        dtypes = sorted({v.dtype.value for v in op.inputs + op.outputs if v.dtype.is_float})
        figures.append({"name": op.node, "op": str(op.attrs["tiled_op"]), "phase": op.phase.value,
                        "dtypes": dtypes, "tiles": plan.tiles, "l1_bytes": plan.l1_bytes(),
                        "dma_bytes": loaded + stored})
    return figures


def _scaling_mode(graph: Graph) -> str:
    update = next((op for op in graph.ops if op.type == "amp_update_scale"), None)
    if update is None:
        return "fixed"
    return (f"dynamic (growth {update.attrs['growth_factor']} every {update.attrs['growth_interval']} clean steps, "
            f"backoff {update.attrs['backoff_factor']})")


def print_precision(report: dict[str, Any]) -> None:
    section = report.get("precision")
    if not section:
        return
    scaling = section["loss_scaling"]
    if scaling is not None:
        skipped = section["skipped_steps"]
        print(f"loss scaling {scaling['mode']}: scale {scaling['scales'][0]:g} at step 0, "
              f"{scaling['scales'][-1]:g} at the last step; {len(skipped)} step(s) skipped"
              + (f" ({', '.join(str(s) for s in skipped[:10])}{', ...' if len(skipped) > 10 else ''})"
                 if skipped else ""))
    versus = section["vs_fp32"]
    print(f"{section['dtype']} vs the fp32 reference: loss differs by at most {versus['loss_max_abs_diff']:.3g}, "
          f"parameters by at most {versus['params_max_rel_l2']:.3g} (relative L2)")
    memory = versus["memory"]
    if memory["l2_peak_bytes"] is not None and memory["l2_peak_bytes_fp32"]:
        ratio = memory["l2_peak_bytes"] / memory["l2_peak_bytes_fp32"]
        print(f"L2 plan peak {memory['l2_peak_bytes']} B ({ratio:.2f}x fp32's), DMA {memory['dma_bytes']} B per step "
              f"(fp32: {memory['dma_bytes_fp32']} B)")

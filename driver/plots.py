"""`--plot DIR`: pictures of a run where people would rather look than read.

- loss.png: the loss of every step (multi-step runs);
- memory.png: the L2 plan over the step, one rectangle per tensor (op index of its first to last use
  against its offset in the arena), when the report carries the plan's per-tensor table.
matplotlib is an optional extra (`pip install tinyodl[plot]`); figures are drawn without pyplot so that
no global state or display backend is involved.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from tinyodl.driver.files import check_writable, write_atomic
from tinyodl.driver.options import UserError

INSTALL_HINT = "pip install tinyodl[plot]"


def check_plotting(out_dir: Path) -> None:
    """Before any work: matplotlib is there and the plots can be written into `out_dir`."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UserError(f"--plot needs matplotlib: {INSTALL_HINT}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--plot {out_dir}: is not a directory")
    check_writable(out_dir / "loss.png")


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """The plots this report supports, written into `out_dir`; returns their paths."""
    written = []
    losses = [float(step["loss"]) for step in report.get("steps", [])]
    if len(losses) > 1:
        written.append(_save(_loss_figure(losses, report), Path(out_dir) / "loss.png"))
    tensors = report.get("memory", {}).get("tensors")
    if tensors:
        written.append(_save(_memory_figure(tensors, report), Path(out_dir) / "memory.png"))
    return written


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _loss_figure(losses: list[float], report: dict[str, Any]) -> Any:
    figure = _figure(7, 4)
    axes = figure.add_subplot()
    few = len(losses) <= 50
    axes.plot(range(len(losses)), losses, color="tab:blue", linewidth=1.0 if few else 0.8, alpha=1.0 if few else 0.35,
              marker="o" if few else None, markersize=3, label="per step (one batch)")
    if not few:  # one batch's loss is noisy: a running mean shows the trend
        window = max(5, len(losses) // 20)
        means = np.convolve(losses, np.ones(window) / window, mode="valid")
        axes.plot(range(window - 1, len(losses)), means, color="tab:blue", linewidth=2.0,
                  label=f"mean of the last {window} steps")
        axes.legend(fontsize=8)
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    if min(losses) > 0 and max(losses) / min(losses) > 100:
        axes.set_yscale("log")  # a loss that falls by orders of magnitude is flat on a linear axis
    axes.set_title(f"{report.get('model', '')}: {len(losses)} steps on {report.get('target', '')}")
    axes.grid(True, alpha=0.3)
    return figure


def _memory_figure(tensors: list[dict[str, Any]], report: dict[str, Any]) -> Any:
    from matplotlib.patches import Rectangle

    figure = _figure(9, 5)
    axes = figure.add_subplot()
    memory = report.get("memory", {})
    top = max(t["offset"] + t["size"] for t in tensors)
    last_op = max(t["last"] for t in tensors)
    colours = {"param": "tab:blue", "state": "tab:purple", "grad": "tab:red", "act": "tab:green",
               "input": "tab:orange"}
    for tensor in tensors:
        first = max(tensor["first"], -1)
        colour = colours.get(str(tensor.get("role", "")), "tab:gray")
        axes.add_patch(Rectangle((first - 0.5, tensor["offset"] / 1024), tensor["last"] - first + 1,
                                 tensor["size"] / 1024, facecolor=colour, edgecolor="black", linewidth=0.3,
                                 alpha=0.7))
    axes.set_xlim(-1.5, last_op + 0.5)
    axes.set_ylim(0, top / 1024 * 1.05)
    axes.set_xlabel("op index in the training step (first to last use)")
    axes.set_ylabel("L2 arena offset (KiB)")
    peak = memory.get("l2_peak_bytes", top)
    bound = memory.get("l2_lower_bound_bytes")
    title = f"{report.get('model', '')}: L2 plan, peak {peak / 1024:.1f} KiB"
    if bound:
        title += f" (lower bound {bound / 1024:.1f} KiB)"
    axes.set_title(title)
    if bound:
        axes.axhline(bound / 1024, color="black", linestyle="--", linewidth=0.8)
    roles = sorted({str(t.get("role")) for t in tensors if t.get("role") in colours})
    if roles:
        axes.legend(handles=[Rectangle((0, 0), 1, 1, facecolor=colours[r], alpha=0.7) for r in roles], labels=roles,
                    loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return figure


def _save(figure: Any, path: Path) -> Path:
    write_atomic(path, lambda temp: figure.savefig(temp, format="png"))
    return path

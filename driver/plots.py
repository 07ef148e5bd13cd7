"""`--plot DIR`: pictures of a run where people would rather look than read.

- loss.png: the loss of every step (multi-step runs);
- memory.png: the L2 plan over the step, one rectangle per tensor (op index of its first to last use
  against its offset in the arena), when the report carries the plan's per-tensor table; a strip below
  gives each op's phase, and the legend names every mark (roles, tensors reusing another's bytes in place,
  tensors too small to show their height, the lower bound).
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
    from matplotlib.ticker import MaxNLocator

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
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # there is no step 0.25
    axes.set_ylabel("training loss")
    if min(losses) > 0 and max(losses) / min(losses) > 100:
        axes.set_yscale("log")  # a loss that falls by orders of magnitude is flat on a linear axis
    axes.set_title(f"{report.get('model', '')}: {len(losses)} steps on {report.get('target', '')}")
    axes.grid(True, alpha=0.3)
    return figure


ROLE_COLOURS = {"param": "tab:blue", "state": "tab:purple", "grad": "tab:red", "act": "tab:green",
                "input": "tab:orange"}
PHASE_COLOURS = {"forward": "tab:green", "loss": "tab:orange", "backward": "tab:red", "update": "tab:blue"}
IN_PLACE_HATCH = "////"


def _memory_figure(tensors: list[dict[str, Any]], report: dict[str, Any]) -> Any:
    from matplotlib.colors import to_rgb
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    figure = _figure(9, 5.5)
    axes, strip = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [14, 1]})
    memory = report.get("memory", {})
    top = max(t["offset"] + t["size"] for t in tensors)
    last_op = max(t["last"] for t in tensors)
    # a tensor under a pixel tall is only its outline: the edge in a darker shade of its role's colour keeps
    # the role visible (and the boundary between neighbours)
    for tensor in tensors:
        first = max(tensor["first"], -1)
        colour = ROLE_COLOURS.get(str(tensor.get("role", "")), "tab:gray")
        edge = tuple(0.6 * channel for channel in to_rgb(colour))
        axes.add_patch(Rectangle((first - 0.5, tensor["offset"] / 1024), tensor["last"] - first + 1,
                                 tensor["size"] / 1024, facecolor=colour, edgecolor=edge, linewidth=0.5, alpha=0.7,
                                 hatch=IN_PLACE_HATCH if tensor.get("shares") else None))
    axes.set_xlim(-1.5, last_op + 0.5)
    axes.set_ylim(0, top / 1024 * 1.05)
    axes.set_ylabel("L2 arena offset (KiB)")
    peak = memory.get("l2_peak_bytes", top)
    bound = memory.get("l2_lower_bound_bytes")
    title = f"{report.get('model', '')}: L2 plan, peak {peak / 1024:.1f} KiB"
    if bound:
        title += f" (lower bound {bound / 1024:.1f} KiB)"
    axes.set_title(title)
    handles = [Patch(facecolor=ROLE_COLOURS[r], edgecolor=tuple(0.6 * c for c in to_rgb(ROLE_COLOURS[r])),
                     alpha=0.7, label=r) for r in ROLE_COLOURS if any(t.get("role") == r for t in tensors)]
    if any(t.get("shares") for t in tensors):
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch=IN_PLACE_HATCH,
                             label="in place: reuses the bytes\nof the tensor it replaces"))
    handles.append(Line2D([], [], color="0.3", linewidth=0.8,
                          label="thin line: a tensor too\nsmall to show its height"))
    if bound:
        axes.axhline(bound / 1024, color="black", linestyle="--", linewidth=0.8)
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.8,
                              label="lower bound\n(largest live set)"))
    _phase_strip(strip, memory.get("phases") or [], handles)
    strip.set_xlabel("op index in the training step (a tensor spans its first to last use; -1: before the step)")
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return figure


def _phase_strip(strip: Any, phases: list[dict[str, Any]], handles: list[Any]) -> None:
    """Each op's phase as a coloured band under the map, named where a band is wide enough; the phases join
    the legend (the update of a parameter follows the backward op that produced its gradient)."""
    from matplotlib.patches import Patch

    strip.set_yticks([])
    if not phases:
        strip.set_visible(False)
        return
    left, right = strip.get_xlim()
    groups: list[dict[str, Any]] = []  # the backward ops and the updates between them are named once
    for span in phases:
        colour = PHASE_COLOURS.get(span["phase"], "tab:gray")
        strip.axvspan(span["first"] - 0.5, span["last"] + 0.5, color=colour, alpha=0.45, linewidth=0)
        joins = groups and {span["phase"], groups[-1]["phases"][-1]} <= {"backward", "update"}
        if joins:
            groups[-1]["last"] = span["last"]
            groups[-1]["phases"] = list(dict.fromkeys([*groups[-1]["phases"], span["phase"]]))
        else:
            groups.append({**span, "phases": [span["phase"]]})
    for group in groups:
        if (group["last"] - group["first"] + 1) >= 0.08 * (right - left):
            strip.text((group["first"] + group["last"]) / 2, 0.5, " + ".join(group["phases"]), ha="center",
                       va="center", fontsize=8, transform=strip.get_xaxis_transform())
    shown = dict.fromkeys(span["phase"] for span in phases)
    handles.extend(Patch(facecolor=PHASE_COLOURS.get(p, "tab:gray"), alpha=0.45, label=f"phase: {p}") for p in shown)


def _save(figure: Any, path: Path) -> Path:
    write_atomic(path, lambda temp: figure.savefig(temp, format="png"))
    return path

"""Progress while a run goes on, --plot pictures, and what --help offers."""

from __future__ import annotations

import argparse
import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import pytest

from tinyodl.cli import build_parser, main
from tinyodl.driver.plots import write_plots
from tinyodl.driver.progress import Progress
from tinyodl.driver.qemu import _show_loss
from tinyodl.ir.target import TARGETS
from tinyodl.runtime.host import run_streaming

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_steps(progress: Progress, clock: _Clock, steps: int, seconds_per_step: float) -> None:
    progress.start_steps("qemu", steps)
    for step in range(steps):
        clock.now += seconds_per_step
        progress.step(step, 1.0 / (step + 1))


def test_plain_lines_at_most_one_a_second_with_an_eta() -> None:
    out, clock = io.StringIO(), _Clock()
    _run_steps(Progress(stream=out, clock=clock), clock, steps=100, seconds_per_step=0.05)
    lines = out.getvalue().splitlines()
    assert 5 <= len(lines) <= 7  # 5 s of steps: about one line a second, plus the last
    assert lines[0] == "[tinyodl] qemu: step 1/100  loss 1.000000  eta 5.0 s"
    assert all("eta" in line for line in lines[:-1])
    assert lines[-1] == "[tinyodl] qemu: step 100/100  loss 0.010000  done in 5.0 s"
    assert "\r" not in out.getvalue()


def test_few_steps_get_a_line_each() -> None:
    out, clock = io.StringIO(), _Clock()
    _run_steps(Progress(stream=out, clock=clock), clock, steps=5, seconds_per_step=0.01)
    assert [line.split("  ")[0] for line in out.getvalue().splitlines()] == [
        f"[tinyodl] qemu: step {i}/5" for i in range(1, 6)]


def test_a_terminal_gets_one_updating_line() -> None:
    out, clock = _Terminal(), _Clock()
    progress = Progress(stream=out, clock=clock)
    progress.message("running")
    _run_steps(progress, clock, steps=50, seconds_per_step=0.3)
    text = out.getvalue()
    assert text.startswith("[tinyodl] running\n")
    assert text.count("\n") == 2 and text.endswith("done in 15.0 s\x1b[K\n")
    assert text.count("\r") >= 40


def test_a_message_after_an_unfinished_line_starts_on_a_new_line() -> None:
    out, clock = _Terminal(), _Clock()
    progress = Progress(stream=out, clock=clock)
    _run_steps(progress, clock, steps=1, seconds_per_step=1.0)
    progress.start_steps("qemu", 10)
    progress.step(0, 2.0)
    progress.message("checking")
    assert out.getvalue().endswith("eta 0.0 s\x1b[K\n[tinyodl] checking\n")


def test_quiet_prints_nothing() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = Progress(quiet=True, stream=out, clock=clock)
    progress.message("hello")
    _run_steps(progress, clock, steps=3, seconds_per_step=1.0)
    assert out.getvalue() == ""


def test_loss_lines_of_the_guest_become_steps() -> None:
    seen: list[tuple[int, float]] = []

    class Recorder(Progress):
        def step(self, index: int, loss: float) -> None:
            seen.append((index, loss))

    recorder = Recorder(quiet=True)
    for line in ["LOSS 0 1.0", "DMA 1 2 3", "LOSS 1 3.14159274", "LOSS 2 zzzzzzzz", "LOSS x"]:
        _show_loss(line, recorder)
    assert seen == [(0, 1.0), (1, pytest.approx(3.1415927))]


def test_guest_lines_stream_and_the_timeout_holds() -> None:
    lines: list[str] = []
    done = run_streaming(["bash", "-c", "echo one; echo two >&2; echo three"], 10.0, lines.append)
    assert lines == ["one", "three"] and done.returncode == 0
    assert done.stdout == "one\nthree\n" and done.stderr == "two\n"
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        run_streaming(["bash", "-c", "echo early; exec sleep 30"], 0.5, lines.append)
    assert expired.value.stdout == "early\n" and lines[-1] == "early"


def test_cli_progress_on_a_pipe_and_quiet() -> None:
    command = [sys.executable, "-m", "tinyodl", "simulate", str(EXAMPLES / "mlp.onnx"), "--target", "reference",
               "--steps", "3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    assert lines[0] == "[tinyodl] reference: 3 step(s) in float64"
    assert [line.split("  ")[0] for line in lines[1:]] == [f"[tinyodl] reference: step {i}/3" for i in (1, 2, 3)]
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == ["step 0", "step 1", "step 2"]
    quiet = subprocess.run(command + ["--quiet"], capture_output=True, text=True, timeout=120)
    first, last = (line.split("loss ")[1] for line in done.stdout.splitlines()[::2])
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout == f"loss {first} at step 0, {last} at step 2\n"  # the summary alone


def test_plot_writes_the_loss_curve_and_the_memory_map(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots"
    assert main(["simulate", str(EXAMPLES / "lenet.onnx"), "--target", "reference", "--steps", "4", "--quiet",
                 "--plot", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["loss.png", "memory.png"]
    for png in out.iterdir():
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    single = tmp_path / "single"
    assert main(["simulate", str(EXAMPLES / "mlp.onnx"), "--target", "reference", "--quiet", "--plot",
                 str(single)]) == 0
    assert [p.name for p in single.iterdir()] == ["memory.png"]  # one step: no curve to draw


def test_plots_follow_what_the_report_holds(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = {"model": "m", "target": "qemu", "steps": [{"loss": 1.0}, {"loss": 0.5}], "memory": {}}
    assert [p.name for p in write_plots(report, tmp_path)] == ["loss.png"]
    report["memory"] = {"tensors": [{"name": "a", "offset": 0, "size": 64, "first": -1, "last": 3, "role": "param"},
                                    {"name": "b", "offset": 64, "size": 32, "first": 1, "last": 2, "role": "act"}],
                        "l2_peak_bytes": 96, "l2_lower_bound_bytes": 96}
    assert [p.name for p in write_plots(report, tmp_path)] == ["loss.png", "memory.png"]


def test_the_loss_curve_of_a_few_steps_ticks_whole_steps() -> None:
    pytest.importorskip("matplotlib")
    from tinyodl.driver.plots import _loss_figure

    for steps in (2, 3, 7):
        figure = _loss_figure([1.0 / (step + 1) for step in range(steps)], {"model": "m", "target": "qemu"})
        axes = figure.axes[0]
        figure.canvas.draw()
        low, high = axes.get_xlim()
        ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
        assert len(ticks) >= 2 and all(tick == int(tick) for tick in ticks), (steps, ticks)


def test_the_memory_map_names_the_phases_and_every_mark_in_its_legend() -> None:
    pytest.importorskip("matplotlib")
    from tinyodl.driver.plots import _memory_figure

    tensors = [{"name": "w", "offset": 0, "size": 4096, "first": -1, "last": 9, "role": "param", "shares": ""},
               {"name": "a", "offset": 4096, "size": 2048, "first": 0, "last": 4, "role": "act", "shares": ""},
               {"name": "g", "offset": 4096, "size": 2048, "first": 4, "last": 8, "role": "grad", "shares": "a"},
               {"name": "s", "offset": 6144, "size": 4, "first": 1, "last": 2, "role": "act", "shares": ""}]
    phases = [{"phase": "forward", "first": 0, "last": 3}, {"phase": "loss", "first": 4, "last": 4},
              {"phase": "backward", "first": 5, "last": 6}, {"phase": "update", "first": 7, "last": 7},
              {"phase": "backward", "first": 8, "last": 8}, {"phase": "update", "first": 9, "last": 9}]
    figure = _memory_figure(tensors, {"model": "m", "memory": {"l2_peak_bytes": 6148, "l2_lower_bound_bytes": 6148,
                                                               "phases": phases}})
    axes, strip = figure.axes
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend[:3] == ["param", "grad", "act"]
    for fragment in ("in place", "thin line", "lower bound", "phase: forward", "phase: loss", "phase: backward",
                     "phase: update"):
        assert sum(fragment in entry for entry in legend) == 1, (fragment, legend)
    assert [text.get_text() for text in strip.texts] == ["forward", "loss", "backward + update"]
    assert "op index" in strip.get_xlabel()


def test_missing_matplotlib_is_one_line_naming_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "matplotlib" else real(name, *rest))
    report = tmp_path / "r.json"
    code = main(["simulate", str(EXAMPLES / "mlp.onnx"), "--target", "reference", "--steps", "2", "--quiet",
                 "--plot", str(tmp_path / "plots"), "--report", str(report)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "tinyodl: error: --plot needs matplotlib: pip install tinyodl[plot]\n"
    assert not report.exists() and not (tmp_path / "plots").exists()  # refused before any work


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_default_is_in_the_help() -> None:
    for name, sub in _subparsers().items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
                continue
            shown = formatter._expand_help(action)
            assert "default" in shown, f"{name} {action.option_strings[0]}: {shown!r}"
    simulate_help = _subparsers()["simulate"].format_help()
    for fragment in ("learning rate (default: 0.01)", "(default: 0.9,0.999)", "(default: pulp8)",
                     "(default: qemu)", "(default: 600.0)"):
        assert fragment in " ".join(simulate_help.split()), fragment


def test_only_implemented_choices_are_offered() -> None:
    actions = {a.dest: a for a in _subparsers()["simulate"]._actions}
    assert list(actions["dtype"].choices) == ["fp32", "fp16", "bf16", "mixed"]
    assert list(actions["layout"].choices) == ["chw"]
    assert sorted(actions["platform"].choices) == sorted(TARGETS)
    done = subprocess.run([sys.executable, "-m", "tinyodl", "simulate", str(EXAMPLES / "mlp.onnx"), "--dtype",
                           "fp16"], capture_output=True, text=True, timeout=60)
    # fp16 exists on the reference; the simulated cluster (the default target) has no fp16 kernels yet
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "C kernels" in done.stderr


def test_a_failing_display_does_not_stop_the_guest_output() -> None:
    def broken(line: str) -> None:
        raise BrokenPipeError("stderr closed")

    done = run_streaming(["bash", "-c", "for i in 1 2 3; do echo line$i; done"], 10.0, broken)
    assert done.returncode == 0 and done.stdout == "line1\nline2\nline3\n"

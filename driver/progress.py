"""Progress of a run on stderr: phase messages, and per training step the step, its loss and an ETA.

On a terminal the step line updates in place (at most ~10 times a second); otherwise (a log file, a pipe,
CI) plain lines are written, one a second at most, or one per step when the run has few steps.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from tinyodl.driver.notices import release_warnings

FEW_STEPS = 20          # runs this short get a line per step even when not on a terminal
PLAIN_INTERVAL_S = 1.0  # otherwise at most one plain line per second
TTY_INTERVAL_S = 0.1


@dataclass
class Progress:
    """Shows what a run is doing. `quiet` silences everything; `stream` defaults to stderr."""

    quiet: bool = False
    stream: TextIO | None = None
    clock: Callable[[], float] = time.monotonic
    _label: str = ""
    _total: int = 0
    _started: float = 0.0
    _last_shown: float = -1e30
    _open_line: bool = False
    _tty: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._tty = bool(getattr(self._out, "isatty", lambda: False)())

    @property
    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def message(self, text: str) -> None:
        if self.quiet:
            return
        release_warnings()
        self._close_line()
        self._out.write(f"[tinyodl] {text}\n")
        self._out.flush()

    def start_steps(self, label: str, total: int) -> None:
        """Steps 0..total-1 of `label` (e.g. "qemu", "reference") begin now: the ETA counts from here."""
        self._label, self._total, self._started, self._last_shown = label, total, self.clock(), -1e30

    def step(self, index: int, loss: float) -> None:
        if self.quiet:
            return
        now = self.clock()
        done = index + 1
        last = done >= self._total
        interval = TTY_INTERVAL_S if self._tty else PLAIN_INTERVAL_S
        if not (last or self._total <= FEW_STEPS or now - self._last_shown >= interval):
            return
        self._last_shown = now
        release_warnings()
        elapsed = now - self._started
        eta = elapsed / done * (self._total - done)
        text = (f"[tinyodl] {self._label}: step {done}/{self._total}  loss {loss:.6f}  "
                f"{'done in ' + _duration(elapsed) if last else 'eta ' + _duration(eta)}")
        if self._tty:
            self._out.write(f"\r{text}\x1b[K")
            self._open_line = not last
            if last:
                self._out.write("\n")
        else:
            self._out.write(text + "\n")
        self._out.flush()

    def finish(self) -> None:
        """End an updating line that the run left open (it stopped before its last step)."""
        self._close_line()

    def _close_line(self) -> None:
        if self._open_line:
            self._out.write("\n")
            self._open_line = False


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"

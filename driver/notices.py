"""Warnings of a command, held back while it may still fail: a command that ends in an error prints that
error as its only stderr line, so a warning about a file that turns out to be unusable never precedes it.

The CLI holds warnings for the whole command: they are printed when its progress first shows (a run that
shows progress is past its checks, and its progress lines are on stderr anyway) or when it succeeds. Outside
the CLI (the Python API) a warning is printed at once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

_held: list[str] | None = None


def warn(text: str) -> None:
    line = f"tinyodl: warning: {text}"
    if _held is None:
        print(line, file=sys.stderr)
    else:
        _held.append(line)


def release_warnings() -> None:
    """Print the held warnings now."""
    if _held:
        for line in _held:
            print(line, file=sys.stderr)
        _held.clear()
    sys.stderr.flush()


@contextmanager
def held_warnings() -> Iterator[None]:
    """Hold warnings until release_warnings(); those still held when the block ends are dropped (the caller
    releases them on success)."""
    global _held
    _held = []
    try:
        yield
    finally:
        _held = None

"""Passes, the pass registry, pipeline strings and the pass manager.

A pass is a small frozen dataclass: its `name` is the registry key, its fields are its options, and a
pipeline string names passes with options: "canonicalize{fold_bn=1},training{optimizer=adam,lr=0.001}".
The manager verifies the IR after every pass, and can print it after any pass and time the passes.
"""

from __future__ import annotations

import dataclasses
import re
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TextIO

from tinyodl.ir.graph import Graph
from tinyodl.ir.registry import IRError
from tinyodl.ir.verify import verify_graph


class PassError(Exception):
    """A pass failed or left invalid IR; the message names the pass and those before it."""


class PassOptionError(ValueError):
    """Bad user input to a pass (unknown parameter name, malformed option)."""


@dataclass(frozen=True)
class Pass:
    name: ClassVar[str] = ""

    def run(self, graph: Graph) -> bool:
        """Transform `graph` in place; return whether anything changed."""
        raise NotImplementedError

    def requires(self, graph: Graph) -> None:
        """Raise PassError when the input is not what the pass can handle."""

    def spec(self) -> str:
        opts = [f"{f.name}={_format_option(getattr(self, f.name))}" for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default]
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")


PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    PASSES[cls.name] = cls
    return cls


def _format_option(value: object) -> str:
    return str(int(value)) if isinstance(value, bool) else str(value)


def _coerce(kind: object, text: str, where: str) -> object:
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no"):
                return False
            raise ValueError(text)
        if kind in (int, float, str):
            return kind(text)  # type: ignore[operator]
    except ValueError:
        raise PassOptionError(f"{where}: {text!r} is not a valid {getattr(kind, '__name__', kind)}") from None
    raise PassOptionError(f"{where}: unsupported option type {kind}")


_ITEM = re.compile(r"\s*([A-Za-z_][\w-]*)\s*(?:\{([^{}]*)\})?\s*(?:,|$)")


def parse_pipeline(text: str) -> list[Pass]:
    _load_passes()
    passes: list[Pass] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _ITEM.match(text, pos)
        if match is None or match.end() == pos:
            raise PassOptionError(f"malformed pipeline at {text[pos:]!r}")
        pos = match.end()
        name, body = match.group(1), match.group(2)
        if name not in PASSES:
            raise PassOptionError(f"unknown pass '{name}' (known: {', '.join(sorted(PASSES))})")
        cls = PASSES[name]
        hints = typing.get_type_hints(cls)
        options: dict[str, object] = {}
        for item in _option_items(body or ""):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in {f.name for f in dataclasses.fields(cls)}:
                raise PassOptionError(f"pass '{name}': unknown or malformed option {item!r}")
            options[key] = _coerce(hints[key], value.strip(), f"pass '{name}' option '{key}'")
        passes.append(cls(**options))  # type: ignore[arg-type]
    return passes


def _option_items(body: str) -> list[str]:
    """Options split on ';', or on ',' where a piece without '=' continues the value before it
    (so "training{train=conv1.weight,fc.bias}" keeps both names in one option)."""
    if ";" in body:
        return [part.strip() for part in body.split(";") if part.strip()]
    items: list[str] = []
    for part in body.split(","):
        if items and "=" not in part:
            items[-1] += "," + part
        else:
            items.append(part)
    return [item.strip() for item in items if item.strip()]


def _load_passes() -> None:
    from tinyodl.passes import canonicalize, memory, precision, training  # noqa: F401


@dataclass
class PassManager:
    passes: list[Pass]
    print_after: set[str] = dataclasses.field(default_factory=set)   # pass names, or {"all"}
    time_passes: bool = False
    out: TextIO | None = None
    printer: Callable[[Graph], str] | None = None
    timings: list[tuple[str, float]] = dataclasses.field(default_factory=list)

    def run(self, graph: Graph) -> Graph:
        done: list[str] = []
        try:
            verify_graph(graph)
        except IRError as exc:
            raise PassError(f"invalid IR before the first pass: {exc}") from None
        for item in self.passes:
            where = f"pass '{item.name}'" + (f" (after {', '.join(done)})" if done else "")
            start = time.perf_counter()
            try:
                item.requires(graph)
                item.run(graph)
            except (PassError, IRError) as exc:
                raise PassError(f"{where} failed: {exc}") from None
            self.timings.append((item.name, time.perf_counter() - start))
            try:
                verify_graph(graph)
            except IRError as exc:
                raise PassError(f"{where} produced invalid IR: {exc}") from None
            done.append(item.name)
            if self.out is not None and ("all" in self.print_after or item.name in self.print_after):
                self.out.write(f"// ----- IR after {item.spec()} -----\n")
                self.out.write(self.printer(graph) if self.printer else "")
        if self.time_passes and self.out is not None:
            total = sum(seconds for _, seconds in self.timings)
            self.out.write("// ----- pass timings -----\n")
            for name, seconds in self.timings:
                self.out.write(f"//   {name:<16} {seconds * 1000:9.2f} ms\n")
            self.out.write(f"//   {'total':<16} {total * 1000:9.2f} ms\n")
        return graph

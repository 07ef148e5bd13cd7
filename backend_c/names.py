"""Safe C identifiers and comments from model names (which may hold any character)."""

from __future__ import annotations

import re

import numpy as np

C_KEYWORDS = frozenset("""
auto break case char const continue default do double else enum extern float for goto if inline int long
register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while
_Bool _Complex _Imaginary _Alignas _Alignof _Atomic _Generic _Noreturn _Static_assert _Thread_local main
""".split())


class SymbolTable:
    """Hands out unique C identifiers derived from model names."""

    def __init__(self, reserved: set[str] | frozenset[str] = frozenset()) -> None:
        self.used: set[str] = set(C_KEYWORDS) | set(reserved)

    def make(self, name: str, prefix: str = "", suffixes: tuple[str, ...] = ()) -> str:
        """A fresh identifier; `suffixes` are companions the templates derive from it (`x` -> `x_init`),
        reserved with it so that no other name can take them."""
        base = prefix + re.sub(r"[^A-Za-z0-9_]", "_", name.encode("ascii", "replace").decode())
        base = re.sub(r"_+", "_", base).strip("_") or "v"
        if base[0].isdigit():
            base = "v_" + base
        base = base[:60]
        candidate, index = base, 1
        while self._taken(candidate, suffixes):
            candidate = f"{base}_{index}"
            index += 1
        self.used.update([candidate] + [candidate + suffix for suffix in suffixes])
        return candidate

    def _taken(self, candidate: str, suffixes: tuple[str, ...]) -> bool:
        if candidate.startswith("__") or candidate.startswith("rt_"):
            return True
        return any(name in self.used for name in [candidate] + [candidate + suffix for suffix in suffixes])


def comment_text(text: str) -> str:
    """Text safe inside a /* */ comment and on one line: printable ASCII, no comment terminator."""
    printable = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)
    return printable.replace("*/", "*_/").replace("/*", "/_*").replace("\\", "/")


def c_string(text: str) -> str:
    """A C string literal holding `text` (escaped, ASCII only)."""
    out = []
    for ch in text.encode("utf-8"):
        if ch in (0x22, 0x5C):
            out.append("\\" + chr(ch))
        elif 32 <= ch < 127 and ch != 0x3F:  # '?' escaped to avoid trigraphs
            out.append(chr(ch))
        else:
            out.append(f"\\{ch:03o}")
    return '"' + "".join(out) + '"'


def c_float(value: float) -> str:
    """A float literal that reads back as the same float32, in its shortest form."""
    f32 = np.float32(value)
    if not np.isfinite(f32):
        return "INFINITY" if f32 > 0 else "-INFINITY" if f32 < 0 else "NAN"
    text = np.format_float_scientific(f32, unique=True, trim="0", exp_digits=1) if f32 != 0 else "0.0"
    if "e" in text:
        mantissa, exponent = text.split("e")
        if -4 <= int(exponent) <= 6:
            text = np.format_float_positional(f32, unique=True, trim="0")
    if text.endswith("."):
        text += "0"
    return text + "f"


def c_float_exact(value: float) -> str:
    """Hexadecimal float literal: exact and compact for tensor contents."""
    if not np.isfinite(np.float32(value)):
        return c_float(value)
    mantissa, exponent = float(np.float32(value)).hex().split("p")
    mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    return f"{mantissa}p{exponent}f"

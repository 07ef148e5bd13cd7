"""Safe C identifiers and comments from model names (which may hold any character)."""

from __future__ import annotations

import re
import unicodedata

import numpy as np

# Every identifier the generated C declares is `<kind>_<stem>`. A kind holds no underscore, so an identifier
# splits back into its kind and stem at the first one: two identifiers are equal only if kind and stem are.
# Stems are unique and non-empty, and no identifier of the runtime, the kernels, the templates or the C
# library begins with a kind and an underscore (tests/backend/test_hostile_names.py checks the generated
# projects), so no model name can meet a fixed identifier, a keyword or another generated one.
KINDS = {
    "in": "a data input", "p": "a parameter", "c": "a constant", "s": "optimizer state",
    "act": "an activation or the loss", "g": "a gradient", "kept": "the off-chip copy of a gradient",
    "init": "a buffer's initial contents", "data": "a data input's rows", "rows": "the rows of every step",
    "gather": "the function that gathers a step's rows", "k": "a kernel's parameters",
    "tl": "a tile loop", "tlent": "a tile loop's axis entries", "tlaxes": "a tile loop's axes",
    "tlops": "a tile loop's operands", "tlrun": "a tile loop's kernel on one tile",
}
STEM_CHARS = 40  # long enough to recognise a layer, short enough to read; uniqueness comes from a number


def identifier(kind: str, stem: str) -> str:
    """The identifier of `stem` in one of the KINDS."""
    if kind not in KINDS:
        raise KeyError(f"{kind!r} is not a kind of generated identifier")
    return f"{kind}_{stem}"


class SymbolTable:
    """Hands out stems: unique, non-empty, readable renderings of model names as C identifier characters."""

    def __init__(self) -> None:
        self.stems: set[str] = set()

    def stem(self, name: str) -> str:
        ascii_only = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()  # naïve -> naive
        base = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9]", "_", ascii_only)).strip("_")[:STEM_CHARS].rstrip("_")
        base = base or "anon"
        candidate, index = base, 2
        while candidate in self.stems:
            candidate = f"{base}_{index}"
            index += 1
        self.stems.add(candidate)
        return candidate

    def make(self, kind: str, name: str) -> str:
        """A fresh identifier of `kind` for the model name `name`."""
        return identifier(kind, self.stem(name))


COMMENT_CHARS = 200  # a 5,000-character layer name shows as its start and its end


def comment_text(text: str) -> str:
    """Text safe inside a /* */ comment (or after a Makefile's #) and on one line: printable ASCII, no comment
    delimiter, no backslash (a line splice at the end of a line)."""
    printable = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text).replace("\\", "/")
    if len(printable) > COMMENT_CHARS:
        half = (COMMENT_CHARS - 3) // 2
        printable = printable[:half] + "..." + printable[-half:]
    while "*/" in printable or "/*" in printable:
        printable = printable.replace("*/", "*_/").replace("/*", "/_*")
    return printable


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

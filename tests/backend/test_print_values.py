"""The program prints float32 values in decimal that a person reads and the host reads back exactly: the
runtime's printer, compiled for the host, against Python's own "%.9g"."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinyodl.driver.qemu import read_words

RUNTIME = Path(__file__).resolve().parents[2] / "runtime" / "c"
HARNESS = r"""
#include <stdio.h>
#include <string.h>
#include "tinyodl_rt.h"
void rt_putc(char c) { putchar(c); }
void rt_puts(const char *s) { fputs(s, stdout); }
void rt_print_int(int value) { printf("%d", value); }
int main(void)
{
    unsigned word;
    float value;
    while (scanf("%x", &word) == 1) {
        memcpy(&value, &word, sizeof value);
        rt_print_float(value);
        putchar('\n');
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def printer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("needs a host C compiler")
    work = tmp_path_factory.mktemp("print")
    (work / "harness.c").write_text(HARNESS)
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{RUNTIME}", "-o", str(work / "print"),
                    str(work / "harness.c"), str(RUNTIME / "print.c")], check=True)
    return work / "print"


def _expected(word: int) -> str:
    value = float(np.array([word], np.uint32).view(np.float32)[0])
    if np.isnan(value):
        return "-nan" if word >> 31 else "nan"
    text = f"{value:.9g}"  # C's "%.9g"
    return text if any(c in text for c in ".en") else text + ".0"


def test_every_kind_of_float32_prints_as_percent_9g_and_reads_back(printer: Path) -> None:
    rng = np.random.default_rng(3)
    special = [0, 0x80000000, 1, 0x807FFFFF, 0x00800000, 0x7F7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000,
               0x3F800000, 0x3DCCCCCD, 0x4E6E6B28, 0x4B7FFFFF, 0x4B800000, 0x38D1B717, 0x38D1B718, 0x5F5E1000]
    decades = np.float32(10.0) ** np.arange(-45, 39, dtype=np.float32)  # where the form changes
    words = np.concatenate([np.array(special, np.uint32), rng.integers(0, 2**32, 100_000, dtype=np.uint32),
                            decades.view(np.uint32), (decades * np.float32(0.9999999)).view(np.uint32),
                            rng.standard_normal(20_000).astype(np.float32).view(np.uint32)])
    result = subprocess.run([str(printer)], input="\n".join(f"{w:08x}" for w in words), capture_output=True,
                            text=True, check=True)
    printed = result.stdout.split()
    assert len(printed) == len(words)
    mismatches = [(f"{w:08x}", p, _expected(int(w))) for w, p in zip(words, printed, strict=True)
                  if p != _expected(int(w))]
    assert not mismatches, mismatches[:10]
    back = read_words("P", len(printed), iter([" ".join(printed), "END"]))
    finite = ~np.isnan(words.view(np.float32))
    np.testing.assert_array_equal(back[finite], words[finite])
    assert np.isnan(back[~finite].view(np.float32)).all()


def test_integers_read_back_as_int32_words() -> None:
    back = read_words("S", 4, iter(["0 7 -3 2147483647", "END"]))
    np.testing.assert_array_equal(back.view(np.int32), [0, 7, -3, 2147483647])

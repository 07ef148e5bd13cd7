"""The README's continual-learning session, run exactly as written (the simulated runs in QEMU): every output
line it quotes, check lines included, must be printed with the same words and numbers.

The runs are QEMU's on purpose: its float32 arithmetic is emulated bit for bit, so its trajectory is the same
on every machine, while a float64 reference trajectory of 137 steps drifts with the host's BLAS kernels."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def _matches(quoted: str, printed: list[str]) -> bool:
    """The line is printed with the same words and the same numbers, up to float32 rounding."""
    shape = NUMBER.sub("#", quoted)
    expected = [float(n) for n in NUMBER.findall(quoted)]
    return any(NUMBER.sub("#", line) == shape
               and np.allclose([float(n) for n in NUMBER.findall(line)], expected, rtol=1e-5, atol=2e-6)
               for line in printed)


def _session() -> tuple[str, list[tuple[str, list[str]]]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A continual-learning session\n", 1)[1].split("\n## ", 1)[0]
    script = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    commands: list[tuple[str, list[str]]] = []
    lines = iter(section.split("```", 2)[2].splitlines())
    for line in lines:
        if not line.startswith("    $ "):
            if commands and line.startswith("    ") and not line.strip().startswith("#"):
                commands[-1][1].append(line.strip())
            continue
        command = line[len("    $ "):]
        while command.endswith("\\"):
            command = command[:-1] + next(lines).strip()
        commands.append((command, []))
    return script, commands


@pytest.mark.slow
@pytest.mark.qemu
def test_readme_session_outputs_hold(tmp_path: Path, toolchain) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    script, commands = _session()
    (tmp_path / "pretrain.py").write_text(script)
    assert [c.split()[:2] for c, _ in commands] == [["python", "pretrain.py"], ["tinyodl", "eval"],
                                                    ["tinyodl", "simulate"], ["tinyodl", "eval"],
                                                    ["tinyodl", "simulate"]]
    for command, quoted in commands:
        argv = shlex.split(command.split("|")[0])
        argv[0] = sys.executable
        if command.startswith("tinyodl"):
            argv[1:1] = ["-m", "tinyodl"]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        for line in quoted:
            if "..." in line:  # elided
                continue
            assert _matches(line, done.stdout.splitlines()), f"{command}: {line!r} not in\n{done.stdout[-2000:]}"
    assert (tmp_path / "digits-2.onnx").is_file() and (tmp_path / "plots" / "loss.png").is_file()

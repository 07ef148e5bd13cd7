"""The step-local check catches a planted kernel bug: one element of a weight gradient off by 0.1% (patched\ninto the generated C between the kernel that computes it and the update that reads it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from digits import digits_cnn, digits_data

from tinyodl import api
from tinyodl.backend_c import project

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


def _plant(files: dict[str, str]) -> None:
    """Scale one element of fc.w's gradient by 1.001 after the kernel computed it, before the update reads it."""
    source = files["src/network.c"]
    grad = re.search(r"#define (\w+) .*/\* gradient fc\.w\.grad,", source)
    assert grad is not None, "fc.w's gradient has a buffer"
    body = source.index("static void train_step_on_core")
    update = re.compile(r"\n(\s*)RT_REGION\(\d+\);\n.*\(update\): sgd_update fc\.w").search(source, body)
    assert update is not None, "fc.w has an sgd update in the step"
    indent = update.group(1)
    bug = f"\n{indent}if (rt_core_id() == 0) {grad.group(1)}[17] *= 1.001f;\n{indent}rt_barrier();"
    files["src/network.c"] = source[:update.start()] + bug + source[update.start():]


@pytest.mark.parametrize("planted", [False, True])
def test_planted_gradient_bug_is_caught(tmp_path: Path, toolchain, monkeypatch: pytest.MonkeyPatch,
                                        planted: bool) -> None:
    if planted:
        original = project.render_project

        def render_with_bug(*args, **kwargs):  # type: ignore[no-untyped-def]
            program, files = original(*args, **kwargs)
            _plant(files)
            return program, files

        monkeypatch.setattr(project, "render_project", render_with_bug)
    result = api.simulate(digits_cnn(tmp_path / "cnn.onnx", 8), data=digits_data(tmp_path / "digits.npz"),
                          steps=24, shuffle=1, lr=0.05)
    assert result.ok is not planted, result.check
    if planted:
        assert "fc.w" in result.check["worst"]["tensor"], result.check

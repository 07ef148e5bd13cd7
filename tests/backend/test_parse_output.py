"""The host reads back what the generated main() prints."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl.driver.qemu import parse_output


def _block(tag: str, index: int, words: np.ndarray) -> list[str]:
    return [f"{tag} {index} {len(words)}", " ".join(f"{w:08x}" for w in words), "END"]


def test_losses_states_and_dma() -> None:
    words = np.array([1.5, -2.0, 0.25], np.float32).view(np.uint32)
    step_counter = np.array([2], np.int32).view(np.uint32)
    text = "\n".join([
        "LOSS 0 40200000", "STATE 0", *_block("P", 0, words[::-1]), *_block("S", 0, step_counter - 1),
        "LOSS 1 3f800000", "STATE 1", *_block("P", 0, words), *_block("G", 0, words[::-1]),
        *_block("S", 0, step_counter),
        "DMA 4096 3 602",
    ])
    out = parse_output(text, ["w"], ["optimizer.step"])
    assert out.losses == [2.5, 1.0]
    assert sorted(out.states) == [0, 1] and not out.states[0].grads
    np.testing.assert_array_equal(out.states[1].state["optimizer.step"].view(np.int32), [2])
    # the last state is the trained result
    np.testing.assert_array_equal(out.params["w"], [1.5, -2.0, 0.25])
    np.testing.assert_array_equal(out.grads["w"], [0.25, -2.0, 1.5])
    assert out.dma == (4096, 3, 602)


@pytest.mark.parametrize("text", ["P 0 1\n3f800000\nEND", "STATE 0\nP 0 2\n3f800000\nEND"])
def test_malformed_blocks(text: str) -> None:
    with pytest.raises(ValueError):
        parse_output(text, ["w"])

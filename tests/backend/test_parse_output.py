"""The host reads back what the generated main() prints."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl.driver.qemu import parse_output


def _block(tag: str, index: int, values: list[str]) -> list[str]:
    return [f"{tag} {index} {len(values)}", " ".join(values), "END"]


def test_losses_states_and_dma() -> None:
    words = ["1.5", "-2.0", "0.25"]
    text = "\n".join([
        "LOSS 0 2.5", "STATE 0", *_block("P", 0, words[::-1]), *_block("S", 0, ["1"]),
        "LOSS 1 0.100000001", "STATE 1", *_block("P", 0, words), *_block("G", 0, words[::-1]),
        *_block("S", 0, ["2"]),
        "DMA 4096 3 602",
    ])
    out = parse_output(text, ["w"], ["optimizer.step"])
    assert out.losses == [2.5, float(np.float32(0.1))]
    assert sorted(out.states) == [0, 1] and not out.states[0].grads
    np.testing.assert_array_equal(out.states[1].state["optimizer.step"].view(np.int32), [2])
    # the last state is the trained result
    np.testing.assert_array_equal(out.params["w"], [1.5, -2.0, 0.25])
    np.testing.assert_array_equal(out.grads["w"], [0.25, -2.0, 1.5])
    assert out.dma == (4096, 3, 602)


@pytest.mark.parametrize("text", ["P 0 1\n1.0\nEND", "STATE 0\nP 0 2\n1.0\nEND", "STATE 0\nP 0 1\n3f80\nEND",
                                  "STATE 0\nS 0 1\n4294967296\nEND"])
def test_malformed_blocks(text: str) -> None:
    with pytest.raises(ValueError):
        parse_output(text, ["w"])

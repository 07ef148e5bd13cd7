"""The host reads back what the generated main() prints."""

from __future__ import annotations

import numpy as np

from tinyodl.driver.qemu import parse_output


def test_losses_params_grads_and_dma() -> None:
    words = np.array([1.5, -2.0, 0.25], np.float32).view(np.uint32)
    text = "\n".join([
        "LOSS 0 40200000", "LOSS 1 3f800000",
        "PARAM 0 3", " ".join(f"{w:08x}" for w in words), "END",
        "GRAD 0 3", " ".join(f"{w:08x}" for w in words[::-1]), "END",
        "DMA 4096 3 602",
    ])
    out = parse_output(text, ["w"])
    assert out.losses == [2.5, 1.0]
    np.testing.assert_array_equal(out.params["w"], [1.5, -2.0, 0.25])
    np.testing.assert_array_equal(out.grads["w"], [0.25, -2.0, 1.5])
    assert out.dma == (4096, 3, 602)

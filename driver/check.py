"""Simulated numbers against the reference: tolerances and the worst tensor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl.driver.reference import ReferenceRun

RTOL, ATOL = 1e-4, 1e-5   # fp32 kernels against the float64 reference
# Updates (final minus initial parameters) are also compared, normwise: a parameter's own magnitude would
# otherwise hide a wrong gradient whenever lr * grad is far below RTOL * |w|. The floor allows float32
# rounding of the parameter itself, twice per step.
UPDATE_RTOL = 1e-3
# The last step's parameter gradients, normwise: checks every backward kernel whatever the optimizer
# (Adam's update is ill-conditioned where a gradient is near zero, SGD's is linear in it).
GRAD_RTOL = 1e-3
F32_EPS = 2.0 ** -24


@dataclass
class StepState:
    """The program's full state after one step, as it printed it (raw float32 / int32 words)."""

    params: dict[str, np.ndarray] = field(default_factory=dict)  # trainable parameters by ONNX name
    grads: dict[str, np.ndarray] = field(default_factory=dict)   # their gradients in this step
    state: dict[str, np.ndarray] = field(default_factory=dict)   # optimizer state by IR name, as uint32 words


@dataclass
class SimOutput:
    losses: list[float]
    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray] = field(default_factory=dict)  # of the last step
    dma: tuple[int, int, int] = (0, 0, 0)  # bytes, transfers, modelled cycles
    states: dict[int, StepState] = field(default_factory=dict)  # after the steps around each checkpoint


def compare(reference: ReferenceRun, simulated: SimOutput, steps: int) -> dict[str, Any]:
    """Per tensor: pass when |sim - ref| <= ATOL + RTOL |ref| everywhere; report the worst tensor."""
    if len(simulated.losses) != steps:
        return {"ok": False, "worst": {"tensor": "loss", "rel_err": float("inf")},
                "reason": f"the program printed {len(simulated.losses)} of {steps} losses"}
    pairs = [(f"loss[step {i}]", np.array([r]), np.array([s]))
             for i, (r, s) in enumerate(zip(reference.losses, simulated.losses, strict=False))]
    for name, ref in reference.params.items():
        if name not in simulated.params:
            return {"ok": False, "worst": {"tensor": name, "rel_err": float("inf")},
                    "reason": f"parameter {name} missing from the output"}
        pairs.append((name, np.asarray(ref, np.float64).reshape(-1),
                      simulated.params[name].astype(np.float64).reshape(-1)))
    worst_name, worst_ratio, worst_rel, ok = "", -1.0, 0.0, True
    for name, ref, sim in pairs:
        diff = np.abs(sim - ref)
        ratio = float(np.max(diff / (ATOL + RTOL * np.abs(ref)))) if diff.size else 0.0
        if not np.all(np.isfinite(sim)):
            ratio = float("inf")
        rel = float(np.max(diff) / max(float(np.max(np.abs(ref))), 1e-30)) if diff.size else 0.0
        ok &= ratio <= 1.0
        if ratio > worst_ratio:
            worst_name, worst_ratio, worst_rel = name, ratio, rel
    for name, ratio, rel in _update_errors(reference, simulated, steps) + _grad_errors(reference, simulated):
        ok &= ratio <= 1.0
        if ratio > worst_ratio:
            worst_name, worst_ratio, worst_rel = name, ratio, rel
    return {"ok": bool(ok), "worst": {"tensor": worst_name, "rel_err": worst_rel, "tolerance_ratio": worst_ratio},
            "tolerance": {"rtol": RTOL, "atol": ATOL, "update_rtol": UPDATE_RTOL, "grad_rtol": GRAD_RTOL}}


def _grad_errors(reference: ReferenceRun, simulated: SimOutput) -> list[tuple[str, float, float]]:
    """(name, error / tolerance, normwise relative error) of every parameter gradient of the last step."""
    found = []
    for name, expected in reference.grads.items():
        actual = simulated.grads.get(name)
        if actual is None:
            found.append((f"gradient of {name}", float("inf"), float("inf")))
            continue
        expected_flat = np.asarray(expected, np.float64).reshape(-1)
        error = float(np.max(np.abs(actual.astype(np.float64).reshape(-1) - expected_flat), initial=0.0))
        scale = float(np.max(np.abs(expected_flat), initial=0.0))
        tolerance = GRAD_RTOL * scale + 1e-30
        ratio = error / tolerance if np.isfinite(error) else float("inf")
        found.append((f"gradient of {name}", ratio, error / scale if scale > 0 else error))
    return found


def _update_errors(reference: ReferenceRun, simulated: SimOutput, steps: int) -> list[tuple[str, float, float]]:
    """(name, error / tolerance, normwise relative error) of the total update of each parameter that
    plain SGD updates (an update linear in the gradient)."""
    found = []
    for name, ref in reference.params.items():
        initial = reference.initial.get(name)
        if initial is None or name not in reference.linear_updates:
            continue
        ref_flat = np.asarray(ref, np.float64).reshape(-1)
        expected = ref_flat - initial.reshape(-1)
        actual = simulated.params[name].astype(np.float64).reshape(-1) - initial.reshape(-1)
        if not expected.size:
            continue
        error = float(np.max(np.abs(actual - expected)))
        scale = float(np.max(np.abs(expected)))
        tolerance = UPDATE_RTOL * scale + 2 * steps * F32_EPS * float(np.max(np.abs(ref_flat)))
        ratio = error / tolerance if tolerance > 0 else (0.0 if error == 0 else float("inf"))
        found.append((f"update of {name}", ratio if np.isfinite(error) else float("inf"),
                      error / scale if scale > 0 else error))
    return found

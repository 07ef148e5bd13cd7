"""Float32 error bounds of one training step, for checking a simulated step against the float64 reference.

Every value v of the step may differ from the float64 reference by at most, element by element,

    SAFETY * (sqrt(n) * (eps32 * M(v) + 2^-149) + max |f32(v) - f64(v)|) + W(v) + carried(v)

- The first term is the rounding of v's own op: a float32 sum of n terms a_i b_i errs by about
  sqrt(n) * eps32 * max|partial sum| <= sqrt(n) * eps32 * sum |a_i b_i| (eps32 = 2^-24; n * eps32 is the
  worst case, sqrt(n) what rounding errors of either sign add up to; 2^-149 is the spacing of float32's
  subnormals, where rounding is absolute). M(v) runs the op's own reference on the
  magnitudes of its operands, which for linear and multilinear ops is exactly sum |a_i b_i|. Operands that
  only select or scale (the saved input of relu_grad, the argmax source of maxpool2d_grad, batch-norm
  variances, labels) keep their values, subtracted operands (means, mse targets) enter negated so that their
  magnitudes add, and the cross-entropy and its gradient round at the scale of the logits and of 1 (a loss
  near 0 and a probability near 1 get absolute bounds). M(v) >= |v| always.
- The second term is the error v inherits from its operands: the same step run in float32 on the host
  (numpy, same ops, another summation order) measures it, taken normwise (its largest element) because
  inherited errors do not stay where they were made. A worst-case bound of inherited errors grows with the
  product of the layers' sums |w| and would be orders of magnitude looser than any real error.
- W(v), for the cross-entropy and its gradient only, is the worst case of their exp, sums, log and divisions
  (`_loss_worst_case`), and carried(v) the part of the gradient's W that reaches v through the backward ops
  (zero outside the backward phase). Both are derived by hand in the order the kernel computes
  (backend_c/kernels/loss.c): per row m = max z, e_j = expf(z_j - m), S = sum e_j in sequence,
  p_j = e_j * (1/S) * (1/N), then p_t - 1/N at the label t. In units of eps32, with p_j = e_j / S:
    e_j        relative |z_j - m| (the rounded argument, amplified by exp) + 2 (expf within one ulp)
    S          relative sum_j p_j (|z_j - m| + 2) + (C - 1) (the running sum's roundings)
    p_j        relative that of e_j and S + 4 (1/S, the two multiplies, 1/N)
    p_t - 1/N  absolutely |p_t - 1/N| + 1/N (exact when p_t >= 1/2 by Sterbenz; 1/N's rounding)
  so |d g_j| <= eps32 / N * (p_j (|z_j - m| + sum_k p_k |z_k - m| + C + 6) + |p_j - y_j| + y_j), y the
  one-hot label (the 1/N of an exact division by a power of two is counted anyway). These are absolute in
  the probabilities, not relative to g: when the model is confident,
  p_t - 1 cancels to a few eps32 while its error stays eps32 times the terms above (a batch of one at a
  loss of 1e-5). The loss log(S) - (z_t - m) errs by the relative error of S, logf's ulp of log(S) and the
  two subtractions; the mean over N rows adds (N - 1) roundings of the running total. Being worst cases,
  W and carried are not multiplied by SAFETY.
  The host's float32 run does not sample these errors (numpy's exp, log and summation order are not the
  target's), so the gradient's worst case is also carried forward: every backward op, linear in the
  gradient it receives, passes it on as its magnitude run with that operand replaced by the carried error
  (a bias gradient at batch 1 is the loss gradient itself), added to the bound without the safety factor.

A kernel that drops, repeats or misplaces one of n terms errs by about M(v) / n, far above the bound for the
sizes of our models. A ReLU or max that flips on a difference of one rounding is not covered; it needs a
pre-activation within about one rounding of its switching point at a checked step.

Optimizer updates are elementwise and checked separately (see driver/check.py): they are re-run on the
simulator's own gradients, so their bound is a few roundings of the magnitudes involved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tinyodl.ir.graph import Graph, Op, Value
from tinyodl.ir.registry import kernel_of, lookup, op_macs
from tinyodl.ir.types import Phase

F32_EPS = 2.0 ** -24
# Below 2^-126 float32 spacing is absolute: a result rounds by up to this much whatever its magnitude (a momentum
# that decays by 0.9 a step for thousands of steps ends in subnormals).
F32_SUBNORMAL = 2.0 ** -149
# Several standard deviations of the rounding model, and a different summation order on the target.
SAFETY = 8.0

# Operand positions, per op, that keep their actual values in the magnitude run.
_ACTUAL = {"relu_grad": {1}, "leaky_relu_grad": {1}, "sigmoid_grad": {1}, "tanh_grad": {1}, "clip_grad": {1},
           "maxpool2d_grad": {1}, "batchnorm": {4}, "batchnorm_grad_input": {2}, "batchnorm_grad_params": {3}}
# Operand positions, per op, that are subtracted: their magnitudes enter negated so that they add.
_NEGATED = {"mse_loss": {1}, "mse_loss_grad": {1}, "batchnorm": {3}, "batchnorm_grad_params": {2}}
# Ops whose exp, log and divisions get a worst-case bound by hand on top (see the module's docstring).
_LOSSES = ("softmax_cross_entropy", "softmax_cross_entropy_grad")
# Attributes that scale a result: their magnitudes are used.
_SCALES = ("alpha", "beta", "scale")


@dataclass
class StepRun:
    """One training step of the reference from a given state, with error bounds."""

    values: dict[str, np.ndarray]       # every value the step computes (float64), by IR name
    bounds: dict[str, np.ndarray]       # the error bound of every float value outside the update phase
    state_after: dict[str, np.ndarray]  # parameters and optimizer state after the update, by IR name


def run_step(graph: Graph, state: Mapping[str, np.ndarray], feed: Mapping[str, np.ndarray],
             updates: Mapping[str, np.ndarray] | None = None) -> StepRun:
    """Run one step of `graph` in float64 from `state` (every parameter and optimizer state by IR name) on
    `feed`. `updates` replaces values before the update phase reads them (the simulator's own gradients)."""
    with np.errstate(all="ignore"):  # overflows show as infinite values and bounds, which fail the check
        return _run_step(graph, state, feed, updates or {})


def _run_step(graph: Graph, state: Mapping[str, np.ndarray], feed: Mapping[str, np.ndarray],
              updates: Mapping[str, np.ndarray]) -> StepRun:
    values: dict[str, np.ndarray] = {}
    singles: dict[str, np.ndarray] = {}  # the same step in float32
    for value in graph.inputs:
        values[value.name] = _stored(value, feed[value.name])
    for value in graph.params + graph.state:
        values[value.name] = _stored(value, state[value.name])
    for value in graph.inputs + graph.params + graph.state:
        singles[value.name] = _stored(value, values[value.name], np.float32)
    bounds: dict[str, np.ndarray] = {}
    carried: dict[str, np.ndarray] = {}  # worst-case errors the float32 run does not sample, by value
    state_after: dict[str, np.ndarray] = {}
    for op in graph.ops:
        kernel, kernel_attrs = kernel_of(op.type, op.attrs)  # a tile loop computes what its kernel does
        opdef = lookup(kernel)
        # The program holds its hyperparameters as float32 constants: 1 - beta2 with beta2 = 0.999 rounded to
        # float32 is 1.3e-5 away from 0.001, far more than a rounding of the update itself.
        attrs = {key: float(np.float32(item)) if isinstance(item, float) else item
                 for key, item in opdef.with_defaults(kernel_attrs).items()}
        operands = [values[v.name] for v in op.inputs]
        if op.phase is Phase.UPDATE and updates:
            operands = [_stored(v, updates[v.name]) if v.name in updates else values[v.name] for v in op.inputs]
        results = opdef.reference(operands, attrs)
        if opdef.mutates:
            written = [op.inputs[p] for p in opdef.mutates if p < len(op.inputs)]
            for value, array in zip(written, results, strict=False):
                values[value.name] = state_after[value.name] = _stored(value, array)
            continue
        for value, array in zip(op.outputs, results, strict=False):
            values[value.name] = _stored(value, array)
        if op.phase is Phase.UPDATE:
            continue
        single_results = opdef.reference([singles[v.name] for v in op.inputs], attrs)
        incoming = {v.name: carried[v.name] for v in op.inputs if v.name in carried}
        passed_on = _magnitudes(op, kernel, attrs, values, incoming) if incoming else [None] * len(op.outputs)
        worst = (_loss_worst_case(kernel, values[op.inputs[0].name], values[op.inputs[1].name])
                 if kernel in _LOSSES else [None] * len(op.outputs))
        terms = np.sqrt(_terms(op))
        for value, magnitude, single, passed, worst_case in zip(
                op.outputs, _magnitudes(op, kernel, attrs, values), single_results, passed_on, worst, strict=False):
            singles[value.name] = _stored(value, single, np.float32)
            if not value.dtype.is_float:
                continue
            inherited = np.max(np.abs(singles[value.name] - values[value.name]), initial=0.0)
            magnitude = np.maximum(_stored(value, magnitude), np.abs(values[value.name]))
            bounds[value.name] = SAFETY * (terms * (F32_EPS * magnitude + F32_SUBNORMAL) + inherited)
            # worst cases already, the loss's own and the one carried from its gradient: no safety factor
            if worst_case is not None:
                bounds[value.name] = bounds[value.name] + _stored(value, worst_case)
                if kernel == "softmax_cross_entropy_grad":
                    carried[value.name] = _stored(value, worst_case)
            elif passed is not None:
                carried[value.name] = _stored(value, passed)
                bounds[value.name] = bounds[value.name] + carried[value.name]
    return StepRun(values, bounds, state_after)


def _stored(value: Value, array: np.ndarray, precision: type = np.float64) -> np.ndarray:
    dtype = precision if value.dtype.is_float else value.dtype.numpy
    return np.asarray(array).astype(dtype, copy=False).reshape(value.shape)


def _terms(op: Op) -> float:
    """Summands per output element: MACs per output, or input elements per output for reductions."""
    outputs = max(sum(v.type.numel for v in op.outputs), 1)
    largest_input = max((v.type.numel for v in op.inputs), default=1)
    return float(max(1, op_macs(op) // outputs, largest_input // outputs))


def _magnitudes(op: Op, kernel: str, attrs: Mapping[str, object], values: Mapping[str, np.ndarray],
                replaced: Mapping[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """sum |terms| of each output element of `op`, which computes `kernel` (see the module's docstring).
    Operands named in `replaced` enter as the given non-negative arrays instead of their magnitudes: for an
    op linear in them, that bounds how an error of that size in them shows in the result."""
    replaced = replaced or {}
    if kernel in _LOSSES:
        return _loss_magnitudes(kernel, values[op.inputs[0].name])
    if kernel == "softmax":
        return [np.ones(op.outputs[0].shape)]  # every probability lies in [0, 1]
    if kernel == "softmax_grad":  # y * (dy - sum(dy * y)): both terms add up in magnitude
        dy = replaced.get(op.inputs[0].name, np.abs(values[op.inputs[0].name]))
        y = np.abs(values[op.inputs[1].name])
        axis = int(attrs.get("axis", -1))  # type: ignore[call-overload]
        return [y * (dy + np.sum(dy * y, axis=axis, keepdims=True))]
    operands = []
    for position, value in enumerate(op.inputs):
        if value.name in replaced:
            operands.append(replaced[value.name])
        elif position in _ACTUAL.get(kernel, set()) or not value.dtype.is_float:
            operands.append(values[value.name])
        elif position in _NEGATED.get(kernel, set()):
            operands.append(-np.abs(values[value.name]))
        else:
            operands.append(np.abs(values[value.name]))
    scaled = {key: abs(item) if key in _SCALES and isinstance(item, float) else item for key, item in attrs.items()}
    return [np.abs(result) for result in lookup(kernel).reference(operands, scaled)]


def _loss_magnitudes(kernel: str, logits: np.ndarray) -> list[np.ndarray]:
    """The cross-entropy of a batch is the mean of logsumexp(z) - z_target, its gradient (softmax - onehot) / B.
    Both round at the scale of the logits and of 1, not at their own values: a loss near 0 and a probability
    near 1 get absolute bounds."""
    batch, classes = logits.shape[0], logits.shape[1]
    if kernel == "softmax_cross_entropy_grad":
        return [np.full(logits.shape, 2.0 / batch)]
    rows = np.max(np.abs(logits).reshape(batch, -1), axis=1) + np.log(classes)
    return [np.asarray(np.mean(rows))]


def _loss_worst_case(kernel: str, logits: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """The worst-case rounding of the cross-entropy (a scalar) or of its gradient (per logit) in the kernel's
    own exp, sums, log and divisions (see the module's docstring)."""
    batch, classes = logits.shape
    below = np.max(logits, axis=1, keepdims=True) - logits  # |z_j - m|, the arguments of expf
    probs = np.exp(-below)
    probs /= np.sum(probs, axis=1, keepdims=True)
    spread = np.sum(probs * below, axis=1, keepdims=True)  # sum_k p_k |z_k - m|
    if kernel == "softmax_cross_entropy_grad":
        onehot = np.zeros_like(probs)
        onehot[np.arange(batch), labels.astype(np.int64)] = 1.0
        units = probs * (below + spread + classes + 6) + np.abs(probs - onehot) + onehot
        return [F32_EPS / batch * units + F32_SUBNORMAL]
    log_sum = np.log(np.sum(np.exp(-below), axis=1))
    target_below = below[np.arange(batch), labels.astype(np.int64)]
    sum_error = spread[:, 0] + 2 + (classes - 1)  # the relative error of S, which log turns absolute
    rows = sum_error + 2 * log_sum + target_below + np.abs(log_sum + target_below)
    return [np.asarray(F32_EPS * (np.mean(rows) + (batch - 1) * np.mean(np.abs(log_sum + target_below))
                                  + np.abs(np.mean(log_sum + target_below))) + F32_SUBNORMAL)]

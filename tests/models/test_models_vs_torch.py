"""Whole models: training steps of the bundled examples through the reference executor match PyTorch.

The PyTorch side is the examples' own nn.Module definitions (examples/models.py) in float64 and eval
mode (batch norm with fixed statistics), loaded with the ONNX file's initializers, trained with
torch.optim on the same batches. Losses of every step and the final parameters agree to rtol 1e-6.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tinyodl.driver.data import load_batches
from tinyodl.driver.options import Options
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.driver.reference import run_reference
from tinyodl.ir.registry import kernel_of

torch = pytest.importorskip("torch")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STEPS = 3
RTOL = 1e-6


def _models_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("tinyodl_example_models", EXAMPLES / "models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_run(name: str, options: Options, trainable: set[str], batches: list[dict[str, np.ndarray]],
               input_name: str, target_name: str) -> tuple[list[float], dict[str, np.ndarray]]:
    module, _ = _models_module().build(name)
    module = module.double().eval()
    initial = {t.name: numpy_helper.to_array(t) for t in onnx.load(EXAMPLES / f"{name}.onnx").graph.initializer}
    with torch.no_grad():
        for key, tensor in module.state_dict().items():
            if key in initial:
                tensor.copy_(torch.from_numpy(initial[key].astype(np.float64)))
    params = dict(module.named_parameters())
    for key, param in params.items():
        param.requires_grad_(key in trainable)
    learn = [params[key] for key in params if key in trainable]
    if options.optimizer == "sgd":
        opt = torch.optim.SGD(learn, lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay,
                              nesterov=options.nesterov)
    elif options.optimizer == "adam":
        opt = torch.optim.Adam(learn, lr=options.lr, betas=options.betas, eps=options.eps,
                               weight_decay=options.weight_decay)
    else:
        opt = torch.optim.AdamW(learn, lr=options.lr, betas=options.betas, eps=options.eps,
                                weight_decay=options.weight_decay)
    losses = []
    for feed in batches:
        opt.zero_grad()
        logits = module(torch.from_numpy(feed[input_name].astype(np.float64)))
        if options.loss == "cross_entropy":
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(feed[target_name]))
        else:
            loss = torch.nn.functional.mse_loss(logits, torch.from_numpy(feed[target_name].astype(np.float64)))
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses, {key: p.detach().numpy().copy() for key, p in params.items()}


# These compare numbers with PyTorch at batch 2: ResNet8 with momentum or Adam needs more than pulp8's 2 MiB
# of L2, so they get a larger budget (the budget itself is tested with the memory pass).
BIG_L2 = 16 * 1024 * 1024
CONFIGS = {
    "sgd": Options(l2_bytes=BIG_L2, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True, batch=2),
    "adam": Options(l2_bytes=BIG_L2, optimizer="adam", lr=1e-3, weight_decay=1e-3, batch=2),
    "adamw-mse": Options(l2_bytes=BIG_L2, optimizer="adamw", lr=1e-3, weight_decay=0.05, loss="mse", batch=2),
    "frozen-prefix": Options(l2_bytes=BIG_L2, optimizer="sgd", lr=0.05, momentum=0.5, train="last:2", batch=2),
    "bias-only": Options(l2_bytes=BIG_L2, optimizer="sgd", lr=0.1, train="bias", batch=1),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("name", ["mlp", "lenet", "dscnn", "resnet8"])
def test_training_steps_match_pytorch(name: str, config: str) -> None:
    options = CONFIGS[config]
    graph = build_training_graph(EXAMPLES / f"{name}.onnx", options)
    batches = load_batches(graph, None, STEPS)
    reference = run_reference(graph, batches)
    trainable = {v.origin or v.name for v in graph.trainable_params()}
    target = next(op.inputs[1] for op in graph.ops if op.phase.value == "loss")
    data_input = next(v for v in graph.inputs if v is not target)
    losses, params = _torch_run(name, options, trainable, batches.steps, data_input.name, target.name)
    np.testing.assert_allclose(reference.losses, losses, rtol=RTOL)
    assert set(reference.params) == trainable
    for key in trainable:
        np.testing.assert_allclose(reference.params[key], params[key], rtol=RTOL, atol=1e-10, err_msg=key)
    frozen = set(params) - trainable
    for key in frozen:  # frozen parameters keep their initial values
        initial = graph.initial.get(key)
        if initial is not None:
            np.testing.assert_array_equal(params[key], initial.astype(np.float64))


def test_frozen_prefix_emits_no_backward_below_the_trainable_layers() -> None:
    graph = build_training_graph(EXAMPLES / "resnet8.onnx", Options(train="last:1"))
    backward = [op for op in graph.ops if op.phase.value == "backward"]
    assert [kernel_of(op.type, op.attrs)[0] for op in backward] == ["softmax_cross_entropy_grad", "gemm", "reduce_sum",
                                                                     "reshape"]

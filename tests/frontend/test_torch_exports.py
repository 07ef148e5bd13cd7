"""Forms real PyTorch exports take: initializers the TorchScript exporter ties through Identity nodes, and
global average pooling written as a mean. Each is checked against torch itself."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

import tinyodl
from tinyodl.driver.options import Options
from tinyodl.driver.pipeline import build_training_graph
from tinyodl.ir.types import Phase, Role

torch = pytest.importorskip("torch")
nn = torch.nn


def export(model: torch.nn.Module, path: Path, shape: tuple[int, ...], *, dynamo: bool, **kwargs: object) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(*shape),), str(path), input_names=["x"], output_names=["y"],
                          dynamo=dynamo, **kwargs)
    return path


def bn_net() -> torch.nn.Module:
    """Freshly initialised: every batch norm has weight 1, bias 0, running mean 0, running var 1."""
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [nn.Conv2d(1, 4, 3, padding=1)]
    for _ in range(3):
        layers += [nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


@pytest.fixture(scope="module")
def tied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = export(bn_net(), tmp_path_factory.mktemp("tied") / "tied.onnx", (2, 1, 6, 6), dynamo=False,
                  do_constant_folding=False)
    identities = [node for node in onnx.load(str(path)).graph.node if node.op_type == "Identity"]
    assert len(identities) >= 8, "the exporter no longer ties the batch norms' tensors; this test tests nothing"
    return path


def _data(tmp_path: Path, steps: int) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2 * steps, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 5, 2 * steps).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x, target=y)
    return tmp_path / "d.npz", x, y


def test_tied_initializers_are_untied_and_statistics_frozen(tied: Path) -> None:
    graph = build_training_graph(tied, Options())
    by_name = {value.name: value for value in graph.params if value.role is Role.PARAM}
    for layer in ("1", "4", "7"):
        for stat in ("running_mean", "running_var"):
            assert not by_name[f"{layer}.{stat}"].trainable
        assert by_name[f"{layer}.weight"].trainable and by_name[f"{layer}.bias"].trainable
    readers: dict[str, set[str]] = {}
    for op in graph.ops:
        if op.phase is Phase.FORWARD:
            for value in op.inputs:
                readers.setdefault(value.name, set()).add(op.node)
    assert all(len(readers[name]) == 1 for name in by_name), readers
    updated = {op.inputs[0].origin for op in graph.ops if op.phase is Phase.UPDATE}
    assert not any("running" in (name or "") for name in updated)


def test_untied_training_matches_torch(tied: Path, tmp_path: Path) -> None:
    steps = 3
    data, x, y = _data(tmp_path, steps)
    result = tinyodl.simulate(tied, data=data, steps=steps, target="reference", lr=0.1, momentum=0.9)
    assert result.report["shared_params"] == {}
    model = bn_net().eval()  # eval: batch norm uses (and never moves) its running statistics
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        optimizer.zero_grad()
        rows = slice(2 * step, 2 * step + 2)
        loss = nn.functional.cross_entropy(model(torch.from_numpy(x[rows])), torch.from_numpy(y[rows]))
        loss.backward()
        optimizer.step()
        assert result.losses[step] == pytest.approx(loss.item(), rel=1e-4)
    for name, tensor in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        np.testing.assert_allclose(result.params[name], tensor.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_saved_onnx_holds_the_untied_parameters(tied: Path, tmp_path: Path) -> None:
    data, _, _ = _data(tmp_path, 1)
    result = tinyodl.simulate(tied, data=data, target="reference", lr=0.5)
    out = tmp_path / "out.onnx"
    from tinyodl.driver.onnx_io import save_onnx
    save_onnx(tied, out, result.params)
    saved = onnx.load(str(out))
    initializers = {init.name: onnx.numpy_helper.to_array(init) for init in saved.graph.initializer}
    for name in ("4.weight", "4.running_var", "7.bias", "7.running_mean"):
        np.testing.assert_allclose(initializers[name], result.params[name], rtol=1e-6)
    assert initializers["4.weight"].tolist() != initializers["4.running_var"].tolist()
    again = tinyodl.simulate(out, data=data, target="reference", train="none")
    for name, array in result.params.items():
        np.testing.assert_allclose(again.params[name], array, rtol=1e-6, err_msg=name)


class _Pool(nn.Module):
    def __init__(self, mean: bool, keepdim: bool) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv, self.fc = nn.Conv2d(2, 4, 3, padding=1), nn.Linear(4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mean, self.keepdim = mean, keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        pooled = h.mean((2, 3), keepdim=self.keepdim) if self.mean else self.pool(h)
        return self.fc(pooled.flatten(1))


@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("mean, keepdim", [(False, True), (True, True), (True, False)],
                         ids=["adaptive_avg_pool", "mean_keepdim", "mean"])
def test_global_average_pool_as_reduce_mean(tmp_path: Path, dynamo: bool, mean: bool, keepdim: bool) -> None:
    model = _Pool(mean, keepdim)
    path = export(model, tmp_path / "m.onnx", (4, 2, 5, 5), dynamo=dynamo)
    x = np.random.default_rng(0).standard_normal((6, 2, 5, 5)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, target=np.zeros(6, np.int64))
    evaluation = tinyodl.evaluate(path, data=tmp_path / "d.npz")
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(evaluation.outputs, expected, rtol=1e-5, atol=1e-6)
    result = tinyodl.simulate(path, data=tmp_path / "d.npz", target="reference")
    assert np.isfinite(result.losses[0])


class _TiedMean(nn.Module):
    """Two fresh batch norms (tied by the exporter) and a global average pool written as a mean."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))


@pytest.mark.slow
@pytest.mark.qemu
def test_tied_batch_norms_and_mean_pool_on_qemu(tmp_path: Path, toolchain: object) -> None:
    path = export(_TiedMean(), tmp_path / "m.onnx", (2, 1, 6, 6), dynamo=False, do_constant_folding=False)
    assert any(node.op_type == "ReduceMean" for node in onnx.load(str(path)).graph.node)
    result = tinyodl.simulate(path, steps=2, lr=0.1)
    assert result.ok, result.check
    rows = {(layer["name"], layer["op"], layer["phase"]) for layer in result.report["layers"]}
    for bn in ("/body/body.1/BatchNormalization", "/body/body.4/BatchNormalization"):
        assert (bn, "sgd_update", "update") in rows, sorted(rows)
    assert not any(op == "add" and phase == "backward" for _, op, phase in rows), sorted(rows)
    assert any("global_avgpool" in op and phase == "forward" for _, op, phase in rows), sorted(rows)
    for name in ("body.1.running_var", "body.4.running_var", "body.4.running_mean"):
        np.testing.assert_array_equal(result.params[name], _TiedMean().state_dict()[name].numpy())

"""PyTorch reference definitions of the example models shipped with tinyodl.

This file is deliberately self-contained (it only imports torch) so that tests
and scripts can load it by path with ``importlib`` without installing anything.

Use :func:`build` to obtain a deterministically initialised model::

    module, input_shapes = build("resnet8")   # input_shapes == {"input": (1, 3, 32, 32)}

Every model takes a single input tensor (batch 1) and returns logits.
Parameter names (``state_dict()`` keys) are chosen to be short and readable
because they become the ONNX initializer names of the exported files.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["MODEL_NAMES", "SEEDS", "build", "count_parameters", "used_state_dict_keys"]


def _bn(channels: int) -> nn.BatchNorm2d:
    # Keras defaults (the MLPerf Tiny reference models are Keras models).
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class ResidualStack(nn.Module):
    """One ResNet8 stack: two 3x3 convolutions with BN, plus identity or 1x1 conv shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)
        self.bn1 = _bn(out_ch)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1)
        self.bn2 = _bn(out_ch)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, padding=0)
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + self.shortcut(x))


class ResNet8(nn.Module):
    """MLPerf Tiny image-classification ResNet8 (CIFAR-10, 3x32x32 -> 10)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1)
        self.bn1 = _bn(16)
        self.relu = nn.ReLU()
        self.stack1 = ResidualStack(16, 16, stride=1)
        self.stack2 = ResidualStack(16, 32, stride=2)
        self.stack3 = ResidualStack(32, 64, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.stack3(self.stack2(self.stack1(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


class DSBlock(nn.Module):
    """Depthwise-separable block: depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 3, stride=1, padding=1, groups=channels)
        self.dw_bn = _bn(channels)
        self.dw_relu = nn.ReLU()
        self.pw = nn.Conv2d(channels, channels, 1)
        self.pw_bn = _bn(channels)
        self.pw_relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw_relu(self.dw_bn(self.dw(x)))
        return self.pw_relu(self.pw_bn(self.pw(x)))


class DSCNN(nn.Module):
    """MLPerf Tiny keyword-spotting DS-CNN (1x49x10 MFCC -> 12 classes).

    The first convolution uses TensorFlow ``padding='same'`` with kernel (10, 4) and
    stride (2, 2) on a 49x10 input, which is asymmetric: top 4, bottom 5, left 1,
    right 1.  PyTorch expresses this with an explicit ``ZeroPad2d``; the ONNX export
    folds it into the Conv ``pads`` attribute.
    """

    def __init__(self, num_classes: int = 12, channels: int = 64, blocks: int = 4) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((1, 1, 4, 5))  # (left, right, top, bottom)
        self.conv1 = nn.Conv2d(1, channels, (10, 4), stride=(2, 2), padding=0)
        self.bn1 = _bn(channels)
        self.relu = nn.ReLU()
        self.blocks = nn.Sequential(*[DSBlock(channels) for _ in range(blocks)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(self.pad(x))))
        x = self.blocks(x)
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


class LeNet(nn.Module):
    """LeNet-5 style CNN on 1x28x28 (MNIST-sized) inputs."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.sigmoid = nn.Sigmoid()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.relu3(self.fc1(x))
        x = self.sigmoid(self.fc2(x))
        return self.fc3(x)


class MLP(nn.Module):
    """Small MLP exercising Gemm, Relu, LeakyRelu and Clip (ReLU6)."""

    def __init__(self, in_features: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, 32)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(32, 16)
        self.leaky = nn.LeakyReLU(0.1)
        self.fc3 = nn.Linear(16, 16)
        self.relu6 = nn.ReLU6()
        self.fc4 = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(x))
        x = self.leaky(self.fc2(x))
        x = self.relu6(self.fc3(x))
        return self.fc4(x)


_FACTORIES: dict[str, tuple[Callable[[], nn.Module], dict[str, tuple[int, ...]]]] = {
    "resnet8": (ResNet8, {"input": (1, 3, 32, 32)}),
    "dscnn": (DSCNN, {"input": (1, 1, 49, 10)}),
    "lenet": (LeNet, {"input": (1, 1, 28, 28)}),
    "mlp": (MLP, {"input": (1, 64)}),
}

MODEL_NAMES: tuple[str, ...] = tuple(_FACTORIES)

# One fixed seed per model: weights are a pure function of the model name.
SEEDS: dict[str, int] = {"resnet8": 8, "dscnn": 12, "lenet": 5, "mlp": 64}


def _randomise_batchnorm(module: nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                assert m.weight is not None and m.bias is not None
                assert m.running_mean is not None and m.running_var is not None
                m.weight.copy_(torch.empty(n).uniform_(0.5, 1.5, generator=gen))
                m.bias.copy_(torch.empty(n).normal_(0.0, 0.1, generator=gen))
                m.running_mean.copy_(torch.empty(n).normal_(0.0, 0.1, generator=gen))
                m.running_var.copy_(torch.empty(n).uniform_(0.5, 1.5, generator=gen))


def build(name: str) -> tuple[nn.Module, dict[str, tuple[int, ...]]]:
    """Construct model ``name`` with deterministic weights, in eval mode.

    Returns ``(module, input_shapes)`` where ``input_shapes`` maps the graph input
    name (always ``"input"``) to its static shape (batch 1).
    """
    if name not in _FACTORIES:
        raise KeyError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    factory, shapes = _FACTORIES[name]
    torch.manual_seed(SEEDS[name])
    module = factory()
    _randomise_batchnorm(module, SEEDS[name] + 1000)
    module.eval()
    return module, dict(shapes)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in module.parameters())


def used_state_dict_keys(module: nn.Module) -> list[str]:
    """``state_dict()`` keys that an eval-mode export uses, in state_dict order.

    BatchNorm's ``num_batches_tracked`` counter only matters in training mode (for
    the cumulative moving average) and never appears in an inference graph.
    """
    return [k for k in module.state_dict() if not k.endswith("num_batches_tracked")]


if __name__ == "__main__":
    for _name in MODEL_NAMES:
        _m, _shapes = build(_name)
        print(f"{_name:8s} params={count_parameters(_m):6d} inputs={_shapes}")

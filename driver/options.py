"""The options every command shares, one typed dataclass for the Python API and the CLI alike."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from tinyodl.ir.target import TARGETS, Target


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


# What is implemented today; the CLI offers exactly these choices and the API accepts exactly these values.
LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("sgd", "adam", "adamw")
DTYPES = ("fp32", "fp16", "bf16", "mixed")
LAYOUTS = ("chw",)
MAX_CORES = 8  # the runtime's team and the simulated machine hold at most 8 compute harts (plus the DMA hart)


@dataclass
class Options:
    """Training and platform options. `cores`, `l1_bytes` and `l2_bytes` left at None take the platform's
    value; `Options.target()` resolves them."""

    loss: str = "cross_entropy"
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch: int | None = None
    train: str = "all"
    dtype: str = "fp32"
    # Per-node dtypes ("NODE=fp16", ...; a mapping node -> dtype is taken too) and loss scaling (see
    # driver/precision.py): "default" is dynamic in mixed and none otherwise.
    precision: tuple[str, ...] = ()
    loss_scale: str = "default"
    loss_scale_init: float = 65536.0
    loss_scale_growth: float = 2.0
    loss_scale_backoff: float = 0.5
    loss_scale_interval: int = 2000
    layout: str = "chw"
    fold_bn: bool = False
    platform: str = "pulp8"
    cores: int | None = None
    l1_bytes: int | None = None
    l2_bytes: int | None = None
    tiling: bool = True
    dma_check: bool = False  # poison DMA destinations until the wait (a missing wait then fails the check)

    def __post_init__(self) -> None:
        if isinstance(self.precision, dict):
            self.precision = tuple(f"{node}={dtype}" for node, dtype in self.precision.items())
        elif isinstance(self.precision, str):
            self.precision = (self.precision,)
        else:
            self.precision = tuple(self.precision)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Options:
        """Options from keyword arguments (the API's): an unknown name is a TypeError that names it, a bad
        value a UserError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown option {unknown[0]!r} (options: {', '.join(sorted(known))})")
        options = cls(**kwargs)
        options.check()
        return options

    def target(self) -> Target:
        """The platform these options describe, with the user's core count and memory budgets."""
        platform = TARGETS.get(self.platform)
        if platform is None:
            raise UserError(f"--platform {self.platform}: no such platform ({', '.join(sorted(TARGETS))})")
        return platform.with_budget(cores=self.cores, l1_bytes=self.l1_bytes, l2_bytes=self.l2_bytes)

    def check(self) -> None:
        for option, value, allowed in (("--loss", self.loss, LOSSES), ("--optimizer", self.optimizer, OPTIMIZERS),
                                       ("--dtype", self.dtype, DTYPES), ("--layout", self.layout, LAYOUTS)):
            if value not in allowed:
                raise UserError(f"{option} {value}: not implemented (choose from {', '.join(allowed)})")
        if self.batch is not None and self.batch < 1:
            raise UserError(f"--batch must be >= 1, got {self.batch}")
        target = self.target()
        if not 1 <= target.cores <= MAX_CORES:
            raise UserError(f"--cores must be between 1 and {MAX_CORES}, got {target.cores}")
        self._check_hyperparameters()
        from tinyodl.driver.precision import check_options  # it builds on this module's UserError

        check_options(self)

    def _check_hyperparameters(self) -> None:
        """The ranges PyTorch's optimizers accept (a NaN fails every comparison, so it is caught too)."""
        if not 0 < self.lr < math.inf:
            raise UserError(f"--lr must be a finite number > 0, got {self.lr}")
        for option, value in (("--momentum", self.momentum), ("--weight-decay", self.weight_decay),
                              ("--eps", self.eps)):
            if not 0 <= value < math.inf:
                raise UserError(f"{option} must be a finite number >= 0, got {value}")
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise UserError(f"--betas must be two numbers in [0, 1), got {self.betas}")
        if not any(part.strip() for part in self.train.split(",")):
            raise UserError("--train is empty (all, none, bias, last:N or initializer names)")

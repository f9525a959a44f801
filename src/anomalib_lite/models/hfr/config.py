"""HFR's configuration: :class:`HFRConfig`, its hyper-parameters and their checks."""

from __future__ import annotations

from dataclasses import dataclass

LR_SCHEDULES = ("constant", "cosine")


@dataclass
class HFRConfig:
    """HFR hyper-parameters (paper defaults, each labelled in ``configs/model/hfr.yaml``).

    Attributes:
        epochs: training epochs (choice: the paper gives none). lr, momentum, weight_decay: SGD (paper L55).
        lr_schedule: ``constant`` (default, choice: the paper's "initial learning rate 0.4" implies a
            schedule it never gives) or ``cosine`` (decay to 0 over the stage's steps, an option).
        conv_blocks: conv → BN → LeakyReLU blocks per decoder level.
        kernel_size: their kernel size (the paper does not print it; 3 is our choice).
        leaky_slope: LeakyReLU slope.
        sigma: Gaussian filter of the anomaly map, in pixels.
        offline_backbone: when set, ``train.py`` uses this backbone where the configured one's
            weights are not in the torch cache (``None``: such a backbone is an error).
    """

    name: str = "hfr"
    epochs: int = 200
    lr: float = 0.4
    lr_schedule: str = "constant"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    conv_blocks: int = 3
    kernel_size: int = 3
    leaky_slope: float = 0.1
    sigma: float = 4.0
    offline_backbone: str | None = None

    def __post_init__(self) -> None:
        for key in ("epochs", "conv_blocks", "kernel_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key}={getattr(self, key)} must be ≥ 1")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"model.kernel_size={self.kernel_size} must be odd")
        if self.lr <= 0:
            raise ValueError(f"model.lr={self.lr} must be > 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"model.lr_schedule={self.lr_schedule!r}; choices: {', '.join(LR_SCHEDULES)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"model.momentum={self.momentum} must be in [0, 1)")
        for key in ("weight_decay", "leaky_slope", "sigma"):
            if getattr(self, key) < 0:
                raise ValueError(f"model.{key}={getattr(self, key)} must be ≥ 0")

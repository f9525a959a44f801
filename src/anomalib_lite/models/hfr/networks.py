"""HFR's networks: the decoder levels that reconstruct the frozen encoder's features."""

from __future__ import annotations

from torch import nn

from anomalib_lite.models.hfr.config import HFRConfig


def decoder_level(in_channels: int, channels: int, cfg: HFRConfig) -> nn.Sequential:
    """``conv_blocks`` × (conv k×k → BN → LeakyReLU) then a 1×1 conv: ``B×in×h×w → B×channels×h×w``."""
    layers: list[nn.Module] = []
    for i in range(cfg.conv_blocks):
        conv_in = in_channels if i == 0 else channels
        layers += [
            nn.Conv2d(conv_in, channels, cfg.kernel_size, padding=cfg.kernel_size // 2, bias=False),
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(cfg.leaky_slope),
        ]
    layers.append(nn.Conv2d(channels, channels, 1))
    return nn.Sequential(*layers)

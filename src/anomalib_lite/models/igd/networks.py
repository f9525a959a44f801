"""IGD's networks: residual encoder/decoder, the ACAI critic, and the frozen-backbone global encoder.

Channel widths are ``width·(1, 2, 4, 8)`` (the reference code's 64→512 for ``width=64``),
capped at ``8·width`` for the deeper 256×256 global decoder and critic.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from anomalib_lite.models.backbones import Backbone

BOTTOM = 4  # side of the smallest feature map: 4×4 for every input size


def _norm(kind: str, channels: int) -> nn.Module:
    # GroupNorm with one group normalises over C×H×W: layer normalisation for conv features.
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(1, channels)


class ResidualBlock(nn.Module):
    """Pre-activation residual block that halves (``down``, mean-pool) or doubles (``up``, nearest) the side.

    ``B×C_in×H×W`` → ``B×C_out×H/2×W/2`` (down) or ``B×C_out×2H×2W`` (up).
    """

    def __init__(self, c_in: int, c_out: int, resample: str, norm: str = "batch") -> None:
        super().__init__()
        scale = nn.AvgPool2d(2) if resample == "down" else nn.Upsample(scale_factor=2, mode="nearest")
        before, after = (nn.Identity(), scale) if resample == "down" else (scale, nn.Identity())
        self.body = nn.Sequential(
            _norm(norm, c_in),
            nn.ReLU(),
            before,
            nn.Conv2d(c_in, c_out, 3, padding=1),
            _norm(norm, c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            after,
        )
        self.shortcut = nn.Sequential(before, nn.Conv2d(c_in, c_out, 1), after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


def _widths(size: int, width: int) -> list[int]:
    """Channels at each side from ``size`` down to 4: ``width`` at the top, doubling, capped at ``8·width``."""
    steps = int(math.log2(size // BOTTOM))
    if BOTTOM * 2**steps != size:
        raise ValueError(f"IGD needs an input side of 4·2^k (32, 64, …, 256), got {size}")
    return [min(width * 2**i, 8 * width) for i in range(steps + 1)]


class DownPath(nn.Module):
    """conv3(3→w) then residual down blocks to 4×4: ``B×3×S×S`` → flat ``B×(C·16)``."""

    def __init__(self, size: int, width: int, norm: str) -> None:
        super().__init__()
        widths = _widths(size, width)
        blocks = [ResidualBlock(a, b, "down", norm) for a, b in zip(widths[:-1], widths[1:])]
        self.net = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1), *blocks, nn.Flatten())
        self.features = widths[-1] * BOTTOM * BOTTOM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LocalEncoder(nn.Module):
    """``B×3×S×S`` → ``(h B×hidden, z B×latent)``: the down path, linear to ``hidden`` (the 512-d
    feature distilled from ImageNet), linear to the latent code."""

    def __init__(self, size: int, width: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.down = DownPath(size, width, "batch")
        self.to_hidden = nn.Linear(self.down.features, hidden)
        self.to_latent = nn.Linear(hidden, latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.to_hidden(self.down(x))
        return hidden, self.to_latent(hidden)


class GlobalEncoder(nn.Module):
    """``B×3×S×S`` (ImageNet-normalised) → ``(h, z)``: a frozen backbone's pooled deepest stage
    ``h B×C``, then a trained linear map to the latent code ``z B×latent``."""

    def __init__(self, backbone: Backbone, latent: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.to_latent = nn.Linear(backbone.channels[0], latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.backbone(x)[0].mean(dim=(2, 3))
        return hidden, self.to_latent(hidden)


class Decoder(nn.Module):
    """``B×latent`` → ``B×3×S×S``: linear to 4×4 maps, residual up blocks, BN, ReLU, conv3; no output activation."""

    def __init__(self, size: int, width: int, latent: int) -> None:
        super().__init__()
        widths = _widths(size, width)[::-1]
        self.start = widths[0]
        self.fc = nn.Linear(latent, widths[0] * BOTTOM * BOTTOM)
        blocks = [ResidualBlock(a, b, "up") for a, b in zip(widths[:-1], widths[1:])]
        self.net = nn.Sequential(*blocks, nn.BatchNorm2d(widths[-1]), nn.ReLU(), nn.Conv2d(widths[-1], 3, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, self.start, BOTTOM, BOTTOM))


class Critic(nn.Module):
    """ACAI critic: ``B×3×S×S`` → ``B`` in (0, 1), the estimated interpolation coefficient (layer norm)."""

    def __init__(self, size: int, width: int) -> None:
        super().__init__()
        self.down = DownPath(size, width, "layer")
        self.out = nn.Linear(self.down.features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.down(x)))[:, 0]

"""UTAD's networks: the IE-Net (inception autoencoder with a Gaussian latent and a
mutual-information discriminator) and the Expert-Net (content and detail encoders, AdaIN decoder).

Images are in [0, 1] for the IE-Net and in [−1, 1] for the Expert-Net (its decoder ends in tanh).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_act(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1)
    )


class InceptionBlock(nn.Module):
    """Four branches, 1×1 | 3×3 | 5×5 | maxpool3 → 1×1, concatenated: ``B×C_in×H×W`` → ``B×4f×H×W``."""

    def __init__(self, c_in: int, f: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [
                _conv_bn_act(c_in, f, 1),
                _conv_bn_act(c_in, f, 3),
                _conv_bn_act(c_in, f, 5),
                nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), _conv_bn_act(c_in, f, 1)),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


# (inception width f, pooling after it): the paper's encoder (ref-code widths); small images drop the last block.
ENCODER_PLAN = [(32, 4), (32, 2), (64, 2), (128, 2)]
# (inception width f, nearest upsampling after it): the ref-code decoder (inceptionCAE.py: widths 128, 64, 64, 32,
# upsampling 2, 4, 2, 2); the paper gives neither. Small images drop the first block.
DECODER_PLAN = [(128, 2), (64, 4), (64, 2), (32, 2)]
LOG_VAR_BOUND = 10.0  # choice: |log σ²| ≤ 10, so exp() stays finite (and bf16-safe) whatever the head outputs
LATENT_HEADS = ("paper", "ref")


class IENet(nn.Module):
    """Impression extractor: ``B×3×S×S`` in [0, 1] → impression ``B×3×S×S`` in (0, 1).

    Args:
        size: input side (256 on MVTec AD; 64 for the small-image variant).
        small: one inception block fewer in the encoder and the decoder (paper, small images).
        latent: size of the Gaussian code ``z``.
        head: ``paper``: μ and log σ² from "a stack of three fully connected layers" (UTAD §4.1) on the
            pooled encoder feature, and the decoder reconstructs from ``z`` (a linear layer back to the
            bottom map, choice); ``ref``: the reference code's variant, where the decoder reads the encoder's
            bottom map and the latent (one linear layer each for μ and log σ² on the pooled feature) is a
            side branch used only by the KL and MI terms.
        mlp_hidden: width of the paper head's hidden layers (choice: the paper gives none).
    """

    def __init__(self, size: int, small: bool = False, latent: int = 128, head: str = "paper", mlp_hidden: int = 512):
        super().__init__()
        if head not in LATENT_HEADS:
            raise ValueError(f"model.latent_head={head!r}; choices: {', '.join(LATENT_HEADS)}")
        self.head = head
        plan = ENCODER_PLAN[:-1] if small else ENCODER_PLAN
        layers: list[nn.Module] = []
        channels = 3
        for f, pool in plan:
            layers += [InceptionBlock(channels, f), nn.MaxPool2d(pool)]
            channels = 4 * f
        self.encoder = nn.Sequential(*layers)
        reduction = 1
        for _, pool in plan:
            reduction *= pool
        if size % reduction:
            raise ValueError(f"UTAD's IE-Net needs an input side divisible by {reduction}, got {size}")
        self.bottom = (channels, size // reduction)
        if head == "paper":
            self.mlp = nn.Sequential(
                nn.Linear(channels, mlp_hidden),
                nn.LeakyReLU(0.1),
                nn.Linear(mlp_hidden, mlp_hidden),
                nn.LeakyReLU(0.1),
                nn.Linear(mlp_hidden, 2 * latent),
            )
            self.expand = nn.Linear(latent, channels * (size // reduction) ** 2)
        else:
            self.mlp = nn.Linear(channels, 2 * latent)
            self.expand = None
        decoder: list[nn.Module] = []
        for f, scale in DECODER_PLAN[1:] if small else DECODER_PLAN:
            decoder += [InceptionBlock(channels, f), nn.Upsample(scale_factor=scale, mode="nearest")]
            channels = 4 * f
        self.decoder = nn.Sequential(*decoder, nn.Conv2d(channels, 3, 1, bias=False), nn.Sigmoid())  # ref-code: no bias
        self.feature_size = self.bottom[0]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(μ, log σ², bottom map)``: the code's Gaussian ``B×latent`` twice (log σ² within ±10) and the
        encoder's ``B×C×s×s`` map."""
        h = self.encoder(x)
        mu, log_var = self.mlp(h.mean(dim=(2, 3))).chunk(2, dim=1)
        return mu, log_var.clamp(-LOG_VAR_BOUND, LOG_VAR_BOUND), h

    def decode(self, z: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        """Impression ``B×3×S×S`` from the code ``z`` ``B×latent`` (paper head) or the bottom map (ref head)."""
        if self.expand is None:
            return self.decoder(bottom)
        channels, side = self.bottom
        return self.decoder(self.expand(z).view(-1, channels, side, side))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The impression of ``x`` from its code's mean (no sampling): ``B×3×S×S`` → ``B×3×S×S``."""
        mu, _, h = self.encode(x)
        return self.decode(mu, h)


class MIDiscriminator(nn.Module):
    """Scores whether a code and an encoder feature come from the same image: 4-layer MLP (paper §4.1; hidden
    width 128 as the ref-code's ``LatentDiscriminaor``) → ``B`` logits.

    The paper's sigmoid is applied by the loss (``binary_cross_entropy_with_logits``),
    which is the same function, computed stably.
    """

    def __init__(self, latent: int, feature: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent + feature, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, 1),
        )

    def forward(self, z: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, feature], dim=1))[:, 0]


def shuffled_partners(batch: int, generator: torch.Generator | None = None, device: torch.device | None = None):
    """A random permutation of ``range(batch)`` with no fixed point (a random non-zero cyclic shift),
    so every negative pair joins a code with **another** image's feature. ``batch`` ≥ 2."""
    if batch < 2:
        raise ValueError("negative pairs need a batch of at least 2 images")
    shift = int(torch.randint(1, batch, (1,), generator=generator))
    return (torch.arange(batch, device=device) + shift) % batch


def adain(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance normalisation: ``γ · (x − μ(x)) / σ(x) + β`` per sample and channel.

    Args:
        x: ``B×C×H×W``. gamma, beta: ``B×C``.
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = (x.var(dim=(2, 3), keepdim=True, unbiased=False) + eps).sqrt()
    return gamma[:, :, None, None] * (x - mean) / std + beta[:, :, None, None]


class ResidualBlock(nn.Module):
    """Two conv3 with InstanceNorm, or AdaIN when ``adaptive``, and a skip: ``B×C×H×W`` → same."""

    def __init__(self, channels: int, adaptive: bool = False) -> None:
        super().__init__()
        self.adaptive = adaptive
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.InstanceNorm2d(channels, affine=False)

    @property
    def n_params(self) -> int:
        """AdaIN parameters the block takes: γ and β for each of its two convolutions."""
        return 4 * self.conv1.out_channels

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """``params`` (``B×n_params``: γ₁, β₁, γ₂, β₂) drive the AdaIN of an adaptive block."""
        if self.adaptive:
            gamma1, beta1, gamma2, beta2 = params.chunk(4, dim=1)
            h = F.relu(adain(self.conv1(x), gamma1, beta1))
            return x + adain(self.conv2(h), gamma2, beta2)
        return x + self.norm(self.conv2(F.relu(self.norm(self.conv1(x)))))


class ContentEncoder(nn.Module):
    """conv7(→64) → conv4 s2(→128) → conv4 s2(→256) → ``blocks`` residual blocks (paper: 2, and 1 on
    small images): ``B×3×S×S`` → ``B×256×S/4×S/4``."""

    def __init__(self, blocks: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 64, 7, padding=3),
            nn.InstanceNorm2d(64),
            nn.ReLU(),
            nn.Conv2d(64, 128, 4, stride=2, padding=1),
            nn.InstanceNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 256, 4, stride=2, padding=1),
            nn.InstanceNorm2d(256),
            nn.ReLU(),
            *(ResidualBlock(256) for _ in range(blocks)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DetailEncoder(nn.Module):
    """conv7 → ``convs − 1`` × conv4 s2 → global average pool → conv1×1: ``B×3×S×S`` → detail code ``B×dim``.

    ``convs``: 3 in the paper (§4.1 "3 convolutional layers"), 5 in the reference code (MUNIT's style encoder).
    """

    def __init__(self, dim: int = 8, convs: int = 3) -> None:
        super().__init__()
        widths = [64, 128, 256, 256, 256][:convs]
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 7, padding=3), nn.ReLU()]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Conv2d(widths[-1], dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class Decoder(nn.Module):
    """``blocks`` residual blocks (paper: 2, and 1 on small images; AdaIN when ``detail`` codes drive them)
    → 2 × (↑2, conv5, LayerNorm, ReLU) → conv7 → tanh.

    ``B×256×S/4×S/4`` (and a detail code ``B×dim``) → ``B×3×S×S`` in [−1, 1].
    """

    def __init__(self, detail_dim: int | None = 8, blocks: int = 2) -> None:
        super().__init__()
        adaptive = detail_dim is not None
        self.blocks = nn.ModuleList([ResidualBlock(256, adaptive) for _ in range(blocks)])
        up: list[nn.Module] = []
        for a, b in ((256, 128), (128, 64)):
            up += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(a, b, 5, padding=2),
                nn.GroupNorm(1, b),
                nn.ReLU(),
            ]
        self.up = nn.Sequential(*up, nn.Conv2d(64, 3, 7, padding=3), nn.Tanh())
        self.mlp = None
        if adaptive:
            total = sum(block.n_params for block in self.blocks)
            self.mlp = nn.Sequential(
                nn.Linear(detail_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, total)
            )

    def forward(self, content: torch.Tensor, detail: torch.Tensor | None = None) -> torch.Tensor:
        sizes = [block.n_params for block in self.blocks]
        params = self.mlp(detail).split(sizes, dim=1) if self.mlp is not None else [None] * len(self.blocks)
        x = content
        for block, p in zip(self.blocks, params):
            x = block(x, p)
        return self.up(x)

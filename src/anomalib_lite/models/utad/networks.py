"""UTAD's networks: the IE-Net (inception autoencoder with a Gaussian latent and a
mutual-information discriminator) and the Expert-Net (content and detail encoders, AdaIN decoder).

Images are in [0, 1] for the IE-Net and in [−1, 1] for the Expert-Net (its decoder ends in tanh): ref-code
(IE-Net: ``ToTensor``, ``IE-Net/ie_net/data_loader.py`` L37, and a sigmoid output, ``inceptionCAE.py`` L50, which
paper L102 also names; Expert-Net: ``Normalize((0.5,)*3, (0.5,)*3)``, ``Expert-Net/utils.py`` L43-45, and tanh,
``Expert-Net/networks.py`` L204); the paper gives no range.

Sources (``utad.txt L<n>``: the paper; ``ref-code``: github.com/DreamtaleCore/UTAD, ``IE-Net/ie_net/model/``
and ``Expert-Net/networks.py``), and where ours departs (*choice*), beside each layer below. Applying to every
Expert-Net layer (choice): zero padding (ref-code ``pad_type: reflect``, ``Expert-Net/configs/mvtec_ad.yaml`` L41)
and PyTorch's default initialisation (ref-code ``init: kaiming``, same file L22); the paper names neither.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_act(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    """Conv (no bias) → BatchNorm → LeakyReLU(0.1), as the ref-code's inception branches (``inceptionCAE.py``
    L111-130), except BatchNorm's eps: PyTorch's 1e-5 (choice; ref-code 1e-3)."""
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


# (inception width f, max-pooling after it). 4 blocks, each followed by a max-pooling: paper L102, which gives no
# widths or pooling factors; the widths 32, 32, 64, 128 and the factors 4, 2, 2, 2 (/32: 8×8 at 256 px) are
# ref-code (inceptionCAE.py L28-37). Small images drop the last block (choice: paper L113 says only "we reduce the
# number of inception blocks to 3 in IE-Net", read as 3 in the encoder and 3 in the decoder, out of L102's 4 + 4:
# our reading; the ref-code has no small network).
ENCODER_PLAN = [(32, 4), (32, 2), (64, 2), (128, 2)]
# (inception width f, nearest upsampling after it): ref-code (inceptionCAE.py L40-51: widths 128, 64, 64, 32,
# upsampling 2, 4, 2, 2). Paper L102: 4 inception blocks "with a 2 nearest up-sample layer", i.e. ×2 each, which
# the ref-code's ×4 step departs from (it undoes the encoder's first /4); the paper gives no widths. Small images
# drop the first block (choice, as for the encoder).
DECODER_PLAN = [(128, 2), (64, 4), (64, 2), (32, 2)]
LOG_VAR_BOUND = 10.0  # choice: |log σ²| ≤ 10, so exp() stays finite (and bf16-safe) whatever the head outputs
LATENT_HEADS = ("paper", "ref")


class IENet(nn.Module):
    """Impression extractor: ``B×3×S×S`` in [0, 1] → impression ``B×3×S×S`` in (0, 1).

    Args:
        size: input side (256 on MVTec AD; 64 for the small-image variant).
        small: one inception block fewer in the encoder and the decoder (paper, small images).
        latent: size of the Gaussian code ``z``.
        head: ``paper``: μ and log σ² (paper L48: μ and σ, "the mean and variance"; log σ² as the ref-code's
            ``log_var``, ``inceptionCAE.py`` L61, L70) from "a stack of three fully connected layers" (L48, L102) on
            the bottom map's spatial mean (choice: the paper does not say how the map reaches the MLP), with
            LeakyReLU(0.1) between them (choice: the paper names no activation), and the decoder reconstructs
            from ``z`` (paper L42, L51: it "tries to project latent code into RGB-space"), through a linear layer
            back to the bottom map (choice). ``ref``: the ref-code's layout
            (``inceptionCAE.py`` L54-70): the decoder reads the encoder's bottom map, and the latent is a side
            branch used only by the KL and MI terms: 2×2 max-pooling (8×8 → 4×4 at 256 px), conv3 C→64, ReLU,
            conv3 64→C, average pooling over the whole map, then a linear layer each for μ and log σ² (one
            ``Linear(C, 2·latent)`` here, the same parameters). The ref-code pools with ``AvgPool2d(4)`` on its
            4×4 map and has no other size; here the pooling is global and the max-pooling rounds up
            (``ceil_mode``), so that every size and the small network work (the same result at 256 px).
        mlp_hidden: width of the paper head's hidden layers (choice: the paper gives none).
        initial_log_var: the bias of the head's log σ² outputs at initialisation (choice: neither the paper nor the
            ref-code gives one; ``None`` keeps PyTorch's default, a bias near 0, so σ ≈ 1 at the start).
    """

    def __init__(
        self,
        size: int,
        small: bool = False,
        latent: int = 128,
        head: str = "paper",
        mlp_hidden: int = 512,
        initial_log_var: float | None = None,
    ) -> None:
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
            self.branch = None
        else:
            self.branch = nn.Sequential(
                nn.MaxPool2d(2, ceil_mode=True),
                nn.Conv2d(channels, 64, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(64, channels, 3, padding=1),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
            self.mlp = nn.Linear(channels, 2 * latent)
            self.expand = None
        decoder: list[nn.Module] = []
        for f, scale in DECODER_PLAN[1:] if small else DECODER_PLAN:
            decoder += [InceptionBlock(channels, f), nn.Upsample(scale_factor=scale, mode="nearest")]
            channels = 4 * f
        self.decoder = nn.Sequential(*decoder, nn.Conv2d(channels, 3, 1, bias=False), nn.Sigmoid())  # ref-code: no bias
        self.feature_size = self.bottom[0]
        if initial_log_var is not None:
            last = self.mlp[-1] if isinstance(self.mlp, nn.Sequential) else self.mlp
            nn.init.constant_(last.bias[latent:], initial_log_var)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(μ, log σ², bottom map)``: the code's Gaussian ``B×latent`` twice (log σ² within ±10) and the
        encoder's ``B×C×s×s`` map."""
        h = self.encoder(x)
        pooled = h.mean(dim=(2, 3)) if self.branch is None else self.branch(h)
        mu, log_var = self.mlp(pooled).chunk(2, dim=1)
        return mu, log_var.clamp(-LOG_VAR_BOUND, LOG_VAR_BOUND), h

    def decode(self, z: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        """Impression ``B×3×S×S`` from the code ``z`` ``B×latent`` (paper head) or the bottom map (ref head)."""
        if self.expand is None:
            return self.decoder(bottom)
        channels, side = self.bottom
        return self.decoder(self.expand(z).view(-1, channels, side, side))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The impression of ``x`` from its code's mean (no sampling; choice, the paper does not say; with the ref
        head the code does not reach the decoder): ``B×3×S×S`` → ``B×3×S×S``."""
        mu, _, h = self.encode(x)
        return self.decode(mu, h)


class MIDiscriminator(nn.Module):
    """Scores whether a code and an encoder feature come from the same image: 4-layer MLP (utad.txt L102; hidden
    width 128 as the ref-code's ``LatentDiscriminaor``, ``discriminator.py`` L7-21) → ``B`` logits.

    Its input is the code ⊕ the bottom map's spatial mean: one global term (choice; the ref-code flattens the code
    tiled over a feature map ⊕ that map, ``discriminator.py`` L13, L25-33, with a local and a global term,
    ``IE-Net/configs/mvtec.yaml`` L35-36). Hidden activations LeakyReLU(0.1) (choice; the paper names none, the
    ref-code uses ReLU). The paper's sigmoid is applied by the loss (``binary_cross_entropy_with_logits``),
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


def shuffled_partners(
    batch: int, generator: torch.Generator | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """A random permutation of ``range(batch)`` with no fixed point (a random non-zero cyclic shift),
    so every negative pair joins a code with **another** image's feature. ``batch`` ≥ 2.

    Choice: the paper's negatives are "batch-shuffled" (utad.txt L48) and the ref-code's ``random.shuffle``
    (``discriminator.py`` L28-30) is any permutation, which may leave an image paired with itself (a "negative"
    that is a positive pair); a cyclic shift never does, but draws from only ``batch − 1`` of the permutations.
    """
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
    """Two conv3 with InstanceNorm, or AdaIN when ``adaptive``, and a skip: ``B×C×H×W`` → same (MUNIT's
    ``ResBlock``, ref-code ``Expert-Net/networks.py`` L241-254: ReLU after the first norm only)."""

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


def expert_width(downsample: int) -> int:
    """Channels of the Expert-Net's content code: 64 doubled by each of ``downsample`` strided convs (MUNIT's
    ``Encoder``, ref-code ``Expert-Net/networks.py`` L174-186, ``dim: 64``)."""
    return 64 * 2**downsample


class ContentEncoder(nn.Module):
    """conv7(→64) → ``downsample`` × conv4 s2 (doubling the width) → ``blocks`` residual blocks, each conv followed
    by InstanceNorm and ReLU (MUNIT's ``Encoder``, ref-code ``Expert-Net/networks.py`` L174-186):
    ``B×3×S×S`` → ``B×C×S/2^d×S/2^d`` with ``C = 64·2^d`` (:func:`expert_width`).

    ``blocks``: paper 2, and 1 on small images (utad.txt L105, L113). ``downsample``: 2 in the ref-code
    (``n_downsample: 2``, ``mvtec_ad.yaml`` L39: 3 conv blocks, 256 channels at S/4); the paper's "4 convolutional
    blocks" (L105) are 3 (512 channels at S/8).
    """

    def __init__(self, blocks: int = 2, downsample: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, padding=3), nn.InstanceNorm2d(64), nn.ReLU()]
        width = 64
        for _ in range(downsample):
            layers += [nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.InstanceNorm2d(2 * width), nn.ReLU()]
            width *= 2
        self.net = nn.Sequential(*layers, *(ResidualBlock(width) for _ in range(blocks)))
        self.channels = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DetailEncoder(nn.Module):
    """conv7 → ``convs − 1`` × conv4 s2 → global average pool → conv1×1: ``B×3×S×S`` → detail code ``B×dim``.

    ``convs``: 3 in the paper (utad.txt L105 "3 convolutional layers and follows an adaptive average pooling
    layer"), 5 in the ref-code (``DetailEncoder(4, …)``, ``Expert-Net/networks.py`` L104, L156-169: MUNIT's style
    encoder). Widths 64, 128, 256, 256, 256, ReLU and no norm: ref-code. The 1×1 conv after the pooling, which maps
    the pooled feature to the code, is ref-code (L167); the paper names nothing after the pooling.
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
    """``blocks`` residual blocks (AdaIN when ``detail`` codes drive them) → ``downsample`` × (↑2 nearest, conv5
    halving the width, layer norm, ReLU) → conv7 → tanh (MUNIT's ``Decoder``, ref-code ``Expert-Net/networks.py``
    L191-208; the AdaIN parameters from an MLP ``detail_dim → 256 → 256 → γ, β``, its ``MLP(…, 256, 3)``, L111).

    ``B×C×S/2^d×S/2^d`` (``C = 64·2^d``, and a detail code ``B×dim``) → ``B×3×S×S`` in [−1, 1]. ``blocks``: paper 2,
    and 1 on small images (utad.txt L105, L113). ``downsample``: as :class:`ContentEncoder` (ref-code 2: 3 conv
    blocks; the paper's "4 convolutional blocks with upsamples", L105, are 3). The layer norm is
    ``GroupNorm(1, C)`` (choice: the ref-code's MUNIT ``LayerNorm``, L401-428, divides by the unbiased std plus eps
    and starts γ uniform in [0, 1); ours divides by the biased std with eps inside the root and starts γ at 1).
    """

    def __init__(self, detail_dim: int | None = 8, blocks: int = 2, downsample: int = 2) -> None:
        super().__init__()
        adaptive = detail_dim is not None
        width = expert_width(downsample)
        self.blocks = nn.ModuleList([ResidualBlock(width, adaptive) for _ in range(blocks)])
        up: list[nn.Module] = []
        for _ in range(downsample):
            up += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(width, width // 2, 5, padding=2),
                nn.GroupNorm(1, width // 2),
                nn.ReLU(),
            ]
            width //= 2
        self.up = nn.Sequential(*up, nn.Conv2d(width, 3, 7, padding=3), nn.Tanh())
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

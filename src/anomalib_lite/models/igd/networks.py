"""IGD's networks: the local (32×32) and global (256×256) autoencoders and their ACAI critics.

Local model (IGD paper L189, ref-code ``p32/ssim_module.py``): three pre-activation residual
blocks in the encoder, decoder and critic, channel widths ``width·(1, 2, 4, 8)`` (64→512 for
``width=64``). Global model (ref-code ``p256/mvtec_module.py``): encoder = a frozen ImageNet backbone's
pooled feature and a linear layer (ref-code ``twoin1Generator256``, :class:`GlobalEncoder`; paper L189 gives
the global **encoder** and critic "four residual blocks", 512–256–128–64 and 128–256–512–512 filters: the
encoder is :class:`GlobalBlockEncoder` with ``global_encoder=paper_blocks``); decoder = linear → upsampling
conv → four residual up blocks (512-512-256-128-64) → BN, ReLU → upsampling conv5 (ref-code; the paper
describes no global decoder); critic = conv5 stride 2 → four residual down blocks (128-256-512-512, paper
L189 and ref-code ``VisualDiscriminator256``) → conv3 stride 2 → linear.

Normalisation. Encoders and decoders: batch normalisation (paper L189, ref-code). The decoders' batch norm
uses each batch's statistics in training (paper L189's batch normalisation; :class:`Decoder`'s
``fixed_norm=True``: the ref-code's, whose generator trains in eval mode). Critics (``critic_norm``): the paper
says batch normalisation for the critic too (L189, ``batch``); the ref-code uses ``LayerNorm([C, H, W])``
(``p32/ssim_module.py:102-103``), one affine weight per element (``layer_elementwise``); ours by default
normalises as the ref-code's (over ``C×H×W``) with one affine pair per channel (``layer``, choice).

Also :func:`to_patches` and :func:`fold_patches`: a larger image cut into the local model's inputs,
and their maps folded back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anomalib_lite.models.backbones import Backbone

BOTTOM = 4  # side of the local model's smallest feature map (4×4 for a 32×32 input)
GLOBAL_REDUCTION = 64  # the global decoder/critic's smallest map is the input side / 64 (4×4 at 256 px)


def _norm(kind: str, channels: int, side: int | None = None) -> nn.Module:
    """A normalisation of ``B×channels×side×side`` features: ``batch`` (batch norm), ``layer`` (over ``C×H×W``
    with a per-channel affine: ``GroupNorm`` with one group; choice) or ``layer_elementwise`` (over ``C×H×W`` with
    one affine pair per element: the ref-code's ``LayerNorm([C, H, W])``, which needs ``side``)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "layer_elementwise" and side is not None:
        return nn.LayerNorm([channels, side, side])
    raise ValueError(f"unknown normalisation {kind!r} (side {side}); choices: batch, layer, layer_elementwise")


class _HalvingMean(torch.autograd.Function):
    """2×2 mean pooling whose backward keeps only the input's shape: ``avg_pool2d``'s own keeps the whole input."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return F.interpolate(grad, scale_factor=2.0, mode="nearest") / 4  # avg_pool2d's gradient: each input 1/4


class MeanPool(nn.Module):
    """``nn.AvgPool2d(2)`` on even sides (the same values and gradients) that keeps no activation for the
    backward pass: ``B×C×H×W`` → ``B×C×H/2×W/2``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _HalvingMean.apply(x) if torch.is_grad_enabled() and x.requires_grad else F.avg_pool2d(x, 2)


class ResidualBlock(nn.Module):
    """Pre-activation residual block that halves (``down``, mean-pool) or doubles (``up``, nearest) the side,
    built as the ref-code's ``ResidualBlock`` (``p32/ssim_module.py``): a down block keeps ``C_in`` channels in its
    first conv and widens in the second (conv, then mean-pool); an up block widens in its first conv (upsample,
    then conv); the first conv has no bias; the shortcut is a 1×1 conv. Both norms of a down block act on
    ``C_in×H×W`` (``side`` = ``H``, needed by ``norm="layer_elementwise"`` only). An up block's shortcut runs its 1×1
    conv before the nearest upsampling, the ref-code's order reversed: the same values (a 1×1 conv commutes with a
    nearest upsampling), a quarter of its work and of the activation it keeps for the backward pass; a down block's
    mean pooling (:class:`MeanPool`) keeps none.

    ``B×C_in×H×W`` → ``B×C_out×H/2×W/2`` (down) or ``B×C_out×2H×2W`` (up).
    """

    def __init__(self, c_in: int, c_out: int, resample: str, norm: str = "batch", side: int | None = None) -> None:
        super().__init__()
        if resample == "down":
            first = nn.Conv2d(c_in, c_in, 3, padding=1, bias=False)
            second = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), MeanPool())
            middle, self.shortcut = c_in, nn.Sequential(MeanPool(), nn.Conv2d(c_in, c_out, 1))
        else:
            upsample = nn.Upsample(scale_factor=2, mode="nearest")
            first = nn.Sequential(upsample, nn.Conv2d(c_in, c_out, 3, padding=1, bias=False))
            second = nn.Conv2d(c_out, c_out, 3, padding=1)
            middle, self.shortcut = c_out, nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(c_in, c_out, 1))
        self.up = resample == "up"
        self.body = nn.Sequential(
            _norm(norm, c_in, side), nn.ReLU(), first, _norm(norm, middle, side), nn.ReLU(), second
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:  # upsample, conv 1×1 (the shortcut's parameters and names) computed as conv 1×1, upsample
            upsample, conv = self.shortcut
            return self.body(x) + upsample(conv(x))
        return self.body(x) + self.shortcut(x)


def _widths(size: int, width: int) -> list[int]:
    """Channels at each side from ``size`` down to 4: ``width`` at the top, doubling, capped at ``8·width``."""
    steps = int(math.log2(size // BOTTOM))
    if BOTTOM * 2**steps != size:
        raise ValueError(f"IGD's local model needs an input side of 4·2^k (e.g. 32), got {size}")
    return [min(width * 2**i, 8 * width) for i in range(steps + 1)]


class DownPath(nn.Module):
    """conv3(3→w) then residual down blocks to 4×4: ``B×3×S×S`` → flat ``B×(C·16)``."""

    def __init__(self, size: int, width: int, norm: str) -> None:
        super().__init__()
        widths = _widths(size, width)
        blocks = [
            ResidualBlock(a, b, "down", norm, size // 2**i) for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
        ]
        self.net = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1), *blocks, nn.Flatten())
        self.features = widths[-1] * BOTTOM * BOTTOM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FrozenBody(nn.Module):
    """Wraps the part of an encoder that ``freeze()`` fixes: parameters stop requiring grad and the
    module stays in eval mode (batch-norm statistics fixed too), whatever ``train()`` is called with."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))

    def freeze(self) -> None:
        """Fix the parameters and statistics (IGD L189: "we fix the network parameters")."""
        self.frozen.fill_(True)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenBody:
        return super().train(mode and not bool(self.frozen))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if bool(self.frozen):  # a checkpoint taken after distillation: frozen again
            self.freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BodyEncoder(nn.Module):
    """An IGD encoder: a ``body`` giving the feature ``h`` ``B×hidden``, then the trained linear ``to_latent`` to
    ``z`` ``B×latent``. ``B×3×S×S`` → ``(h, z)``. Subclasses build both."""

    body: nn.Module
    to_latent: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The body's feature ``h`` ``B×hidden``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.features(x)
        return hidden, self.to_latent(hidden)


class LocalEncoder(BodyEncoder):
    """``B×3×S×S`` → ``(h B×hidden, z B×latent)``: the body (down path, linear to the 512-d feature
    ``h`` distilled from ImageNet), then the linear layer to the latent code ``z``."""

    def __init__(self, size: int, width: int, hidden: int, latent: int) -> None:
        super().__init__()
        down = DownPath(size, width, "batch")
        self.body = FrozenBody(nn.Sequential(down, nn.Linear(down.features, hidden)))
        self.to_latent = nn.Linear(hidden, latent)


class GlobalEncoder(BodyEncoder):
    """``B×3×S×S`` (ImageNet-normalised) → ``(h, z)``: a frozen backbone's pooled deepest stage
    ``h B×C`` (ref-code: ResNet18 to its 512-d pooled feature), then a trained linear map to ``z``."""

    def __init__(self, backbone: Backbone, latent: int) -> None:
        super().__init__()
        self.body = backbone
        self.to_latent = nn.Linear(backbone.channels[0], latent)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled deepest stage ``h`` ``B×C``."""
        return self.body(x)[0].mean(dim=(2, 3))


def start_flat(conv: nn.Conv2d, grey: float | None) -> nn.Conv2d:
    """Zero ``conv``'s weights and set its bias to ``grey``, so that a decoder ending in it first
    reconstructs every code as the flat image ``grey`` (choice, see :class:`Decoder`); ``None`` keeps
    PyTorch's default init (ref-code). Returns ``conv``."""
    if grey is not None:
        nn.init.zeros_(conv.weight)
        nn.init.constant_(conv.bias, grey)
    return conv


class FixableNorms(nn.Module):
    """A module whose batch norms may stay in eval mode whatever ``train()`` is called with (``fixed_norm``): they
    then normalise with their running statistics, which no longer update; from their initial mean 0 and variance
    1, each is a trained per-channel affine map ``γ·x/√(1 + ε) + β``. This is the ref-code's decoders in training:
    its ``init_c`` (``p32/ssim_main.py:181``, ``p256/ssim_main.py:162``) and ``validation``
    (``p32/ssim_main.py:333``) put the generator in eval mode before the first iteration, and nothing puts it back
    in train mode."""

    fixed_norm: bool = False

    def train(self, mode: bool = True) -> FixableNorms:
        super().train(mode)
        if self.fixed_norm:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self


class Decoder(FixableNorms):
    """Local decoder ``B×latent`` → ``B×3×S×S``: linear to 4×4 maps, residual up blocks, BN, ReLU, conv3;
    no output activation. ``fixed_norm``: its batch norms stay in eval mode (ref-code, :class:`FixableNorms`).

    The last conv starts flat at ``grey`` (choice; ``None``: PyTorch's default init, ref-code): 0.5 for
    targets in [0, 1], 0 (the ImageNet mean) for normalised ones, so that the first reconstruction's MS-SSIM
    with any target is positive (positive luminance at every scale, ``cs = C2/(σ_y² + C2)``). With the default init
    the output's mean can have the opposite sign of the targets', the coarsest scale's luminance is then
    negative for every image, the clamp at 0 (ref-code) zeroes MS-SSIM and its gradient, and the decoder
    learns from the MAE alone until the sign flips (mnist5k, seed 2: every class; class 5 for 7 of 30 epochs).
    """

    def __init__(self, size: int, width: int, latent: int, grey: float | None, fixed_norm: bool = False) -> None:
        super().__init__()
        self.fixed_norm = fixed_norm
        widths = _widths(size, width)[::-1]
        self.start = widths[0]
        self.fc = nn.Linear(latent, widths[0] * BOTTOM * BOTTOM)
        blocks = [ResidualBlock(a, b, "up") for a, b in zip(widths[:-1], widths[1:])]
        out = start_flat(nn.Conv2d(widths[-1], 3, 3, padding=1), grey)
        self.net = nn.Sequential(*blocks, nn.BatchNorm2d(widths[-1]), nn.ReLU(), out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, self.start, BOTTOM, BOTTOM))


class Critic(nn.Module):
    """Local ACAI critic: ``B×3×S×S`` → ``B`` in (0, 1), the estimated interpolation coefficient (``norm``: see
    the module doc; the sigmoid is the ref-code's ``p32`` critic)."""

    def __init__(self, size: int, width: int, norm: str = "layer") -> None:
        super().__init__()
        self.down = DownPath(size, width, norm)
        self.out = nn.Linear(self.down.features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.down(x)))[:, 0]


def _global_bottom(size: int) -> int:
    if size % GLOBAL_REDUCTION:
        raise ValueError(f"IGD's global model needs an input side divisible by {GLOBAL_REDUCTION}, got {size}")
    return size // GLOBAL_REDUCTION


def _upsample_conv(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)
    )


class GlobalDecoder(FixableNorms):
    """Global decoder ``B×latent`` → ``B×3×S×S`` (ref-code ``twoin1Generator256``): linear to
    ``8w×S/64×S/64``, upsampling conv3, four residual up blocks ``8w→8w→4w→2w→w``, BN, ReLU,
    upsampling conv5; no output activation. The last conv starts flat at ``grey`` (choice, as :class:`Decoder`);
    ``fixed_norm`` as :class:`Decoder`'s."""

    def __init__(self, size: int, width: int, latent: int, grey: float | None, fixed_norm: bool = False) -> None:
        super().__init__()
        self.fixed_norm = fixed_norm
        self.bottom = _global_bottom(size)
        self.start = 8 * width
        self.fc = nn.Linear(latent, self.start * self.bottom**2)
        widths = [8 * width, 8 * width, 4 * width, 2 * width, width]
        blocks = [ResidualBlock(a, b, "up") for a, b in zip(widths[:-1], widths[1:])]
        out = _upsample_conv(width, 3, 5)
        start_flat(out[1], grey)
        self.net = nn.Sequential(
            _upsample_conv(self.start, self.start, 3), *blocks, nn.BatchNorm2d(width), nn.ReLU(), out
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, self.start, self.bottom, self.bottom))


def global_down_path(size: int, width: int, norm: str) -> tuple[nn.Sequential, int]:
    """The global critic's down path (ref-code ``VisualDiscriminator256``, paper L189 "128–256–512–512"):
    conv5 stride 2, four residual down blocks ``w→2w→4w→8w→8w``, conv3 stride 2, flattened:
    ``B×3×S×S`` → ``B×F``. Returns the path and ``F``."""
    bottom = _global_bottom(size)
    widths = [width, 2 * width, 4 * width, 8 * width, 8 * width]
    sides = [size // 2 ** (i + 1) for i in range(4)]  # the blocks' input sides, after the stride-2 conv5
    blocks = [ResidualBlock(a, b, "down", norm, side) for a, b, side in zip(widths[:-1], widths[1:], sides)]
    path = nn.Sequential(
        nn.Conv2d(3, width, 5, stride=2, padding=2),
        *blocks,
        nn.Conv2d(8 * width, 8 * width, 3, stride=2, padding=1),
        nn.Flatten(),
    )
    return path, 8 * width * bottom**2


class GlobalBlockEncoder(BodyEncoder):
    """The paper's global encoder of four residual blocks (``global_encoder=paper_blocks``, see
    :class:`~anomalib_lite.models.igd.config.IGDConfig`), trained: :func:`global_down_path` with batch norm and
    a linear layer to ``hidden`` (the body, ``h``), then the linear layer to ``z``. ``B×3×S×S`` → ``(h, z)``."""

    def __init__(self, size: int, width: int, hidden: int, latent: int) -> None:
        super().__init__()
        path, features = global_down_path(size, width, "batch")
        self.body = nn.Sequential(path, nn.Linear(features, hidden))
        self.to_latent = nn.Linear(hidden, latent)


class GlobalCritic(nn.Module):
    """Global ACAI critic ``B×3×S×S`` → ``B``, unbounded (ref-code ``VisualDiscriminator256``: no output
    activation, unlike the local critic's sigmoid in ``p32``): :func:`global_down_path` (``norm``: see the module
    doc), linear."""

    def __init__(self, size: int, width: int, norm: str = "layer") -> None:
        super().__init__()
        self.net, features = global_down_path(size, width, norm)
        self.out = nn.Linear(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(x))[:, 0]


def to_patches(images: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """``B×C×H×W`` → ``B×L×C×size×size``, patches in row-major order (``L = ((H − size)/stride + 1)²``)."""
    b, c = images.shape[:2]
    columns = F.unfold(images, size, stride=stride)
    return columns.transpose(1, 2).reshape(b, -1, c, size, size)


def fold_patches(maps: torch.Tensor, side: int, stride: int, average: bool = True) -> torch.Tensor:
    """Per-patch maps ``B×L×s×s`` → ``B×side×side``: overlaps averaged, or summed (``average=False``)."""
    b, n = maps.shape[:2]
    s = int(maps.shape[-1])  # int(): a constant even when traced for export (fold needs a known kernel size)
    columns = maps.reshape(b, n, s * s).transpose(1, 2)
    total = F.fold(columns, (side, side), s, stride=stride)
    if not average:
        return total[:, 0]
    count = F.fold(torch.ones_like(columns), (side, side), s, stride=stride)
    return (total / count)[:, 0]

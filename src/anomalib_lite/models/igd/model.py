"""IGD: interpolated Gaussian descriptor (METHODS.md).

An autoencoder ``x̃ = g(f(x))`` whose latent codes are pulled towards a Gaussian
descriptor (GSVDD, fitted by an E-step every few epochs) and whose decoder is
regularised by ACAI interpolation against a critic. The local model works on 32×32
inputs: whole images (MNIST, CIFAR-10) or 32×32 patches (stride 16) of a larger image;
on larger images a global model on the whole image (frozen backbone encoder) joins it.

Stages: ``distill`` (the local encoder imitates a frozen ImageNet backbone's pooled
feature), ``local``, then ``global`` when used. The critic is trained in the same
optimiser step as the autoencoder: its loss sees detached reconstructions, and the
generator term reaches the decoder through a detached copy of the critic's weights,
so neither loss moves the other's parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader

from anomalib_lite.models.backbones import Backbone
from anomalib_lite.models.base import AnomalyModel, AnomalyOutput, Stage
from anomalib_lite.models.igd.networks import Critic, Decoder, GlobalEncoder, LocalEncoder
from anomalib_lite.models.layers import as_rgb, to_unit_range
from anomalib_lite.models.registry import BackboneConfig, register_model
from anomalib_lite.models.ssim import GLOBAL_WEIGHTS, LOCAL_WEIGHTS, ms_ssim, ms_ssim_map

CHUNK = 256  # local-model inputs per forward pass outside training (E-step, predict)


@dataclass
class IGDConfig:
    """IGD hyper-parameters (paper defaults; see METHODS.md).

    Attributes:
        image_size: side of the input images (set from ``data.image_size``).
        epochs, lr, betas, weight_decay, lr_power: Adam with polynomial decay to 0, per model.
        kd_epochs, kd_lr, kd_weight_decay, kd_input_size: distillation of the local encoder
            (the input is resized to ``kd_input_size`` for the backbone). 0 epochs skips it.
        width: channels of the first conv (64 in the reference code). hidden, latent: encoder sizes.
        local_size, patch_stride: the local model's input side and, on larger images, patch stride.
        patches_per_image: random patches per training image for the local model on larger images.
        use_global: train the global model too; ``None`` = when images are larger than ``local_size``.
        rho: MAE weight of ℓ_m. beta: weight of the global MS-SSIM term (the rest is the local
            one); ``None`` = 1.0 on ``local_size`` images (one-class), 0.1 otherwise (MVTec).
        gamma, lam: ACAI mixing of real and reconstructed images, and the generator term weight.
        kappa, mu_min, estep_every: GSVDD σ² = κ·mean‖z − μ‖² (≥ 1), |μ_i| ≥ mu_min, E-step period.
        xi: score weight of ℓ_m (the rest is ℓ_h). global_weight: the global model's share.
        offline_backbone: the backbone a run uses instead of a torchvision one whose weights are not
            in the torch cache (resolved by ``train.py`` and recorded in the checkpoint's config).
    """

    name: str = "igd"
    image_size: int = 32
    epochs: int = 128
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-6
    lr_power: float = 0.9
    kd_epochs: int = 50
    kd_lr: float = 1e-4
    kd_weight_decay: float = 1e-5
    kd_input_size: int = 224
    width: int = 64
    hidden: int = 512
    latent: int = 128
    local_size: int = 32
    patch_stride: int = 16
    patches_per_image: int = 4
    use_global: bool | None = None
    rho: float = 0.15
    beta: float | None = None
    gamma: float = 0.2
    lam: float = 0.1
    kappa: float = 0.5
    mu_min: float = 0.1
    estep_every: int = 10
    xi: float = 0.5
    global_weight: float = 0.5
    offline_backbone: str = "tf_efficientnet_lite0"

    def __post_init__(self) -> None:
        for key in ("epochs", "width", "hidden", "latent", "patch_stride", "patches_per_image", "estep_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key}={getattr(self, key)} must be ≥ 1")
        if self.kd_epochs < 0:
            raise ValueError(f"model.kd_epochs={self.kd_epochs} must be ≥ 0")
        if self.image_size < self.local_size or (self.image_size - self.local_size) % self.patch_stride:
            raise ValueError(
                f"model.image_size={self.image_size} must be model.local_size={self.local_size} plus a multiple "
                f"of model.patch_stride={self.patch_stride}"
            )
        for key in ("rho", "gamma", "xi", "global_weight") + (("beta",) if self.beta is not None else ()):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"model.{key}={getattr(self, key)} must be in [0, 1]")
        for key in ("lr", "kd_lr", "kappa"):
            if getattr(self, key) <= 0:
                raise ValueError(f"model.{key}={getattr(self, key)} must be > 0")
        for key in ("weight_decay", "kd_weight_decay", "lr_power", "lam", "mu_min"):
            if getattr(self, key) < 0:
                raise ValueError(f"model.{key}={getattr(self, key)} must be ≥ 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"model.betas={self.betas} must be two numbers in [0, 1)")
        if self.kd_input_size < 32:
            raise ValueError(f"model.kd_input_size={self.kd_input_size} must be ≥ 32")
        sides = {"model.local_size": (self.local_size, "the local model's input")}
        if self.global_used:
            sides["model.image_size"] = (self.image_size, "data.image_size, the global model's input")
        for key, (side, what) in sides.items():
            if side < 4 or side & (side - 1):  # 4·2^k ⇔ a power of two ≥ 4
                raise ValueError(f"{key}={side} ({what}) must be 4·2^k (32, 64, 128, 256, …) for IGD's networks")

    @property
    def global_used(self) -> bool:
        """Whether the global model is built and trained."""
        return self.image_size > self.local_size if self.use_global is None else self.use_global

    @property
    def global_ssim_share(self) -> float:
        """β of ℓ_m, resolved."""
        if self.beta is not None:
            return self.beta
        return 1.0 if self.image_size == self.local_size else 0.1


def to_patches(images: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """``B×C×H×W`` → ``B×L×C×size×size``, patches in row-major order (``L = ((H − size)/stride + 1)²``)."""
    b, c = images.shape[:2]
    columns = F.unfold(images, size, stride=stride)
    return columns.transpose(1, 2).reshape(b, -1, c, size, size)


def fold_patches(maps: torch.Tensor, side: int, stride: int) -> torch.Tensor:
    """Per-patch maps ``B×L×s×s`` → ``B×side×side``, overlaps averaged."""
    b, n, s, _ = maps.shape
    columns = maps.reshape(b, n, s * s).transpose(1, 2)
    total = F.fold(columns, (side, side), s, stride=stride)
    count = F.fold(torch.ones_like(columns), (side, side), s, stride=stride)
    return (total / count)[:, 0]


class GaussianDescriptor(nn.Module):
    """One IGD autoencoder (encoder, decoder, critic) with its Gaussian descriptor ``μ, σ²``.

    Args:
        encoder: ``B×3×S×S`` normalised → ``(h, z B×latent)``. size: input side ``S``.
    """

    def __init__(self, encoder: nn.Module, size: int, cfg: IGDConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.decoder = Decoder(size, cfg.width, cfg.latent)
        self.critic = Critic(size, cfg.width)
        self.register_buffer("mu", torch.zeros(cfg.latent))
        self.register_buffer("sigma2", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def trainable(self) -> list[nn.Parameter]:
        """Parameters the EM stage trains (a frozen backbone inside the encoder is left out)."""
        return [p for p in self.parameters() if p.requires_grad]

    def distance(self, z: torch.Tensor) -> torch.Tensor:
        """GSVDD ``ℓ_h = 1 − exp(−‖z − μ‖² / σ²)``: ``B×latent`` → ``B``."""
        return 1 - torch.exp(-((z.float() - self.mu) ** 2).sum(1) / self.sigma2)

    def reconstruction_error(self, recon: torch.Tensor, target: torch.Tensor, per_pixel: bool = False) -> torch.Tensor:
        """``ℓ_m = ρ·MAE + (1 − ρ)(1 − (β·MS-SSIM_G + (1 − β)·MS-SSIM_L))`` of ``B×3×S×S`` pairs.

        Returns ``B`` values, or with ``per_pixel`` its per-pixel form ``B×S×S`` (absolute error
        averaged over channels, MS-SSIM maps per scale upsampled and weighted).
        """
        cfg, beta = self.cfg, self.cfg.global_ssim_share

        def dissimilarity(weights: tuple[float, ...], window: int) -> torch.Tensor:
            if per_pixel:
                return ms_ssim_map(recon, target, weights, window)
            return 1 - ms_ssim(recon, target, weights, window)

        with torch.autocast(recon.device.type, enabled=False):
            recon, target = recon.float(), target.float()
            error = (recon - target).abs().mean(1) if per_pixel else (recon - target).abs().mean(dim=(1, 2, 3))
            structure = beta * dissimilarity(GLOBAL_WEIGHTS, 11) if beta > 0 else 0.0
            if beta < 1:
                structure = structure + (1 - beta) * dissimilarity(LOCAL_WEIGHTS, 3)
            return cfg.rho * error + (1 - cfg.rho) * structure

    def losses(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training terms of one batch: normalised inputs and [0, 1] targets, both ``B×3×S×S``."""
        cfg = self.cfg
        _, z = self.encoder(inputs)
        recon = self.decoder(z)
        reconstruction = self.reconstruction_error(recon, targets).mean()
        descriptor = self.distance(z).mean()
        alpha = 0.5 * torch.rand(z.shape[0], device=z.device)
        mixed = self.decoder(alpha[:, None] * z + (1 - alpha[:, None]) * z.flip(0))
        frozen_critic = {name: p.detach() for name, p in self.critic.named_parameters()}
        generator = cfg.lam * (functional_call(self.critic, frozen_critic, (mixed,)) ** 2).mean()
        real_mix = cfg.gamma * targets + (1 - cfg.gamma) * recon.detach()
        critic = ((self.critic(mixed.detach()) - alpha) ** 2).mean() + (self.critic(real_mix) ** 2).mean()
        return {
            "loss": reconstruction + descriptor + generator + critic,
            "reconstruction": reconstruction,
            "descriptor": descriptor,
            "generator": generator,
            "critic": critic,
        }

    @torch.no_grad()
    def e_step(self, batches: Iterator[torch.Tensor]) -> None:
        """Refit ``μ`` (``|μ_i| ≥ mu_min``) and ``σ² = max(κ·mean‖z − μ‖², 1)`` on normalised input batches."""
        was_training = self.training
        self.eval()
        codes = torch.cat([self.encoder(batch)[1].float() for batch in batches])
        self.train(was_training)
        mu = codes.mean(0)
        sign = torch.where(mu < 0, -1.0, 1.0)
        self.mu.copy_(sign * mu.abs().clamp_min(self.cfg.mu_min))
        self.sigma2.copy_((self.cfg.kappa * ((codes - self.mu) ** 2).sum(1).mean()).clamp_min(1.0))
        self.fitted.fill_(True)

    @torch.no_grad()
    def evaluate(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score ``ξ·ℓ_m + (1 − ξ)·ℓ_h`` (``B``) and error map (``B×S×S``) of ``B×3×S×S`` inputs."""
        _, z = self.encoder(inputs)
        recon = self.decoder(z)
        score = self.cfg.xi * self.reconstruction_error(recon, targets) + (1 - self.cfg.xi) * self.distance(z)
        return score, self.reconstruction_error(recon, targets, per_pixel=True)


@register_model("igd", IGDConfig)
class IGD(AnomalyModel):
    """Interpolated Gaussian descriptor: a local model on 32×32 images or patches, and a global one.

    Args:
        cfg: :class:`IGDConfig`. backbone_cfg: the frozen ImageNet network (distillation target
            and global encoder); ResNet18 in the paper.
    """

    def __init__(self, cfg: IGDConfig, backbone_cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        needs_backbone = cfg.kd_epochs > 0 or cfg.global_used
        self.backbone = Backbone(backbone_cfg.name, ["last"], backbone_cfg.weights) if needs_backbone else None
        encoder = LocalEncoder(cfg.local_size, cfg.width, cfg.hidden, cfg.latent)
        self.local = GaussianDescriptor(encoder, cfg.local_size, cfg)
        self.kd_head = None
        if cfg.kd_epochs > 0:
            channels = self.backbone.channels[0]
            self.kd_head = nn.Identity() if channels == cfg.hidden else nn.Linear(cfg.hidden, channels)
        self.global_model = None
        if cfg.global_used:
            self.global_model = GaussianDescriptor(GlobalEncoder(self.backbone, cfg.latent), cfg.image_size, cfg)
        self._datamodule = None

    def _local_inputs(self, image: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised and [0, 1] local-model inputs ``N×3×s×s``: every patch, or ``patches_per_image``
        random ones per image when ``sample``."""
        cfg = self.cfg
        image = as_rgb(image)
        patches = to_patches(image, cfg.local_size, cfg.patch_stride)
        if sample and patches.shape[1] > 1:
            b, n = patches.shape[:2]
            index = torch.rand(b, n, device=image.device).argsort(1)[:, : cfg.patches_per_image]
            patches = patches[torch.arange(b, device=image.device)[:, None], index]
        patches = patches.flatten(0, 1)
        return patches, to_unit_range(patches)

    def _normalised_batches(self, local: bool) -> Iterator[torch.Tensor]:
        """The training set as normalised model inputs (every patch for the local model), in chunks."""
        cfg = self.cfg
        per_image = ((cfg.image_size - cfg.local_size) // cfg.patch_stride + 1) ** 2 if local else 1
        loader = DataLoader(self._datamodule.train_set, batch_size=max(1, CHUNK // per_image))
        for batch in loader:
            image = batch["image"].to(self.local.mu.device)
            yield self._local_inputs(image, sample=False)[0] if local else as_rgb(image)

    def _em_hooks(self, descriptor: GaussianDescriptor, local: bool) -> tuple:
        def start(datamodule: object) -> None:
            self._datamodule = datamodule
            if not bool(descriptor.fitted):
                descriptor.e_step(self._normalised_batches(local))

        def epoch_end(done: int) -> None:
            if done % self.cfg.estep_every == 0:
                descriptor.e_step(self._normalised_batches(local))

        return start, epoch_end

    def distill_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """``‖f_I(x) − head(h(x))‖²`` against the backbone's pooled deepest stage on resized inputs."""
        inputs, _ = self._local_inputs(batch["image"], sample=True)
        with torch.no_grad():
            resized = F.interpolate(inputs, size=self.cfg.kd_input_size, mode="bilinear", align_corners=False)
            target = self.backbone(resized)[0].float().mean(dim=(2, 3))
        hidden, _ = self.local.encoder(inputs)
        loss = ((self.kd_head(hidden).float() - target) ** 2).sum(1).mean()
        return {"loss": loss}

    def local_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """The local model's EM-stage terms on (random patches of) the batch."""
        return self.local.losses(*self._local_inputs(batch["image"], sample=True))

    def global_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """The global model's EM-stage terms on whole images."""
        image = as_rgb(batch["image"])
        return self.global_model.losses(image, to_unit_range(image))

    def _adam_stage(self, name: str, epochs: int, parameters: list, step, lr: float, wd: float, hooks=(None, None)):
        cfg = self.cfg
        return Stage(
            name=name,
            epochs=epochs,
            parameters=parameters,
            optimizer=lambda params: torch.optim.Adam(params, lr=lr, betas=tuple(cfg.betas), weight_decay=wd),
            step=step,
            scheduler=lambda opt, total: torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: max(0.0, 1 - s / max(1, total)) ** cfg.lr_power
            ),
            on_stage_start=hooks[0],
            on_epoch_end=hooks[1],
        )

    def stages(self) -> list[Stage]:
        """``distill`` (if ``kd_epochs``), ``local``, and ``global`` (on larger images)."""
        cfg = self.cfg
        stages = []
        if cfg.kd_epochs > 0:
            parameters = list(self.local.encoder.parameters()) + list(self.kd_head.parameters())
            stages.append(
                self._adam_stage(
                    "distill", cfg.kd_epochs, parameters, self.distill_step, cfg.kd_lr, cfg.kd_weight_decay
                )
            )
        stages.append(
            self._adam_stage(
                "local", cfg.epochs, self.local.trainable(), self.local_step, cfg.lr, cfg.weight_decay,
                self._em_hooks(self.local, local=True),
            )
        )  # fmt: skip
        if self.global_model is not None:
            stages.append(
                self._adam_stage(
                    "global", cfg.epochs, self.global_model.trainable(), self.global_step, cfg.lr, cfg.weight_decay,
                    self._em_hooks(self.global_model, local=False),
                )
            )  # fmt: skip
        return stages

    @torch.inference_mode()
    def predict(self, image: torch.Tensor) -> AnomalyOutput:
        """Map: local patch maps folded back (overlaps averaged), mixed with the global map by
        ``global_weight``. Score: ``ξ·ℓ_m + (1 − ξ)·ℓ_h``, the local one the maximum over patches."""
        cfg = self.cfg
        b, side = image.shape[0], image.shape[-1]
        inputs, targets = self._local_inputs(image, sample=False)
        chunks = [self.local.evaluate(a, b) for a, b in zip(inputs.split(CHUNK), targets.split(CHUNK))]
        scores, maps = torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])
        score = scores.view(b, -1).amax(1)
        anomaly_map = fold_patches(maps.view(b, -1, cfg.local_size, cfg.local_size), side, cfg.patch_stride)
        if self.global_model is not None:
            rgb = as_rgb(image)
            global_score, global_map = self.global_model.evaluate(rgb, to_unit_range(rgb))
            score = (1 - cfg.global_weight) * score + cfg.global_weight * global_score
            anomaly_map = (1 - cfg.global_weight) * anomaly_map + cfg.global_weight * global_map
        return AnomalyOutput(anomaly_map=anomaly_map.float(), score=score.float())

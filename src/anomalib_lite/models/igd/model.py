"""IGD: interpolated Gaussian descriptor ("Unsupervised Anomaly Detection and Localisation with Multi-scale
Interpolated Gaussian Descriptors"; ``L<n>``: a line of the paper's text).

An autoencoder ``x̃ = g(f(x))`` whose latent codes are pulled towards a Gaussian
descriptor (GSVDD, fitted by an E-step every few epochs) and whose decoder is
regularised by ACAI interpolation against a critic. The local model works on 32×32
inputs: whole images (MNIST, CIFAR-10) or every 32×32 patch (stride 16) of a larger
image; on larger images a global model on the whole image (a frozen backbone encoder by default)
joins it, and β weighs the two (paper eq. 8 and 12).

Stages: ``distill`` (the local encoder body imitates a frozen ImageNet backbone's pooled
feature, counted in iterations), ``local`` (the body is then frozen, paper L189: only the
512→128 layer, the decoder and the critic train), then ``global`` when used. By default
(``critic_update=joint``, choice) the critic is trained in the same optimiser step as the autoencoder: its
loss sees detached reconstructions of the batch before the step, and the generator term reaches the decoder
through a detached copy of the critic's weights, so neither loss moves the other's parameters. The paper
(L133) says only which loss trains which network; the ref-code (``p32/ssim_main.py:266-305``,
``p256/ssim_main.py:246-284``) steps the autoencoder first, then computes the critic's loss on the updated
autoencoder's reconstructions and steps the critic with its own Adam (``critic_update=after``,
:class:`CriticAfterAutoencoder`). ``distill``, ``descriptor`` and ``interpolation`` remove parts for the paper's
Table 5 ablation (:class:`IGDConfig`).

Not copied from the ref-code (its bugs, labelled here): its local detection score takes a **signed** mean error
(``multi_scale/inference_det.py:182-183``, ``p32/ssim_main.py:367-368``; ours is the absolute error of its loss
and of paper eq. 8); its global critic loss compares every output with every α (a ``b`` critic output minus a
``b×1`` α broadcasts to ``b×b``: ``p256/mvtec_module.py:317`` with ``p256/ssim_main.py:260, 278``; ours is
per sample, paper eq. 5, as its ``p32``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader

from anomalib_lite.models.backbones import Backbone, BackboneConfig
from anomalib_lite.models.base import AnomalyModel, AnomalyOutput, Stage, TinySetting
from anomalib_lite.models.igd.config import IGDConfig
from anomalib_lite.models.igd.networks import (
    Critic,
    Decoder,
    GlobalBlockEncoder,
    GlobalCritic,
    GlobalDecoder,
    GlobalEncoder,
    LocalEncoder,
    fold_patches,
    to_patches,
)
from anomalib_lite.models.layers import as_rgb, to_unit_range
from anomalib_lite.models.registry import register_model
from anomalib_lite.models.ssim import GLOBAL_WEIGHTS, LOCAL_WEIGHTS, ms_ssim, ms_ssim_map, ms_ssim_residual_map

CHUNK = 256  # local-model inputs per forward pass outside training (E-step, predict)
# ref-code multi_scale/inference_loc.py:29-30 (rgb2gray): the channels of its per-channel maps merged into one.
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def mirrored_chunks(count: int, size: int, device: torch.device | None = None) -> Iterator[torch.Tensor]:
    """Indices of ``count`` samples in micro-batches of at most ``size`` (≥ 2), each the union of a run from the
    front ``[a, b)`` and its mirror ``[count − b, count − a)``, in increasing order: so that ``flip(0)`` inside a
    micro-batch pairs sample ``i`` with ``count − 1 − i``, as it does over the whole batch (ACAI's partner code)."""
    half = -(-count // 2)
    step = max(1, size // 2)
    for start in range(0, half, step):
        stop = min(start + step, half)
        front = torch.arange(start, stop, device=device)
        back = torch.arange(max(count - stop, stop), count - start, device=device)
        yield torch.cat([front, back])


@contextmanager
def _statistics_kept(module: nn.Module) -> Iterator[None]:
    """Run forward passes of ``module`` (in its current mode) without changing its batch norms' running
    statistics: they are restored on exit."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{name: buffer.clone() for name, buffer in m.named_buffers(recurse=False)} for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for name, buffer in m.named_buffers(recurse=False):
                    buffer.copy_(buffers[name])


class CriticAfterAutoencoder(torch.optim.Optimizer):
    """The ref-code's update order (``critic_update=after``) as the engine's one optimiser: ``step`` steps the
    autoencoder's optimiser, then asks ``critic_loss`` for the critic's loss on the **updated** autoencoder (``None``:
    nothing pending), back-propagates it into the critic alone and steps the critic's optimiser (ref-code
    ``p32/ssim_main.py:292-305``: ``optimizer_g.step()``, then the discriminator's loss from ``generator.generate``
    and ``generator(real_data)`` again, ``optimizer_d.step()``).

    ``param_groups`` are the two members' group dicts (a learning-rate schedule scales both, as the ref-code's
    ``poly_lr_scheduler`` on each); ``state_dict``/``load_state_dict`` hold both. The engine's gradient clipping
    reaches the autoencoder's step only.
    """

    def __init__(
        self,
        autoencoder: torch.optim.Optimizer,
        critic: torch.optim.Optimizer,
        critic_loss: Callable[[], torch.Tensor | None],
    ) -> None:
        params = [p for optimizer in (autoencoder, critic) for group in optimizer.param_groups for p in group["params"]]
        super().__init__(params, {})
        self.autoencoder, self.critic, self.critic_loss = autoencoder, critic, critic_loss
        self.param_groups = autoencoder.param_groups + critic.param_groups

    def step(self, closure: None = None) -> None:
        """The autoencoder's step, then the critic's on the updated autoencoder (no closure)."""
        if closure is not None:
            raise ValueError("CriticAfterAutoencoder.step takes no closure")
        self.autoencoder.step()
        loss = self.critic_loss()
        if loss is None:
            return
        self.critic.zero_grad(set_to_none=True)
        loss.backward()
        self.critic.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear both members' gradients."""
        self.autoencoder.zero_grad(set_to_none=set_to_none)
        self.critic.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """``{"autoencoder": …, "critic": …}``: each member's state."""
        return {"autoencoder": self.autoencoder.state_dict(), "critic": self.critic.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore both members from :meth:`state_dict`'s output.

        Raises:
            ValueError: the state is not this optimiser's (a checkpoint of another ``critic_update``).
        """
        if set(state_dict) != {"autoencoder", "critic"}:
            raise ValueError(
                "optimizer state is not model.critic_update=after's (autoencoder, critic): a checkpoint taken "
                "with another model.critic_update?"
            )
        self.autoencoder.load_state_dict(state_dict["autoencoder"])
        self.critic.load_state_dict(state_dict["critic"])
        self.param_groups = self.autoencoder.param_groups + self.critic.param_groups


class GaussianDescriptor(nn.Module):
    """One IGD autoencoder (encoder, decoder, critic) with its Gaussian descriptor ``μ, σ²`` (with
    ``descriptor=svdd``, ``μ`` holds Deep SVDD's fixed centre ``c``; with ``none``, neither is used).

    Args:
        encoder: ``B×3×S×S`` normalised → ``(h, z B×latent)``; its ``body`` gives ``h``, its ``to_latent`` ``z``.
        decoder, critic: ``B×latent`` → ``B×3×S×S`` and ``B×3×S×S`` → ``B``; no critic (``None``) without
            interpolation.
        ssim_weights, ssim_window: this model's MS-SSIM (paper L185–L187: the global one 5 scales, the local
            one on MVTec AD patches 4 scales; windows 11 (global, ``p256/ssim_main.py:254``) and 3 (patches,
            ``p32/ssim_main.py:274``): ref-code, the paper gives none; one-class 32×32 images: 5 scales, window 11
            cut to fit (choice, see :mod:`anomalib_lite.models.ssim`; no one-class ref-code exists)).
        body_trained: whether the EM stage trains the encoder body (a body that is not fixed: the local one
            without distillation or with ``freeze_encoder=false``, the global ``paper_blocks`` one).
        xi: this model's score weight ξ of ``ℓ_m`` (paper eq. 11, L187: 0.5 for both; ref-code 0.9 local, 0.1
            global, ``multi_scale/inference_det.py:190, 206``).
        loss_ssim_weight: the weight of ``1 − MS-SSIM`` in the training loss, beside ``1 − ρ``: 1 (ref-code), or
            with ``loss_beta`` β for the global model and 1 − β for the local one (paper eq. 8 read literally).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        critic: nn.Module | None,
        ssim_weights: tuple,
        ssim_window: int,
        cfg: IGDConfig,
        body_trained: bool,
        xi: float = 0.5,
        loss_ssim_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.cfg, self.body_trained, self.xi, self.loss_ssim_weight = cfg, body_trained, xi, loss_ssim_weight
        self._pending_critic: tuple | None = None  # critic_update=after: the step's inputs for the critic
        self.encoder, self.decoder, self.critic = encoder, decoder, critic
        self.ssim_weights, self.ssim_window = ssim_weights, ssim_window
        self.register_buffer("mu", torch.zeros(cfg.latent))
        self.register_buffer("sigma2", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def em_parameters(self) -> list[nn.Parameter]:
        """What the EM stage trains: the 512→128 layer, the decoder, the critic (if any); the encoder body too
        when :attr:`body_trained` (a frozen backbone never)."""
        body = [p for p in self.encoder.body.parameters() if p.requires_grad] if self.body_trained else []
        rest = [self.encoder.to_latent, self.decoder] + ([self.critic] if self.critic is not None else [])
        return body + [p for module in rest for p in module.parameters()]

    def frozen_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``h = body(x)`` ``B×hidden``: the only call of the frozen network (distilled body or backbone).

        Without gradient when the body is frozen, so a feature cache can replace this one call.
        """
        if any(p.requires_grad for p in self.encoder.body.parameters()):
            return self.encoder.features(inputs)
        with torch.no_grad():
            return self.encoder.features(inputs)

    def encode(self, inputs: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Latent codes ``z`` ``B×latent`` of normalised inputs ``B×3×S×S``; ``hidden`` (``B×hidden``):
        their :meth:`frozen_features` when already computed (a feature cache)."""
        return self.encoder.to_latent(self.frozen_features(inputs) if hidden is None else hidden)

    def distance(self, z: torch.Tensor) -> torch.Tensor:
        """The descriptor term, ``B×latent`` → ``B``: GSVDD ``ℓ_h = 1 − exp(−‖z − μ‖² / σ²)``, or with
        ``descriptor=svdd`` Deep SVDD's ``‖z − c‖²`` (``c`` held in ``μ``)."""
        squared = ((z.float() - self.mu) ** 2).sum(1)
        return squared if self.cfg.descriptor == "svdd" else 1 - torch.exp(-squared / self.sigma2)

    def reconstruction_error(
        self, recon: torch.Tensor, target: torch.Tensor, per_pixel: bool = False, ssim_weight: float = 1.0
    ) -> torch.Tensor:
        """``ℓ_m = ρ·MAE/L + (1 − ρ)·ssim_weight·(1 − MS-SSIM)`` of ``B×3×S×S`` pairs, with this model's MS-SSIM
        (``ssim_channels``: channels averaged before or after the product, see
        :func:`~anomalib_lite.models.ssim.ms_ssim`).

        Returns ``B`` values, or with ``per_pixel`` its per-pixel form ``B×S×S``: ``ssim_map=padded`` (choice):
        absolute error averaged over channels, plus :func:`~anomalib_lite.models.ssim.ms_ssim_map`;
        ``ssim_map=ref`` (ref-code ``multi_scale/inference_loc.py:283-296, 305-323``): per channel, absolute error
        plus :func:`~anomalib_lite.models.ssim.ms_ssim_residual_map`, the channels merged by ``rgb2gray``'s weights
        (:data:`GREY_WEIGHTS`; the ref-code's ReLU of the sum is left out: both terms are ≥ 0).
        """
        cfg, data_range = self.cfg, self.cfg.data_range
        with torch.autocast(recon.device.type, enabled=False):
            recon, target = recon.float(), target.float()
            error = (recon - target).abs() / data_range
            options = {"data_range": data_range}
            if per_pixel and cfg.ssim_map == "ref":
                structure = ms_ssim_residual_map(recon, target, self.ssim_weights, self.ssim_window, **options)
                grey = torch.tensor(GREY_WEIGHTS, dtype=error.dtype, device=error.device).view(1, -1, 1, 1)
                return ((cfg.rho * error + (1 - cfg.rho) * structure) * grey).sum(1)
            if per_pixel:
                error = error.mean(1)
                structure = ms_ssim_map(recon, target, self.ssim_weights, self.ssim_window, **options)
            else:
                error = error.mean(dim=(1, 2, 3))
                per_channel = cfg.ssim_channels == "per_channel"
                similarity = ms_ssim(recon, target, self.ssim_weights, self.ssim_window, per_channel, **options)
                structure = 1 - similarity
            return cfg.rho * error + (1 - cfg.rho) * ssim_weight * structure

    def losses(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        hidden: torch.Tensor | None = None,
        alpha: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training terms of one batch: normalised inputs and reconstruction targets, both ``B×3×S×S``
        (``hidden``: the inputs' frozen features, when cached; ``alpha``: the interpolation weights ``B``, else
        drawn here). ``descriptor`` is absent with ``descriptor=none``, ``generator`` and ``critic`` without
        interpolation."""
        z = self.encode(inputs, hidden)
        recon = self.decoder(z)
        terms = {"reconstruction": self.reconstruction_error(recon, targets, ssim_weight=self.loss_ssim_weight).mean()}
        if self.cfg.descriptor != "none":
            terms["descriptor"] = self.distance(z).mean()
        if self.critic is not None:
            terms.update(self.interpolation_losses(z, recon, targets, alpha))
            if self.cfg.critic_update == "after":
                # The critic's loss comes after the optimiser's autoencoder step (critic_loss_after_step).
                self._pending_critic = (*self._pending_critic, inputs, hidden)
        return {"loss": sum(terms.values()), **terms}

    def accumulated_losses(
        self, inputs: torch.Tensor, targets: torch.Tensor, hidden: torch.Tensor | None, micro_batch: int
    ) -> dict[str, torch.Tensor]:
        """:meth:`losses` of ``N`` inputs run ``micro_batch`` at a time (:func:`mirrored_chunks`), each micro-batch's
        loss weighted by its share of ``N`` and back-propagated at once, so that the parameters' gradients add up to
        those of one pass over the ``N`` (every term is a mean over samples; the interpolation weights are drawn
        once for all ``N``). Exact where no layer mixes samples; a batch norm on batch statistics
        (``decoder_norm=batch``, ``critic_norm=batch``) normalises each micro-batch by its own.

        Returns:
            The terms over all ``N``, detached (their gradients are already in the parameters).
        """
        count = inputs.shape[0]
        alpha = 0.5 * torch.rand(count, device=inputs.device) if self.critic is not None else None
        totals: dict[str, torch.Tensor] = {}
        for index in mirrored_chunks(count, micro_batch, inputs.device):
            terms = self.losses(
                inputs[index],
                targets[index],
                None if hidden is None else hidden[index],
                None if alpha is None else alpha[index],
            )
            share = index.numel() / count
            (terms["loss"] * share).backward()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0) + value.detach() * share
        return totals

    def interpolation_losses(
        self, z: torch.Tensor, recon: torch.Tensor, targets: torch.Tensor, alpha: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """ACAI terms of codes ``B×latent``, their reconstructions and targets ``B×3×S×S``: the generator
        term (eq. 6; reaches the decoder and, through the mixed codes, the encoder, not the critic: paper L133,
        ref-code ``p32/ssim_main.py:279-293``) and the critic loss (eq. 5, reaches the critic only; per sample as
        eq. 5 and the ref-code's ``p32``). With ``critic_update=after`` the critic loss is left to
        :meth:`critic_loss_after_step` (its inputs kept until then).

        The partner code of ``z_i`` (``interpolation_partner``): ``batch`` = the code of the batch reversed,
        ``z_{B−1−i}`` (ref-code ``p32/ssim_main.py:279``, ACAI's own); ``features`` = ``z_i``'s own elements in
        reverse order (paper L72-L74 read literally: "reversing the order of the elements along the length of the
        vector f(x1)"). ``alpha`` (``B``, in [0, 0.5)): given, or drawn here.
        """
        cfg = self.cfg
        alpha = 0.5 * torch.rand(z.shape[0], device=z.device) if alpha is None else alpha
        partner = z.flip(0) if cfg.interpolation_partner == "batch" else z.flip(1)
        codes = alpha[:, None] * z + (1 - alpha[:, None]) * partner
        mixed = self.decoder(codes)
        frozen_critic = {name: p.detach() for name, p in self.critic.named_parameters()}
        generator = cfg.lam * (functional_call(self.critic, frozen_critic, (mixed,)) ** 2).mean()
        if cfg.critic_update == "after":
            self._pending_critic = (codes.detach(), alpha, targets)
            return {"generator": generator}
        return {"generator": generator, "critic": self.critic_loss(mixed.detach(), alpha, recon.detach(), targets)}

    def critic_loss(
        self, mixed: torch.Tensor, alpha: torch.Tensor, recon: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Paper eq. 5, ``‖d(x̂_α) − α‖² + ‖d(γ·x + (1 − γ)·x̂)‖²`` averaged over the batch, of detached
        interpolations ``mixed`` and reconstructions ``recon`` (``B×3×S×S``) with their ``alpha`` (``B``)."""
        real_mix = self.cfg.gamma * targets + (1 - self.cfg.gamma) * recon
        return ((self.critic(mixed) - alpha) ** 2).mean() + (self.critic(real_mix) ** 2).mean()

    def critic_loss_after_step(self) -> torch.Tensor | None:
        """``critic_update=after`` (ref-code): the critic loss of the last training batch, its interpolated codes
        decoded and its inputs reconstructed again by the autoencoder **after** its optimiser step (without
        gradient, in the current mode, the batch norms' running statistics kept); ``None`` when no batch is
        pending."""
        if self._pending_critic is None:
            return None
        codes, alpha, targets, inputs, hidden = self._pending_critic
        self._pending_critic = None
        with torch.no_grad(), _statistics_kept(self.encoder), _statistics_kept(self.decoder):
            mixed = self.decoder(codes)
            recon = self.decoder(self.encode(inputs, hidden))
        return self.critic_loss(mixed, alpha, recon, targets)

    @torch.no_grad()
    def e_step(self, batches: Iterator[torch.Tensor]) -> None:
        """Refit ``μ`` (``|μ_i| ≥ mu_min``) and ``σ² = max(κ·mean‖z − μ‖², 1)`` on normalised input batches
        (Deep SVDD's centre ``c`` is this ``μ``, fitted once), in eval mode (as the ref-code's). A component exactly
        0 goes to ``+mu_min`` (the ref-code's ``p32/ssim_main.py:195-196`` leaves it at 0).

        One pass over the codes, ``μ`` first, then ``σ²`` about the new ``μ``, floored once over the whole set
        (paper L107, L185). The ref-code makes two passes (``p32/ssim_main.py:179-220``, ``p256/ssim_main.py:159-198``):
        at the start ``c`` then ``σ²``, as here, but in its periodic E-steps (``p32/ssim_main.py:307-309``,
        ``p256/ssim_main.py:286-288``) ``σ²`` about the **previous** ``c``, then ``c``; and it floors each loader
        batch's mean at 1 before averaging the batches (``p32/ssim_main.py:214-219``) with ``κ = 1`` (``sig_f``).
        """
        was_training = self.training
        self.eval()
        codes = torch.cat([self.encode(batch).float() for batch in batches])
        self.train(was_training)
        mu = codes.mean(0)
        sign = torch.where(mu < 0, -1.0, 1.0)
        self.mu.copy_(sign * mu.abs().clamp_min(self.cfg.mu_min))
        self.sigma2.copy_((self.cfg.kappa * ((codes - self.mu) ** 2).sum(1).mean()).clamp_min(1.0))
        self.fitted.fill_(True)

    @torch.no_grad()
    def evaluate(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score ``ξ·ℓ_m + (1 − ξ)·ℓ_h`` (``B``; ``ℓ_m`` alone with ``descriptor=none``) and error map
        (``B×S×S``) of ``B×3×S×S`` inputs."""
        z = self.encode(inputs)
        recon = self.decoder(z)
        score = self.reconstruction_error(recon, targets)
        if self.cfg.descriptor != "none":
            score = self.xi * score + (1 - self.xi) * self.distance(z)
        return score, self.reconstruction_error(recon, targets, per_pixel=True)


@register_model("igd", IGDConfig)
class IGD(AnomalyModel):
    """Interpolated Gaussian descriptor: a local model on 32×32 images or patches, and a global one.

    Args:
        cfg: :class:`IGDConfig`. backbone_cfg: the frozen ImageNet network (distillation target and global
            encoder); ResNet18: the teacher of paper L189/L193 and the global encoder of the ref-code
            (``p256/mvtec_module.py:241-247``; paper L189 gives the global encoder four residual blocks).
    """

    @classmethod
    def tiny(cls) -> TinySetting:
        """Every stage at width 4 on 64 px: two distillation steps, then two epochs each of the local model (two
        patches an image) and the global one, the E-step after every epoch."""
        model = IGDConfig(
            image_size=64,
            epochs=2,
            kd_steps=2,
            kd_input_size=32,
            width=4,
            hidden=32,
            latent=8,
            patch_stride=32,
            patches_per_image=2,
            estep_every=1,
        )
        return TinySetting(model, BackboneConfig(name="resnet18", weights="none"))

    def __init__(self, cfg: IGDConfig, backbone_cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        needs_backbone = cfg.distilled or cfg.global_backbone
        self.backbone = Backbone(backbone_cfg.name, ["last"], backbone_cfg.weights) if needs_backbone else None
        # One-class 32×32 images: the only model uses the 5-scale MS-SSIM (paper L185, footnote 1);
        # patches of a larger image: the local 4-scale one with window 3 (4 scales paper L187, window 3 ref-code).
        # One-class: window 11 cut to fit the small scales (choice; the paper gives no window, no one-class ref-code).
        local_ssim = (LOCAL_WEIGHTS, 3) if cfg.global_used else (GLOBAL_WEIGHTS, 11)
        fixed_norm = cfg.decoder_norm == "fixed"
        self.local = GaussianDescriptor(
            LocalEncoder(cfg.local_size, cfg.width, cfg.hidden, cfg.latent),
            Decoder(cfg.local_size, cfg.width, cfg.latent, cfg.grey, fixed_norm),
            Critic(cfg.local_size, cfg.width, cfg.critic_norm) if cfg.interpolation else None,
            *local_ssim,
            cfg,
            body_trained=not cfg.body_frozen,
            xi=cfg.xi,
            loss_ssim_weight=1 - cfg.beta if cfg.loss_beta and cfg.global_used else 1.0,
        )
        self.kd_head = None
        if cfg.distilled:
            # Identity for ResNet18's 512-d feature (paper L189); a trained Linear(hidden -> C) only when the
            # teacher's width differs (the offline stand-in): choice, neither paper nor ref-code has one.
            channels = self.backbone.channels[0]
            self.kd_head = nn.Identity() if channels == cfg.hidden else nn.Linear(cfg.hidden, channels)
        self.global_model = None
        if cfg.global_used:
            encoder = (
                GlobalEncoder(self.backbone, cfg.latent)
                if cfg.global_backbone
                else GlobalBlockEncoder(cfg.image_size, cfg.width, cfg.hidden, cfg.latent)
            )
            self.global_model = GaussianDescriptor(
                encoder,
                GlobalDecoder(cfg.image_size, cfg.width, cfg.latent, cfg.grey, fixed_norm),
                GlobalCritic(cfg.image_size, cfg.width, cfg.critic_norm) if cfg.interpolation else None,
                GLOBAL_WEIGHTS,
                11,
                cfg,
                body_trained=not cfg.global_backbone,
                xi=cfg.xi if cfg.xi_global is None else cfg.xi_global,
                loss_ssim_weight=cfg.beta if cfg.loss_beta else 1.0,
            )
        self._datamodule = None

    def _targets(self, inputs: torch.Tensor) -> torch.Tensor:
        """Reconstruction targets of normalised RGB inputs: themselves (paper) or in [0, 1]."""
        return inputs if self.cfg.ssim_space == "normalised" else to_unit_range(inputs)

    def _local_inputs(
        self, image: torch.Tensor, per_image: int | None, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Normalised local-model inputs and their targets, ``N×3×s×s``: every patch, or ``per_image``
        random ones per image; with ``hidden`` (the patches' cached body features, ``B×P×hidden``), the
        rows of the same patches, ``N×hidden`` (else ``None``)."""
        cfg = self.cfg
        image = as_rgb(image)
        patches = to_patches(image, cfg.local_size, cfg.patch_stride)
        if per_image is not None and per_image < patches.shape[1]:
            b, n = patches.shape[:2]
            index = torch.rand(b, n, device=image.device).argsort(1)[:, :per_image]
            rows = torch.arange(b, device=image.device)[:, None]
            patches = patches[rows, index]
            hidden = None if hidden is None else hidden[rows, index]
        patches = patches.flatten(0, 1)
        return patches, self._targets(patches), None if hidden is None else hidden.flatten(0, 1)

    def _augmented(self, image: torch.Tensor) -> torch.Tensor:
        """``B×C×S×S`` training images, each flipped horizontally with probability 1/2 with ``hflip``
        (ref-code), else as they are."""
        if not self.cfg.hflip:
            return image
        flip = torch.rand(image.shape[0], device=image.device) < 0.5
        return torch.where(flip[:, None, None, None], image.flip(-1), image)

    def _normalised_batches(self, local: bool) -> Iterator[torch.Tensor]:
        """The training set as normalised model inputs (every patch for the local model), in chunks."""
        cfg = self.cfg
        per_image = cfg.patch_count if local else 1
        loader = DataLoader(self._datamodule.train_set, batch_size=max(1, CHUNK // per_image))
        for batch in loader:
            image = self._augmented(batch["image"].to(self.local.mu.device))
            yield self._local_inputs(image, None)[0] if local else as_rgb(image)

    def _em_hooks(self, descriptor: GaussianDescriptor, local: bool) -> tuple:
        """Stage start: freeze a distilled body, fit ``μ, σ²`` (Deep SVDD: its centre, once); epoch end:
        the GSVDD E-step every ``estep_every`` epochs."""
        cfg = self.cfg

        def start(datamodule: object) -> None:
            self._datamodule = datamodule
            if cfg.body_frozen and local:
                descriptor.encoder.body.freeze()
            if cfg.descriptor != "none" and not bool(descriptor.fitted):
                descriptor.e_step(self._normalised_batches(local))

        def epoch_end(done: int) -> None:
            if cfg.descriptor == "gaussian" and done % cfg.estep_every == 0:
                descriptor.e_step(self._normalised_batches(local))

        return start, epoch_end

    def teacher_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """The frozen backbone's pooled deepest stage ``B×C`` of normalised ``B×3×s×s`` inputs resized to
        ``kd_input_size`` (choice): the distillation target ``f_θ(I)`` of paper eq. 10. Paper L189 asks for "an
        intermediate layer of a pre-trained ResNet18 with the same 512-dimensional features"; the pooled last stage
        (``layer4``) is ResNet18's only 512-d feature, our reading (the ref-code has no distillation script)."""
        with torch.no_grad():
            resized = F.interpolate(inputs, size=self.cfg.kd_input_size, mode="bilinear", align_corners=False)
            return self.backbone(resized)[0].float().mean(dim=(2, 3))

    def patch_teacher_features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The distillation targets of every patch, ``{"teacher": B×P×C}``, of ``B×C×S×S`` images (computed
        ``kd_batch_size`` patches at a time): what the engine's feature cache may compute once per run."""
        patches = self._local_inputs(image, None)[0]
        count, chunk = patches.shape[0], self.cfg.kd_batch_size
        # Whole chunks of kd_batch_size, the training batch (the last one padded): the same kernels, the same bits.
        padded = patches[torch.arange(-(-count // chunk) * chunk, device=patches.device) % count]
        targets = torch.cat([self.teacher_features(part) for part in padded.split(chunk)])[:count]
        return {"teacher": targets.unflatten(0, (image.shape[0], -1))}

    def distill_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """``‖f_I(x) − head(h(x))‖²`` on ``kd_batch_size`` random local inputs (patches) of the batch; the
        targets ``f_I(x)`` are gathered from the batch's cached :meth:`patch_teacher_features` by the same draw
        when it has them."""
        inputs = self._local_inputs(batch["image"], None)[0]
        targets = batch["features"]["teacher"].flatten(0, 1) if "features" in batch else None
        if inputs.shape[0] > self.cfg.kd_batch_size:
            chosen = torch.randperm(inputs.shape[0], device=inputs.device)[: self.cfg.kd_batch_size]
            inputs = inputs[chosen]
            targets = None if targets is None else targets[chosen]
        if targets is None:
            targets = self.teacher_features(inputs)
        hidden = self.local.encoder.features(inputs)
        loss = ((self.kd_head(hidden).float() - targets) ** 2).sum(1).mean()
        return {"loss": loss}

    def local_features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The fixed (distilled) encoder body's features of every patch, ``{"hidden": B×P×hidden}``, of
        ``B×C×S×S`` images: what the engine's feature cache may compute once per run."""
        patches = self._local_inputs(image, None)[0]
        return {"hidden": self.local.frozen_features(patches).unflatten(0, (image.shape[0], -1))}

    def local_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """The local model's EM-stage terms on the batch's patches (all, or ``patches_per_image``), from
        cached body features when the batch has them; with ``micro_batch``, run and back-propagated that many
        patches at a time (:meth:`GaussianDescriptor.accumulated_losses`; the terms come back detached)."""
        cached = batch["features"]["hidden"] if "features" in batch else None
        image = self._augmented(batch["image"])
        inputs = self._local_inputs(image, self.cfg.patches_per_image, cached)
        if self.cfg.micro_batch is None:
            return self.local.losses(*inputs)
        return self.local.accumulated_losses(*inputs, self.cfg.micro_batch)

    def global_features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The global model's frozen-backbone features ``{"hidden": B×C}`` of ``B×C×S×S`` images: what
        the engine's feature cache may compute once per run (:attr:`Stage.features`)."""
        return {"hidden": self.global_model.frozen_features(as_rgb(image))}

    def global_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """The global model's EM-stage terms on whole images (from cached backbone features when the
        batch has them)."""
        image = as_rgb(self._augmented(batch["image"]))
        hidden = batch["features"]["hidden"] if "features" in batch else None
        return self.global_model.losses(image, self._targets(image), hidden)

    def _adam(self, lr: float, wd: float):
        return lambda params: torch.optim.Adam(params, lr=lr, betas=tuple(self.cfg.betas), weight_decay=wd)

    def _em_optimizer(self, descriptor: GaussianDescriptor) -> Callable[[list[nn.Parameter]], torch.optim.Optimizer]:
        """The EM stage's Adam: one for every parameter (``critic_weight_decay`` unset or equal to
        ``weight_decay``), the critic in its own group with ``critic_weight_decay``, or (``critic_update=after``)
        :class:`CriticAfterAutoencoder` over an Adam for the autoencoder and one for the critic."""
        cfg = self.cfg
        critic_decay = cfg.weight_decay if cfg.critic_weight_decay is None else cfg.critic_weight_decay

        def build(params: list[nn.Parameter]) -> torch.optim.Optimizer:
            critic = {id(p) for p in descriptor.critic.parameters()} if descriptor.critic is not None else set()
            if not critic or (cfg.critic_update == "joint" and critic_decay == cfg.weight_decay):
                return self._adam(cfg.lr, cfg.weight_decay)(params)
            rest = [p for p in params if id(p) not in critic]
            own = [p for p in params if id(p) in critic]
            if cfg.critic_update == "joint":
                groups = [{"params": rest}, {"params": own, "weight_decay": critic_decay}]
                return self._adam(cfg.lr, cfg.weight_decay)(groups)
            return CriticAfterAutoencoder(
                self._adam(cfg.lr, cfg.weight_decay)(rest),
                self._adam(cfg.lr, critic_decay)(own),
                descriptor.critic_loss_after_step,
            )

        return build

    def _em_stage(self, name: str, descriptor: GaussianDescriptor, step, local: bool, features=None) -> Stage:
        """The EM stage of the local or the global model (E-steps at its start and every ``estep_every`` epochs)."""
        cfg = self.cfg
        start, epoch_end = self._em_hooks(descriptor, local)
        drawn = cfg.patches_per_image or cfg.patch_count
        return Stage(
            name=name,
            epochs=cfg.epochs,
            parameters=descriptor.em_parameters(),
            optimizer=self._em_optimizer(descriptor),
            step=step,
            scheduler=lambda opt, total: torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: max(0.0, 1 - s / max(1, total)) ** cfg.lr_power
            ),
            on_stage_start=start,
            on_epoch_end=epoch_end,
            features=features,
            # The local cache holds every patch; an uncached step runs the body on the drawn ones only.
            features_per_image=cfg.patch_count if local else 1,
            features_per_step=lambda batch: batch * (min(drawn, cfg.patch_count) if local else 1),
            backward_in_step=local and cfg.micro_batch is not None,
        )

    def stages(self) -> list[Stage]:
        """``distill`` (``kd_steps`` optimiser steps, unless ``distill=false``), ``local``, and ``global`` (on
        larger images)."""
        cfg = self.cfg
        stages = []
        if cfg.distilled:
            parameters = list(self.local.encoder.body.parameters()) + list(self.kd_head.parameters())
            # The teacher sees a random subset of the finite set of patches: its target for every patch of
            # every image is cached when distillation draws more patches than there are.
            stages.append(
                Stage(
                    name="distill",
                    epochs=1,
                    steps=cfg.kd_steps,
                    parameters=parameters,
                    step=self.distill_step,
                    optimizer=self._adam(cfg.kd_lr, cfg.kd_weight_decay),
                    features=self.patch_teacher_features,
                    features_per_image=cfg.patch_count,
                    features_per_step=lambda batch: min(cfg.kd_batch_size, batch * cfg.patch_count),
                )
            )
        # A body's features are fixed (cacheable) only once it is distilled and frozen (paper L189), or a frozen
        # backbone's, and only for un-augmented images (no hflip).
        local_features = self.local_features if cfg.body_frozen and not cfg.hflip else None
        stages.append(self._em_stage("local", self.local, self.local_step, True, local_features))
        if self.global_model is not None:
            global_features = self.global_features if cfg.global_backbone and not cfg.hflip else None
            stages.append(self._em_stage("global", self.global_model, self.global_step, False, global_features))
        return stages

    @torch.inference_mode()
    def predict(self, image: torch.Tensor) -> AnomalyOutput:
        """Map: local patch maps folded back (overlaps averaged, or summed with ``patch_fusion=sum``); score
        ``ξ·ℓ_m + (1 − ξ)·ℓ_h``, the local one the maximum over patches (ref-code). With the global model both are
        ``share·global + (1 − share)·local``, ``share`` = β (paper eq. 12) or 0.5 (``combine=equal``, ref-code)."""
        cfg = self.cfg
        b, side = image.shape[0], int(image.shape[-1])
        inputs, targets, _ = self._local_inputs(image, None)
        # One pass when traced for export: a traced split would replay the example batch's number of chunks.
        pairs = [(inputs, targets)] if torch.jit.is_tracing() else zip(inputs.split(CHUNK), targets.split(CHUNK))
        chunks = [self.local.evaluate(a, t) for a, t in pairs]
        scores, maps = torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])
        score = scores.view(b, -1).amax(1)
        patch_maps = maps.view(b, -1, cfg.local_size, cfg.local_size)
        anomaly_map = fold_patches(patch_maps, side, cfg.patch_stride, cfg.patch_fusion == "mean")
        if self.global_model is not None:
            rgb = as_rgb(image)
            global_score, global_map = self.global_model.evaluate(rgb, self._targets(rgb))
            share = cfg.global_share
            score = (1 - share) * score + share * global_score
            anomaly_map = (1 - share) * anomaly_map + share * global_map
        return AnomalyOutput(anomaly_map=anomaly_map.float(), score=score.float())

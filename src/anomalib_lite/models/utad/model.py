"""UTAD: an impression extractor (IE-Net) and an expert network, compared perceptually ("Unsupervised Two-Stage
Anomaly Detection").

Stage ``ie_net`` trains an inception autoencoder whose output, the *impression* ``x_I``,
is an anomaly-free version of the input (L2 reconstruction, KL of the Gaussian code,
a mutual-information discriminator on (code, feature) pairs with batch-shuffled
negatives, trained by its own Adam). Stage ``expert_net`` freezes it and trains the Expert-Net on (impression,
image) pairs: ``x̂ = Dec(Enc_c(x_I), detail(x))`` restores the detail, and a naïve branch
``x_N = Dec'(Enc'(x))`` imitates the impression. The anomaly map is the perceptual
distance ``PM(x, x̂) + PM(x_I, x_N)`` on a frozen backbone's features (VGG-19
``conv1_2, conv2_2, conv3_4``: paper L108; taken before their ReLU: choice, the paper does not say; the ref-code's
``Vgg19EncoderMS``, ``IE-Net/utils.py`` L242-265, stores the same convs' outputs, which torchvision's in-place ReLU
then overwrites, so it taps them after the ReLU in effect).

Ablations (paper Table 2): ``mi_weight=0`` (without MI), ``use_expert=false`` (without Expert-Net:
the map is ``PM(x, x_I)`` and stage 2 is skipped), ``use_detail=false`` (without detail guidance:
no detail extractor, the AdaIN decoder is fed random ``N(0, I)`` codes).

Sources: ``utad.txt L<n>`` is the paper; *ref-code* is github.com/DreamtaleCore/UTAD, which releases test code,
configs and modules but no training script. Settings that are options are labelled in
:class:`~anomalib_lite.models.utad.config.UTADConfig`, layers in :mod:`~anomalib_lite.models.utad.networks`.
Departures that no option controls, each our choice:

- **The map** ``PM(x, x̂) + PM(x_I, x_N)`` (``PM(x, x_I)`` without the Expert-Net) is our reading of eq. 8, lost
  from the text (L67-69; L65: the ``x_I``/``x_N`` difference "can also be a reference"); the form of ``PM`` is
  in :meth:`UTAD.perceptual_distance`. The ref-code's PM script is not released; its ``postprocessing.py``
  (L161-188) combines grey-level pixel residuals instead: input vs the mean of reconstructions, plus input vs the
  mean naïve impression, minus the reconstructions' variance and the reconstruction-vs-impression residual,
  clipped at 0 and scaled to [0, 1] per image. Its ``Expert-Net/test_en.py`` decodes the naïve impressions from
  10 random detail codes (L29, L92-103, only ``if opts.i2m``) and the reconstructions from the input's own detail
  code (L85, ``encode_detail(refers)``; its loop L95-96 indexes that one-image batch and breaks past the first),
  so ``postprocessing.py``'s mean and variance over reconstructions (L167-170) cannot see several distinct ones.
  Ours takes one deterministic pass for both.
- **The naïve branch** ``Dec'(Enc'(x))`` is a content encoder and a decoder with plain InstanceNorm residual
  blocks, no AdaIN and no detail input, so ``x_N`` is deterministic: our reading of L60 ("a detail extractor,
  two encoders, two decoders") and L105 (AdaIN in "the decoder"). The ref-code builds two full MUNIT generators
  (``Expert-Net/trainer.py`` L19-20: each its own detail encoder, AdaIN decoder and MLP) and decodes the naïve
  impression with random detail codes.
- **Losses the ref-code configures and we leave out** (the paper describes none of them): the IE-Net's image
  LSGAN (``IE-Net/configs/mvtec.yaml`` L12-14, L17, L30: 3 scales, weight 0.1; ``discriminator.py`` L46-103),
  the Expert-Net's GAN term (``gan_w: 1``, ``Expert-Net/configs/mvtec_ad.yaml`` L27; its config has no
  discriminator section) and its content-code L1 (``recon_c_w: 1``, L30). The paper's IE-Net objective adds a
  term whose form is lost (L55); none is added here.
- **The MI term** is cooperative, its negatives a cyclic shift, its discriminator global with LeakyReLU, and
  "without MI" keeps the KL: see ``UTADConfig.mi_weight``, ``networks.shuffled_partners``,
  ``networks.MIDiscriminator`` and ``configs/variant/utad_en_guide.yaml``.
- **No augmentation**: the framework's loaders feed the images as they are; the ref-code trains the IE-Net on
  horizontal and vertical flips, rotations up to 45° and a random resized crop (scale 0.8–1)
  (``IE-Net/ie_net/data_loader.py`` L25-38). The paper says nothing of it.
- **Impressions** reach the Expert-Net as float tensors computed once per run on the un-augmented images; the
  ref-code saves them as 8-bit PNG files and reads them back (``IE-Net/generate_impression.py`` L100,
  ``IE-Net/utils.py`` L112-127).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anomalib_lite.errors import ConfigError
from anomalib_lite.models.backbones import Backbone, BackboneConfig
from anomalib_lite.models.base import AnomalyModel, AnomalyOutput, Stage, TinySetting
from anomalib_lite.models.layers import to_normalised, to_unit_range, upsample_sum
from anomalib_lite.models.registry import register_model
from anomalib_lite.models.utad.config import UTADConfig
from anomalib_lite.models.utad.networks import (
    ContentEncoder,
    Decoder,
    DetailEncoder,
    IENet,
    MIDiscriminator,
    shuffled_partners,
)
from anomalib_lite.models.utad.optimizer import OptimizerChain


@register_model("utad", UTADConfig)
class UTAD(AnomalyModel):
    """Two-stage UTAD.

    Args:
        cfg: :class:`UTADConfig`. backbone_cfg: the perceptual network and its layers (VGG-19 in the paper).
    """

    @classmethod
    def tiny(cls) -> TinySetting:
        """The small networks at 64 px, one IE-Net epoch and two Expert-Net ones, a random EfficientNet-Lite0 as the
        perceptual network."""
        model = UTADConfig(image_size=64, ie_epochs=1, ie_warmup_epochs=0, expert_epochs=2, latent=16)
        return TinySetting(model, BackboneConfig(name="tf_efficientnet_lite0", weights="none"))

    def __init__(self, cfg: UTADConfig, backbone_cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ie_net = IENet(
            cfg.image_size, cfg.small_variant, cfg.latent, cfg.latent_head, cfg.mlp_hidden, cfg.initial_log_var
        )
        self.mi = MIDiscriminator(cfg.latent, self.ie_net.feature_size)
        blocks, downsample = cfg.residual_blocks, cfg.expert_downsample
        self.content = ContentEncoder(blocks, downsample)
        self.detail = DetailEncoder(cfg.detail_dim, cfg.detail_convs) if cfg.use_detail else None
        self.decoder = Decoder(cfg.detail_dim, blocks, downsample)
        self.naive_encoder = ContentEncoder(blocks, downsample)
        self.naive_decoder = Decoder(None, blocks, downsample)
        self.perceptual = Backbone(backbone_cfg.name, backbone_cfg.layers, backbone_cfg.weights)
        weights = cfg.perceptual_weights or [1.0] * len(self.perceptual.layers)
        if len(weights) != len(self.perceptual.layers):
            raise ConfigError(
                f"model.perceptual_weights has {len(weights)} weights for the {len(self.perceptual.layers)} "
                f"perceptual layers {self.perceptual.layers} (backbone.layers)"
            )
        self.perceptual_weights = weights

    def _expert_modules(self) -> list[nn.Module]:
        modules = (self.content, self.detail, self.decoder, self.naive_encoder, self.naive_decoder)
        return [m for m in modules if m is not None]

    def ie_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Stage 1: ``recon_weight·L2 + kl_weight·KL + mi_weight·BCE(MI discriminator)``; the encoder
        shares the MI term (it makes codes tell their own image's feature from another's: cooperative, choice,
        see ``UTADConfig.mi_weight``). The code is sampled by the reparameterisation ``μ + ε·σ`` (paper L48: ``z`` "a
        sample" of the Gaussian of μ and σ; ref-code ``inceptionCAE.py`` L60-61, L69-70: μ and log σ²) and feeds the
        decoder (paper head) and the MI discriminator."""
        cfg = self.cfg
        x = to_unit_range(batch["image"])
        mu, log_var, bottom = self.ie_net.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()
        impression = self.ie_net.decode(z, bottom)
        reconstruction = F.mse_loss(impression.float(), x.float())
        # Means over the code's dimensions, like the L2 over pixels (a sum over 128 dimensions
        # outweighs the reconstruction term and made SGD diverge in our runs).
        kl = -0.5 * (1 + log_var - mu**2 - log_var.exp()).float().mean()
        feature = bottom.mean(dim=(2, 3))
        partners = shuffled_partners(x.shape[0], device=x.device)
        positive, negative = self.mi(z, feature).float(), self.mi(z, feature[partners]).float()
        mi = F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive)) + (
            F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative))
        )
        loss = cfg.recon_weight * reconstruction + cfg.kl_weight * kl + cfg.mi_weight * mi
        return {"loss": loss, "reconstruction": reconstruction, "kl": kl, "mi": mi}

    def impression(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen IE-Net's impression (its code's mean, no sampling) of ``B×3×S×S`` in [0, 1]."""
        self.ie_net.eval()
        with torch.no_grad():
            return self.ie_net(x)

    def detail_code(self, x_pm: torch.Tensor) -> torch.Tensor:
        """The AdaIN input of ``B×3×S×S`` images in [−1, 1]: their detail code ``B×detail_dim``, or random
        ``N(0, I)`` codes without detail guidance (the paper's ablation)."""
        if self.detail is None:
            return torch.randn(x_pm.shape[0], self.cfg.detail_dim, device=x_pm.device, dtype=x_pm.dtype)
        return self.detail(x_pm)

    def expert(self, x: torch.Tensor, impression: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x̂, x_N, AdaIN code)`` from the image and its impression, both ``B×3×S×S`` in [0, 1];
        ``x̂`` and ``x_N`` are in [−1, 1], the code is ``B×detail_dim`` (random without detail guidance)."""
        x_pm, impression_pm = 2 * x - 1, 2 * impression - 1
        code = self.detail_code(x_pm)
        restored = self.decoder(self.content(impression_pm), code)
        naive = self.naive_decoder(self.naive_encoder(x_pm))
        return restored, naive, code

    def impression_features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"impression": B×3×S×S}``: the frozen IE-Net's impressions of normalised ``B×C×S×S`` images, what
        the engine's feature cache may compute once per run for the Expert-Net stage (:attr:`Stage.features`)."""
        return {"impression": self.impression(to_unit_range(image))}

    def expert_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Stage 2: L1 of ``x̂`` to ``x``, of ``x_N`` to ``x_I`` (paper L65), and of the detail codes of ``x̂`` and
        ``x`` (paper L64 asks the codes to be "identical", with no norm: the L1 is ref-code, MUNIT's
        ``recon_criterion``, ``Expert-Net/trainer.py`` L30-31; ``x``'s code detached, choice) (``x_I`` from the batch's
        cached :meth:`impression_features` when it has them). The L1 terms are taken in [−1, 1], the Expert-Net's
        range (ref-code, see :mod:`~anomalib_lite.models.utad.networks`). The ref-code's GAN and content-code terms
        are left out (module doc)."""
        cfg = self.cfg
        x = to_unit_range(batch["image"])
        impression = batch["features"]["impression"] if "features" in batch else self.impression(x)
        restored, naive, code = self.expert(x, impression)
        image_term = (restored - (2 * x - 1)).abs().mean()
        naive_term = (naive - (2 * impression - 1)).abs().mean()
        terms = {"image": image_term, "naive": naive_term}
        loss = cfg.image_weight * image_term + cfg.naive_weight * naive_term
        if self.detail is not None:
            detail_term = (self.detail(restored) - code.detach()).abs().mean()
            terms["detail"] = detail_term
            loss = loss + cfg.detail_weight * detail_term
        return {"loss": loss, **terms}

    def _ie_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """Stage 1: SGD for the IE-Net at ``ie_lr``; the MI discriminator by Adam at ``mi_lr`` (the two chained),
        or in its own group of that SGD (``mi_optimizer=sgd``)."""
        cfg = self.cfg
        discriminator = {id(p) for p in self.mi.parameters()}
        ie_params = [p for p in params if id(p) not in discriminator]
        mi_params = [p for p in params if id(p) in discriminator]

        def sgd(groups: list[dict]) -> torch.optim.SGD:
            return torch.optim.SGD(groups, lr=cfg.ie_lr, momentum=cfg.momentum, weight_decay=cfg.ie_weight_decay)

        if cfg.mi_optimizer == "sgd":
            return sgd([{"params": ie_params}, {"params": mi_params, "lr": cfg.mi_lr}])
        adam = torch.optim.Adam(mi_params, lr=cfg.mi_lr, betas=tuple(cfg.betas))
        return OptimizerChain(sgd([{"params": ie_params}]), adam)

    def stages(self) -> list[Stage]:
        """``ie_net`` (SGD, linear warm-up then step decay), then ``expert_net`` (Adam) unless ``use_expert`` is off."""
        cfg = self.cfg

        def warmup_then_step_decay(optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
            per_epoch = total / cfg.ie_epochs
            warmup = round(cfg.ie_warmup_epochs * per_epoch)
            milestones = [round(m * per_epoch) for m in cfg.ie_milestones]

            def factor(step: int) -> float:
                rise = (step + 1) / warmup if step < warmup else 1.0
                return rise * cfg.ie_lr_decay ** sum(step >= m for m in milestones)

            return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

        stages = [
            Stage(
                name="ie_net",
                epochs=cfg.ie_epochs,
                parameters=list(self.ie_net.parameters()) + list(self.mi.parameters()),
                optimizer=self._ie_optimizer,
                step=self.ie_step,
                scheduler=warmup_then_step_decay,
            )
        ]
        if cfg.use_expert:
            stages.append(
                Stage(
                    name="expert_net",
                    epochs=cfg.expert_epochs,
                    parameters=[p for m in self._expert_modules() for p in m.parameters()],
                    optimizer=lambda params: torch.optim.Adam(params, lr=cfg.expert_lr, betas=tuple(cfg.betas)),
                    step=self.expert_step,
                    # The frozen IE-Net sees the un-augmented images: its impressions are fixed per image.
                    features=self.impression_features,
                )
            )
        return stages

    def perceptual_distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``PM(a, b) = Σ_l λ_l · mean_c (φ_l(a) − φ_l(b))²``, each layer's map upsampled (bilinear) to the input
        size: ``B×3×S×S`` in [0, 1] twice → ``B×S×S``. The paper's formula (eq. 8, L67-69) is lost from its text:
        the squared distance, its mean over channels of features not normalised (no LPIPS-style unit channels) and
        the resizing are our choice; λ_l is ``model.perceptual_weights``. The network sees ImageNet-normalised RGB
        (choice, torchvision's convention; the ref-code's ``vgg_preprocess``, ``IE-Net/utils.py`` L268-278, feeds
        Caffe-style BGR in [0, 255] less the mean, but its PM script is not released). The network sees the S×S
        image (256 px on MVTec AD) as it is: choice; the same ref-code file defines ``img2tensor`` (L281-285), a
        224×224 resize to [−1, 1], the input its ``Vgg19EncoderMS`` assumes (L249), but no released caller ties
        them to the PM."""
        features = self.perceptual(to_normalised(torch.cat([a, b])))
        diffs = [
            weight * ((fa - fb).float() ** 2).mean(1)
            for weight, (fa, fb) in zip(self.perceptual_weights, (f.chunk(2) for f in features))
        ]
        return upsample_sum(diffs, a.shape[-2:])

    def reported_metrics(self) -> dict[str, dict[str, Any]]:
        """UTAD's paper reports a segmentation IoU: the evaluator adds it at ``model.iou_threshold``."""
        return {"iou": {"threshold": self.cfg.iou_threshold}}

    def export_refusal(self) -> str | None:
        """Without detail guidance the AdaIN codes are random at inference too: no fixed graph reproduces it."""
        if self.detail is None:
            return (
                "model.use_detail=false (the paper's ablation) feeds the decoder random codes at inference, so its "
                "maps change from call to call and no exported file can reproduce them"
            )
        return None

    def intermediates(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Impression, naïve impression and reconstruction of normalised ``B×C×S×S`` images, in [0, 1]."""
        x = to_unit_range(image)
        impression = self.impression(x)
        if not self.cfg.use_expert:
            return {"input": x, "impression": impression}
        restored, naive, _ = self.expert(x, impression)
        return {"input": x, "impression": impression, "naive": (naive + 1) / 2, "reconstruction": (restored + 1) / 2}

    @torch.inference_mode()
    def predict(self, image: torch.Tensor) -> AnomalyOutput:
        """Map ``PM(x, x̂) + PM(x_I, x_N)`` (``PM(x, x_I)`` without the Expert-Net); score: its max or mean."""
        parts = self.intermediates(image)
        if self.cfg.use_expert:
            maps = self.perceptual_distance(parts["input"], parts["reconstruction"]) + self.perceptual_distance(
                parts["impression"], parts["naive"]
            )
        else:
            maps = self.perceptual_distance(parts["input"], parts["impression"])
        score = maps.flatten(1).amax(1) if self.cfg.score == "max" else maps.flatten(1).mean(1)
        return AnomalyOutput(anomaly_map=maps.float(), score=score.float())

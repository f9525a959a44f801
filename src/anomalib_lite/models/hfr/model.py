"""HFR: a decoder reconstructs a frozen encoder's features level by level, deepest first.

Encoder features ``E1, E2, E3`` (strides 4, 8, 16). Level 3 decodes ``E3``; level
k = 2, 1 decodes the reconstruction ``D_{k+1}`` nearest-upsampled ×2. The residual
``M_k = ||E_k/||E_k|| − D_k/||D_k|| ||`` per position is both the loss (its mean)
and, summed over levels at the input size and Gaussian-filtered, the anomaly map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anomalib_lite.models.backbones import Backbone, BackboneConfig
from anomalib_lite.models.base import AnomalyModel, AnomalyOutput, Stage, TinySetting
from anomalib_lite.models.hfr.config import HFRConfig
from anomalib_lite.models.hfr.networks import decoder_level
from anomalib_lite.models.layers import gaussian_blur, normalized_distance, upsample_sum
from anomalib_lite.models.registry import register_model


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay from the initial learning rate to 0 over ``total_steps`` optimiser steps."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))


@register_model("hfr", HFRConfig)
class HFR(AnomalyModel):
    """Hierarchical feature reconstruction.

    Args:
        cfg: :class:`HFRConfig`. backbone_cfg: the frozen encoder (any number of levels ≥ 1).
    """

    @classmethod
    def tiny(cls) -> TinySetting:
        """Two epochs of one conv block per level on a random ResNet-18."""
        return TinySetting(HFRConfig(epochs=2, conv_blocks=1), BackboneConfig(name="resnet18", weights="none"))

    def __init__(self, cfg: HFRConfig, backbone_cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Backbone(backbone_cfg.name, backbone_cfg.layers, backbone_cfg.weights)
        widths = self.encoder.channels
        # decoders[0] reconstructs the deepest level from its own features; each next one
        # reconstructs the next-shallower level from the previous reconstruction.
        self.decoders = nn.ModuleList(
            decoder_level(widths[-1] if k == len(widths) - 1 else widths[k + 1], widths[k], cfg)
            for k in reversed(range(len(widths)))
        )

    def encode(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The frozen encoder's features by level name, shallowest first (``B×C_k×h_k×w_k``)."""
        with torch.no_grad():
            return dict(zip(self.encoder.layers, self.encoder(image)))

    def residuals(self, image: torch.Tensor, encoded: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Residual maps ``M_k`` (``B×h_k×w_k``), shallowest level first; ``encoded``: :meth:`encode`'s
        output for ``image`` when already computed (e.g. cached by the engine)."""
        encoded = self.encode(image) if encoded is None else encoded
        targets = [encoded[layer] for layer in self.encoder.layers]
        recon = None
        residuals = []
        for decoder, target in zip(self.decoders, reversed(targets)):
            source = target if recon is None else F.interpolate(recon, size=target.shape[-2:], mode="nearest")
            recon = decoder(source)
            residuals.append(normalized_distance(target.float(), recon.float()))
        return residuals[::-1]

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Loss = mean over levels of the mean residual; also logs each level's term. Uses
        ``batch["features"]`` (the encoder's, see :meth:`encode`) when the batch has them."""
        level_losses = [m.mean() for m in self.residuals(batch["image"], batch.get("features"))]
        terms = {f"loss_level{k + 1}": loss for k, loss in enumerate(level_losses)}
        return {"loss": torch.stack(level_losses).mean(), **terms}

    def stages(self) -> list[Stage]:
        """One stage: the decoder, SGD as in the paper (constant learning rate, or ``lr_schedule=cosine``)."""
        cfg = self.cfg
        return [
            Stage(
                name="reconstruction",
                epochs=cfg.epochs,
                parameters=list(self.decoders.parameters()),
                optimizer=lambda params: torch.optim.SGD(
                    params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
                ),
                step=self.training_step,
                scheduler=cosine_schedule if cfg.lr_schedule == "cosine" else None,
                features=self.encode,
            )
        ]

    @torch.inference_mode()
    def predict(self, image: torch.Tensor) -> AnomalyOutput:
        """Map = Gaussian(σ) of the summed, upsampled residuals; score = max of the map."""
        maps = upsample_sum(self.residuals(image), image.shape[-2:])
        maps = gaussian_blur(maps.float(), self.cfg.sigma)
        return AnomalyOutput(anomaly_map=maps, score=maps.flatten(1).amax(1))

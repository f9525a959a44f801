"""What the metrics are computed from: a test split's scores, maps and masks, gathered on one device."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Predictions:
    """Everything the metrics need, gathered on one device.

    Attributes:
        scores: ``N`` image scores. labels: ``N`` image labels.
        maps: ``N×H×W`` anomaly maps. masks: ``N×H×W`` bool ground truth.
        mask_valid: ``N`` bool, False for anomalous images that have no mask file.
        paths: ``N`` image paths. defects: ``N`` defect types (the test sub-folders; empty when unknown).
    """

    scores: torch.Tensor
    labels: torch.Tensor
    maps: torch.Tensor
    masks: torch.Tensor
    mask_valid: torch.Tensor
    paths: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)

"""A model trained on tiles (``data.tile_size``) applied to whole images: each image is cut into the tiles of
:class:`~anomalib_lite.data.tiling.Tiling`, the model predicts them, and their maps are stitched back into a
whole-image map (image score: the maximum over its tiles; see :mod:`anomalib_lite.data.tiling` for the rules)."""

from __future__ import annotations

import torch

from anomalib_lite.data.tiling import Tiling
from anomalib_lite.models import AnomalyModel
from anomalib_lite.models.base import AnomalyOutput


class TiledModel(AnomalyModel):
    """``model`` (trained on ``tiling.tile_size`` px tiles) predicting ``tiling.image_size`` px images.

    Args:
        model: the trained model. tiling: the grid it was trained on.
        chunk: tiles per call of ``model.predict`` (all of a batch's tiles when ``None``, and when traced for export).
    """

    def __init__(self, model: AnomalyModel, tiling: Tiling, chunk: int | None = None) -> None:
        super().__init__()
        self.model, self.tiling, self.chunk = model, tiling, chunk

    def predict(self, image: torch.Tensor) -> AnomalyOutput:
        """``B×C×S×S`` normalised images → ``B×S×S`` stitched maps and ``B`` scores (the maximum over tiles)."""
        tiles = self.tiling.cut(image)
        parts = [tiles] if self.chunk is None or torch.jit.is_tracing() else tiles.split(self.chunk)
        outputs = [self.model.predict(part) for part in parts]
        maps = torch.cat([out.anomaly_map for out in outputs])
        scores = torch.cat([out.score for out in outputs])
        return AnomalyOutput(self.tiling.stitch(maps), self.tiling.image_scores(scores))

    def intermediates(self, image: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The model's intermediate images of each tile, stitched like the maps (``B×3×S×S``), or ``None``."""
        tiles = self.tiling.cut(image)
        shown = self.model.intermediates(tiles)
        return None if shown is None else {name: self.tiling.stitch(value) for name, value in shown.items()}

    def reported_metrics(self) -> dict:
        """The wrapped model's (see :meth:`AnomalyModel.reported_metrics`)."""
        return self.model.reported_metrics()

    def export_refusal(self) -> str | None:
        """The wrapped model's (see :meth:`AnomalyModel.export_refusal`)."""
        return self.model.export_refusal()


def tiled(model: AnomalyModel, tiling: Tiling | None, chunk: int | None = None) -> AnomalyModel:
    """``model`` itself without tiling, else a :class:`TiledModel` that predicts whole images tile by tile."""
    return model if tiling is None else TiledModel(model, tiling, chunk)

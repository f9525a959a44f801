"""Tiling (``data.tile_size``): whole images cut into square tiles of the model's input side, and the tiles' maps
stitched back into whole-image maps before evaluation.

With ``data.image_size=S`` (the side the whole image is decoded at) and ``data.tile_size=T`` (the model's input
side), every rule here is *choice*:

- **Grid**: per side, the fewest tiles of side ``T`` that cover ``S`` with neighbours overlapping by at least
  ``data.tile_overlap=O`` px, ``n = ceil((S - O) / (T - O))`` (1 when ``T == S``), placed evenly from 0 to
  ``S - T``: tile ``i`` starts at ``round(i (S - T) / (n - 1))``. The grid is the same on both axes (``n²``
  tiles per image, in row-major order).
- **Stitching**: each pixel of the whole map is taken from the tile whose centre is nearest to it, per axis (a tie
  goes to the earlier tile). A tile's own borders, where a convolutional map is least reliable, are then used
  only at the image's borders, and stitching the tiles of a map gives that map back exactly (no averaging).
- **Image score**: the maximum of its tiles' scores (an image is as anomalous as its most anomalous tile).
- **Training**: every tile of every training image is a training image of the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tiling:
    """The tile grid of square ``image_size`` images.

    Attributes:
        image_size: side of the whole image (``data.image_size``). tile_size: side of a tile (``data.tile_size``).
        overlap: the least overlap of neighbouring tiles, in pixels (``data.tile_overlap``).
    Raises:
        ValueError: naming the option, for a tile larger than the image or an overlap outside ``[0, tile_size)``.
    """

    image_size: int
    tile_size: int
    overlap: int = 0

    def __post_init__(self) -> None:
        if not 32 <= self.tile_size <= self.image_size:
            raise ValueError(
                f"data.tile_size={self.tile_size} must be between 32 and data.image_size={self.image_size}"
            )
        if not 0 <= self.overlap < self.tile_size:
            raise ValueError(f"data.tile_overlap={self.overlap} must be in [0, data.tile_size={self.tile_size})")

    @property
    def positions(self) -> list[int]:
        """Where the tiles start along one side, first 0 and last ``image_size - tile_size``."""
        span, stride = self.image_size - self.tile_size, self.tile_size - self.overlap
        n = 1 if span == 0 else math.ceil((self.image_size - self.overlap) / stride)
        return [0] if n == 1 else [round(i * span / (n - 1)) for i in range(n)]

    @property
    def per_image(self) -> int:
        """Tiles per image (``n²``)."""
        return len(self.positions) ** 2

    def cut(self, x: torch.Tensor) -> torch.Tensor:
        """``B×…×S×S`` → the tiles ``(B·n²)×…×T×T``, image ``b``'s at rows ``b·n² … (b+1)·n² - 1`` (row-major)."""
        self._check_side(x, self.image_size, "image")
        t = self.tile_size
        tiles = [x[..., y : y + t, x0 : x0 + t] for y in self.positions for x0 in self.positions]
        return torch.stack(tiles, 1).flatten(0, 1)

    def stitch(self, tiles: torch.Tensor) -> torch.Tensor:
        """The tiles of :meth:`cut` (``(B·n²)×…×T×T``) → whole maps ``B×…×S×S``, each pixel from the tile whose
        centre is nearest (see the module's rules)."""
        self._check_side(tiles, self.tile_size, "tile")
        n = len(self.positions)
        if tiles.shape[0] % (n * n):
            raise ValueError(f"{tiles.shape[0]} tiles are not a whole number of images of {n * n} tiles")
        owner, offset = self._owners(tiles.device)
        rest = tiles.shape[1:-2]
        grid = tiles.reshape(-1, n, n, math.prod(rest), self.tile_size, self.tile_size)
        rows = grid[:, owner, :, :, offset, :]  # advanced indices apart: S(y) × B × n × R × T
        whole = rows[:, :, owner, :, offset]  # S(x) × S(y) × B × R
        return whole.permute(2, 3, 1, 0).reshape(-1, *rest, self.image_size, self.image_size)

    def image_scores(self, tile_scores: torch.Tensor) -> torch.Tensor:
        """``B·n²`` tile scores → ``B`` image scores, the maximum over each image's tiles."""
        return tile_scores.reshape(-1, self.per_image).amax(1)

    def _owners(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per pixel of a side: the tile it is taken from (nearest centre) and its offset inside that tile."""
        starts = torch.tensor(self.positions, dtype=torch.float64)
        centres = starts + self.tile_size / 2
        pixels = torch.arange(self.image_size, dtype=torch.float64) + 0.5
        owner = (pixels[:, None] - centres[None, :]).abs().argmin(1)  # argmin keeps the first of equal distances
        offset = torch.arange(self.image_size) - starts[owner].long()
        return owner.to(device), offset.to(device)

    @staticmethod
    def _check_side(x: torch.Tensor, side: int, what: str) -> None:
        if x.dim() < 3 or x.shape[-2:] != (side, side):
            raise ValueError(f"expected {what}s of {side}×{side} px in the last two dimensions, got {tuple(x.shape)}")

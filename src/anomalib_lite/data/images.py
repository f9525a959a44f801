"""Reading images and masks of any common mode into fixed-size uint8 arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from anomalib_lite.errors import DataError
from anomalib_lite.normalisation import IMAGENET_MEAN, IMAGENET_STD

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from exc
    return image


def _to_unit_range(image: Image.Image) -> np.ndarray:
    """A single-band image of any bit depth (1, 8, 16, 32-bit int or float) as float in [0, 1]."""
    array = np.asarray(image, dtype=np.float64)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return array / 65535.0
    if image.mode in ("I", "F"):
        top = array.max()
        # 16-bit PNGs open as mode "I"; scale by the bit depth the values need.
        return array / (65535.0 if top > 255 else 255.0) if top > 1 else array
    return array / 255.0


def read_image(path: Path, size: int) -> np.ndarray:
    """Read an image and resize it to ``size×size``.

    Grey, palette, RGBA (alpha dropped), CMYK and 16-bit images are all turned into RGB.

    Returns:
        ``size×size×3`` uint8.
    Raises:
        DataError: naming the file, when it cannot be decoded (e.g. truncated).
    """
    image = _open(path)
    if image.mode.startswith("I") or image.mode == "F":
        grey = (np.clip(_to_unit_range(image), 0, 1) * 255).round().astype(np.uint8)
        image = Image.fromarray(grey)
    image = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def read_mask(path: Path, size: int) -> np.ndarray:
    """Read a ground-truth mask, resize it (nearest) to ``size×size`` and binarise at 0.5.

    Masks of another size than their image, with colour or alpha, or 16-bit are handled.

    Returns:
        ``size×size`` bool.
    """
    image = _open(path)
    if image.mode not in ("L", "F") and not image.mode.startswith("I"):
        image = image.convert("L")
    unit = _to_unit_range(image).astype(np.float32)
    resized = Image.fromarray(unit).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized) > 0.5


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """``B×H×W×C`` (or ``H×W×C``) uint8 → ImageNet-normalised float ``B×C×H×W`` (or ``C×H×W``).

    ``C`` is 3 (RGB) or 1 (grey, normalised with the channel means of the ImageNet statistics).
    """
    x = images.movedim(-1, -3).float() / 255.0
    if x.shape[-3] == 1:
        return (x - _MEAN.mean()) / _STD.mean()
    return (x - _MEAN) / _STD

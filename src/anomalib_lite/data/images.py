"""Reading images and masks of any common mode into fixed-size uint8 arrays."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

from anomalib_lite.data.normalisation import IMAGENET_MEAN, IMAGENET_STD
from anomalib_lite.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)

log = logging.getLogger(__name__)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


_KINDS = {
    stat.S_ISDIR: "a directory",
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISSOCK: "a socket",
    stat.S_ISCHR: "a device",
    stat.S_ISBLK: "a device",
}


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file (or a link to one), never blocking.

    A FIFO opened for reading waits for a writer (a run would hang) and a device may stream without end:
    the file is opened non-blocking and checked with ``fstat`` on that descriptor (no race with a swap of
    the name), then refused or handed back as a binary file.

    Returns:
        the open file (the caller closes it).
    Raises:
        DataError: naming the file and what it is, when it is not a regular file; OSError when it cannot be opened.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _KINDS.items() if test(mode)), "a special file")
        raise DataError(f"{path}: {kind}, not an image file; not read")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _open(path: Path) -> Image.Image:
    """Decode ``path`` fully, turned upright by its EXIF orientation (as image viewers show it).

    *choice*: an image over Pillow's ``Image.MAX_IMAGE_PIXELS`` but under twice that (Pillow's
    ``DecompressionBombWarning``) is read, with a warning naming it: a dataset's high-resolution
    photographs are legitimate input; beyond twice the limit Pillow refuses it like any broken file.

    Raises:
        DataError: naming the file, for every decoding failure, and for a file that is not a regular
            file (a FIFO, a device: :func:`open_regular`), refused before it is read.
    """
    try:
        with open_regular(path) as file:
            image = Image.open(file)
            if Image.MAX_IMAGE_PIXELS is not None and image.width * image.height > Image.MAX_IMAGE_PIXELS:
                log.warning("%s: %d×%d pixels, over Pillow's MAX_IMAGE_PIXELS; read anyway", path, *image.size)
            image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return image
    except DataError:
        raise
    # Pillow's decoders fail with many types (OSError when truncated, SyntaxError for a broken PNG
    # chunk, DecompressionBombError, struct.error, EOFError, ...): each one means this file is unreadable.
    except Exception as exc:
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc


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


def mask_values(image: Image.Image) -> np.ndarray:
    """One value per pixel, unscaled: the grey level (alpha dropped), or the brightest channel of a colour
    or palette mask (a red-on-black mask counts like a white one)."""
    if image.mode == "1":
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("LA", "La"):
        image = image.getchannel("L")
    if len(image.getbands()) > 1 or image.mode == "P":
        return np.asarray(image.convert("RGB")).max(axis=2)
    return np.asarray(image)


def mask_foreground(values: np.ndarray) -> np.ndarray:
    """Which pixels of a mask's values (``H×W``, any integer or float dtype) are foreground.

    *choice*, so that label images and drawn masks are both read as their authors meant:

    - a mask with a single positive value (``{0, v}``: 0/1 or 0/255 in 8 or 16 bits, 0/65535, ...):
      every positive pixel;
    - an integer mask whose maximum is at most half its range (a label image of class ids 1, 2, ...,
      whatever the bit depth): every positive pixel;
    - otherwise (anti-aliased or JPEG-compressed 0–255 masks, graded 16-bit masks, float maps): pixels
      above half the range, i.e. > 127 for 0–255. The range is the smallest of 1 (floats only), 255
      and 65535 that holds the maximum, so 8-bit values stored in a 16-bit file keep the > 127 rule.

    Returns:
        ``H×W`` bool.
    """
    positive = values > 0
    if not positive.any():
        return positive
    top = values.max()
    full = 1.0 if values.dtype.kind == "f" and top <= 1 else next((r for r in (255, 65535) if top <= r), top)
    levels = values[positive]
    if levels.min() == levels.max() or (values.dtype.kind != "f" and top <= full // 2):
        return positive
    return values > full / 2


def mask_pixels(path: Path) -> np.ndarray:
    """A ground-truth mask at its own size, binarised (see :func:`mask_foreground`).

    ``path`` may be a folder of masks (MVTec LOCO AD: one file per defect region of an image): their union,
    every image file in it counting (all must have the same size).

    Returns:
        ``H×W`` bool.
    Raises:
        DataError: naming the file, when it cannot be decoded; naming the folder, when it holds no mask or masks
            of different sizes.
    """
    if not path.is_dir():
        return mask_foreground(mask_values(_open(path)))
    parts = [mask_pixels(file) for file in list_images(path)]
    if not parts:
        raise DataError(f"{path}: a mask folder without any mask image")
    if len({part.shape for part in parts}) > 1:
        sizes = ", ".join(sorted({f"{p.shape[1]}×{p.shape[0]}" for p in parts}))
        raise DataError(f"{path}: its masks have different sizes ({sizes}); they cannot be merged")
    return np.logical_or.reduce(parts)


def read_mask(path: Path, size: int) -> np.ndarray:
    """Read a ground-truth mask (or a folder of masks, merged: see :func:`mask_pixels`), binarise it (see
    :func:`mask_foreground`) and resize it (nearest) to ``size×size``.

    Masks of another size than their image, grey, colour, palette, with alpha, 1, 8, 16 or 32-bit are handled.

    Returns:
        ``size×size`` bool.
    Raises:
        DataError: naming the file, when it cannot be decoded.
    """
    foreground = mask_pixels(path)
    resized = Image.fromarray(foreground.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized) > 0


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """``B×H×W×C`` (or ``H×W×C``) uint8 → ImageNet-normalised float ``B×C×H×W`` (or ``C×H×W``).

    ``C`` is 3 (RGB) or 1 (grey, normalised with the channel means of the ImageNet statistics).
    The result is contiguous, computed in place (the same operations in the same order: the same values);
    it runs per training image and batch, where the copies it spares are a few % of a cached step.
    """
    return normalise(images.movedim(-1, -3).float().contiguous().div_(255.0), in_place=True)


def normalise(x: torch.Tensor, *, in_place: bool = False) -> torch.Tensor:
    """Float images in [0, 1], ``…×C×H×W`` (``C`` 3 or 1, as :func:`to_model_input`) → ImageNet-normalised.

    ``in_place=True`` overwrites ``x`` (a tensor the caller owns) instead of allocating the result.
    """
    mean, std = _MEAN.to(x), _STD.to(x)
    if x.shape[-3] == 1:
        mean, std = mean.mean(), std.mean()
    return x.sub_(mean).div_(std) if in_place else (x - mean) / std

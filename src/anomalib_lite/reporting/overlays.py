"""Heat-map overlays of anomaly maps, written as PNG files (atomically: a full disk leaves no partial file).

Colours: matplotlib's perceptually uniform ``inferno`` map (the ``plots`` extra); without matplotlib, a
piecewise-linear copy of it from 17 anchors sampled from matplotlib (within 7/255 per channel), named as such
(:attr:`ColourMap.name`) wherever a figure says which colours it uses. Outlines are two-tone (a light core line
inside a black rim), so they stay visible on any image: white for the ground truth, and for the predicted mask the
colour of a small palette farthest from every colour of the map (cyan for inferno).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anomalib_lite.files import write_atomically

COLOUR_MAP = "inferno"  # choice: perceptually uniform, dark → bright, readable in grey print
# matplotlib's inferno at 0, 1/16, …, 1 (RGB 0–255): the fallback without matplotlib.
_INFERNO_ANCHORS = np.array(
    [
        [0, 0, 4], [11, 7, 36], [33, 12, 74], [61, 9, 101], [87, 16, 110], [113, 25, 110], [138, 34, 106],
        [163, 44, 97], [188, 55, 84], [210, 70, 68], [228, 90, 49], [241, 115, 29], [249, 142, 9], [252, 172, 17],
        [249, 203, 53], [242, 234, 105], [252, 255, 164],
    ],
    float,
)  # fmt: skip
# Candidate colours of the predicted-mask outline.
_OUTLINE_PALETTE = np.array([[0, 255, 255], [255, 0, 255], [0, 255, 0], [0, 128, 255], [255, 255, 255]], float)
GROUND_TRUTH_COLOUR = (255, 255, 255)
RIM_COLOUR = (0, 0, 0)


@dataclass(frozen=True)
class ColourMap:
    """The colours of the heat maps.

    Attributes:
        name: what a figure calls it (e.g. ``inferno (matplotlib)``). table: ``256×3`` uint8, low → high.
        outline: the RGB colour of the predicted-mask outline (far from every colour of ``table``).
    """

    name: str
    table: np.ndarray
    outline: tuple[int, int, int]


def _interpolate(anchors: np.ndarray, n: int = 256) -> np.ndarray:
    position = np.linspace(0, 1, n) * (len(anchors) - 1)
    low = np.floor(position).astype(int).clip(0, len(anchors) - 2)
    frac = (position - low)[:, None]
    return ((1 - frac) * anchors[low] + frac * anchors[low + 1]).round().astype(np.uint8)


@functools.cache
def colour_map(name: str = COLOUR_MAP) -> ColourMap:
    """matplotlib's colour map ``name`` as a 256-entry table (``matplotlib.colormaps``), or, without matplotlib,
    the inferno fallback (whatever ``name``; its :attr:`ColourMap.name` says so).

    Raises:
        KeyError: matplotlib has no colour map ``name``.
    """
    try:
        import matplotlib
    except ImportError:
        table = _interpolate(_INFERNO_ANCHORS)
        label = "inferno, piecewise-linear approximation (matplotlib not installed)"
    else:
        table = (matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
        label = f"{name} (matplotlib)"
    distance = np.linalg.norm(_OUTLINE_PALETTE[:, None] - table[None].astype(float), axis=2).min(1)
    outline = tuple(int(c) for c in _OUTLINE_PALETTE[int(distance.argmax())])
    return ColourMap(label, table, outline)


def colorize(values: np.ndarray, cmap: ColourMap | None = None) -> np.ndarray:
    """Map values in [0, 1] (any shape ``S``; clipped) to ``S×3`` uint8 colours of ``cmap`` (default
    :func:`colour_map`)."""
    table = (cmap or colour_map()).table
    return table[(np.clip(np.nan_to_num(values), 0, 1) * 255).round().astype(int)]


def resize_map(anomaly_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``h×w`` float map → ``H×W`` float32 (bilinear) for ``size = (W, H)``."""
    return np.asarray(Image.fromarray(anomaly_map.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))


def heat_map(anomaly_map: np.ndarray, size: tuple[int, int], vmin: float, vmax: float) -> np.ndarray:
    """``h×w`` map → ``H×W×3`` uint8 colours on the scale ``[vmin, vmax]``, resized (bilinear) to ``size = (W, H)``."""
    return colorize((resize_map(anomaly_map, size) - vmin) / max(vmax - vmin, 1e-12))


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool ``H×W`` mask."""
    padded = np.pad(mask, 1, mode="edge")
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def draw_outline(pixels: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """``pixels`` (``H×W×3`` uint8, changed in place and returned) with the two-tone outline of the bool ``H×W``
    ``mask``: ``colour`` on its boundary pixels, :data:`RIM_COLOUR` on the pixels just outside it."""
    pixels[mask_outline(~mask)] = RIM_COLOUR
    pixels[mask_outline(mask)] = colour
    return pixels


def overlay_panel(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    mask: np.ndarray | None,
    vmin: float,
    vmax: float,
    pixel_threshold: float | None = None,
) -> np.ndarray:
    """Input | input + ground-truth outline | heat map blended on the input (+ predicted-mask outline), side by side.

    Args:
        image: ``H×W×3`` uint8. anomaly_map: ``h×w`` float (resized bilinearly to ``H×W``).
        mask: ``H×W`` bool or ``None``. vmin, vmax: the colour scale (shared by all panels of a category).
        pixel_threshold: outline, on the heat map, the pixels whose resized map value is ≥ it (the predicted
            mask); ``None``: no predicted outline.
    Returns:
        ``H×3W×3`` uint8.
    """
    size = image.shape[:2][::-1]
    values = resize_map(anomaly_map, size)
    blended = (0.55 * image + 0.45 * colorize((values - vmin) / max(vmax - vmin, 1e-12))).astype(np.uint8)
    if pixel_threshold is not None:
        draw_outline(blended, values >= pixel_threshold, colour_map().outline)
    outlined = image.copy()
    if mask is not None:
        draw_outline(outlined, mask, GROUND_TRUTH_COLOUR)
    return np.concatenate([image, outlined, blended], axis=1)


def colour_bar(cmap: ColourMap | None = None, width: int = 256, height: int = 14) -> np.ndarray:
    """A ``height×width×3`` uint8 strip of the colour map, low (left) to high (right)."""
    return np.repeat(colorize(np.linspace(0, 1, width), cmap)[None], height, axis=0)


def sample_indices(labels: torch.Tensor, count: int) -> list[int]:
    """Up to ``count`` test images, half of them anomalous where possible, evenly spaced in each group
    (so every defect folder is represented)."""
    labels = labels.cpu()
    anomalous = torch.nonzero(labels == 1).flatten()
    normal = torch.nonzero(labels == 0).flatten()
    n_anomalous = min(len(anomalous), max(count - len(normal), (count + 1) // 2))
    n_normal = min(len(normal), count - n_anomalous)
    return [
        int(pool[i])
        for pool, k in ((anomalous, n_anomalous), (normal, n_normal))
        for i in torch.linspace(0, len(pool) - 1, k).round().long()
    ]


def save_png(pixels: np.ndarray, path: Path) -> Path:
    """Write the ``H×W×3`` uint8 image ``pixels`` as the PNG ``path``, atomically (see
    :func:`~anomalib_lite.files.write_atomically`: an earlier file is kept whole when the write fails)."""
    image = Image.fromarray(pixels)
    write_atomically(path, lambda file: image.save(file, format="PNG"))
    return path


def file_name(path: str) -> str:
    """The overlay file stem of a test image: ``<its folder>_<its stem>`` (``.../hole/001.png`` → ``hole_001``)."""
    source = Path(path)
    return f"{source.parent.name}_{source.stem}"


def save_overlays(
    images: torch.Tensor,
    maps: torch.Tensor,
    masks: torch.Tensor,
    paths: list[str],
    chosen: list[int],
    out_dir: Path,
    pixel_threshold: float | None = None,
) -> list[Path]:
    """Write an overlay panel (see :func:`overlay_panel`) for each chosen test image, all on one colour scale:
    the min and max of every map in ``maps``.

    Args:
        images: ``N×H×W×C`` uint8 (C 3, or 1 for grey). maps: ``N×h×w``. masks: ``N×H×W`` bool.
        paths: the images' source paths (names the PNGs, see :func:`file_name`). chosen: indices to draw
            (e.g. from :func:`sample_indices`). out_dir: destination folder.
        pixel_threshold: outline the predicted mask (map ≥ it); ``None``: no predicted outline.
    Returns:
        The written files.
    """
    if not chosen:
        return []
    maps = maps.float().cpu()
    vmin, vmax = float(maps.min()), float(maps.max())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i in chosen:
        image = np.broadcast_to(images[i].numpy(), (*images.shape[1:3], 3)).copy()
        panel = overlay_panel(image, maps[i].numpy(), masks[i].cpu().numpy(), vmin, vmax, pixel_threshold)
        written.append(save_png(panel, out_dir / f"{file_name(paths[i])}.png"))
    return written


def save_stages(
    stages: dict[str, torch.Tensor],
    maps: torch.Tensor,
    paths: list[str],
    out_dir: Path,
    scale: tuple[float, float] | None = None,
) -> list[Path]:
    """Write a model's intermediate images and its map side by side, one PNG per image.

    Args:
        stages: name → ``B×3×H×W`` images in [0, 1] (e.g. input, impression, reconstruction),
            drawn left to right in this order. maps: ``B×h×w``, drawn last, coloured on the scale
            ``scale = (vmin, vmax)`` (default: these maps' min and max).
        paths: the images' source paths (names the PNGs, suffixed ``_stages``).
    Returns:
        The written files.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    maps = maps.float().cpu()
    vmin, vmax = scale or (float(maps.min()), float(maps.max()))
    written = []
    for b, path in enumerate(paths):
        tiles = [
            (t[b].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
            for t in stages.values()
        ]
        size = tiles[0].shape[:2][::-1]
        tiles.append(heat_map(maps[b].numpy(), size, vmin, vmax))
        written.append(save_png(np.concatenate(tiles, axis=1), out_dir / f"{file_name(path)}_stages.png"))
    return written

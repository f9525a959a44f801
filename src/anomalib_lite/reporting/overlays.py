"""Heat-map overlays of anomaly maps, written as PNG files (atomically: a full disk leaves no partial file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anomalib_lite.files import write_atomically

# A perceptual blue → cyan → yellow → red ramp (anchor colours of the "jet" map).
_ANCHORS = np.array([[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]], float)


def colorize(values: np.ndarray) -> np.ndarray:
    """Map ``H×W`` values in [0, 1] to ``H×W×3`` uint8 colours."""
    position = np.clip(values, 0, 1) * (len(_ANCHORS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (position - low)[..., None]
    return ((1 - frac) * _ANCHORS[low] + frac * _ANCHORS[low + 1]).astype(np.uint8)


def heat_map(anomaly_map: np.ndarray, size: tuple[int, int], vmin: float, vmax: float) -> np.ndarray:
    """``h×w`` map → ``H×W×3`` uint8 colours on the scale ``[vmin, vmax]``, resized (bilinear) to ``size = (W, H)``."""
    scaled = (anomaly_map - vmin) / max(vmax - vmin, 1e-12)
    return np.asarray(Image.fromarray(colorize(scaled)).resize(size, Image.Resampling.BILINEAR))


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool ``H×W`` mask."""
    padded = np.pad(mask, 1, mode="edge")
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def overlay_panel(image: np.ndarray, anomaly_map: np.ndarray, mask: np.ndarray | None, vmin: float, vmax: float):
    """Input | input + ground-truth outline | heat map blended on the input, side by side.

    Args:
        image: ``H×W×3`` uint8. anomaly_map: ``h×w`` float (resized to ``H×W``).
        mask: ``H×W`` bool or ``None``. vmin, vmax: the colour scale (shared by all panels of a run).
    Returns:
        ``H×3W×3`` uint8.
    """
    size = image.shape[:2][::-1]
    heat = heat_map(anomaly_map, size, vmin, vmax)
    blended = (0.55 * image + 0.45 * heat).astype(np.uint8)
    outlined = image.copy()
    if mask is not None:
        outlined[mask_outline(mask)] = (0, 255, 0)
    return np.concatenate([image, outlined, blended], axis=1)


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


def _file_name(path: str) -> str:
    source = Path(path)
    return f"{source.parent.name}_{source.stem}"


def save_overlays(
    images: torch.Tensor,
    maps: torch.Tensor,
    masks: torch.Tensor,
    paths: list[str],
    chosen: list[int],
    out_dir: Path,
) -> list[Path]:
    """Write an overlay panel (see :func:`overlay_panel`) for each chosen test image.

    Args:
        images: ``N×H×W×C`` uint8 (C 3, or 1 for grey). maps: ``N×h×w``. masks: ``N×H×W`` bool.
        paths: the images' source paths (names the PNGs). chosen: indices to draw
            (e.g. from :func:`sample_indices`). out_dir: destination folder.
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
        panel = overlay_panel(image, maps[i].numpy(), masks[i].cpu().numpy(), vmin, vmax)
        written.append(save_png(panel, out_dir / f"{_file_name(paths[i])}.png"))
    return written


def save_stages(stages: dict[str, torch.Tensor], maps: torch.Tensor, paths: list[str], out_dir: Path) -> list[Path]:
    """Write a model's intermediate images and its map side by side, one PNG per image.

    Args:
        stages: name → ``B×3×H×W`` images in [0, 1] (e.g. input, impression, reconstruction),
            drawn left to right in this order. maps: ``B×h×w``, coloured on one scale and drawn last.
        paths: the images' source paths (names the PNGs, suffixed ``_stages``).
    Returns:
        The written files.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    maps = maps.float().cpu()
    vmin, vmax = float(maps.min()), float(maps.max())
    written = []
    for b, path in enumerate(paths):
        tiles = [
            (t[b].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
            for t in stages.values()
        ]
        size = tiles[0].shape[:2][::-1]
        tiles.append(heat_map(maps[b].numpy(), size, vmin, vmax))
        written.append(save_png(np.concatenate(tiles, axis=1), out_dir / f"{_file_name(path)}_stages.png"))
    return written

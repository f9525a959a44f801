"""Heat-map overlays of anomaly maps, written as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

# A perceptual blue → cyan → yellow → red ramp (anchor colours of the "jet" map).
_ANCHORS = np.array([[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]], float)


def colorize(values: np.ndarray) -> np.ndarray:
    """Map ``H×W`` values in [0, 1] to ``H×W×3`` uint8 colours."""
    position = np.clip(values, 0, 1) * (len(_ANCHORS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (position - low)[..., None]
    return ((1 - frac) * _ANCHORS[low] + frac * _ANCHORS[low + 1]).astype(np.uint8)


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
    scaled = (anomaly_map - vmin) / max(vmax - vmin, 1e-12)
    heat = np.asarray(Image.fromarray(colorize(scaled)).resize(size, Image.Resampling.BILINEAR))
    blended = (0.55 * image + 0.45 * heat).astype(np.uint8)
    outlined = image.copy()
    if mask is not None:
        outlined[mask_outline(mask)] = (0, 255, 0)
    return np.concatenate([image, outlined, blended], axis=1)


def save_overlays(
    images: torch.Tensor,
    maps: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    paths: list[str],
    out_dir: Path,
    count: int,
) -> list[Path]:
    """Write overlays for up to ``count`` test images, half of them anomalous where possible.

    Args:
        images: ``N×H×W×3`` uint8. maps: ``N×h×w``. masks: ``N×H×W`` bool. labels: ``N``.
        paths: the images' source paths (names the PNGs). out_dir: destination folder.
    Returns:
        The written files.
    """
    labels = labels.cpu()
    anomalous = torch.nonzero(labels == 1).flatten()
    normal = torch.nonzero(labels == 0).flatten()
    n_anomalous = min(len(anomalous), max(count - len(normal), (count + 1) // 2))
    n_normal = min(len(normal), count - n_anomalous)
    # Evenly spaced picks, so that every defect folder is represented.
    chosen = [
        int(pool[i])
        for pool, k in ((anomalous, n_anomalous), (normal, n_normal))
        for i in torch.linspace(0, len(pool) - 1, k).round().long()
    ]
    if not chosen:
        return []
    maps = maps.float().cpu()
    vmin, vmax = float(maps.min()), float(maps.max())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i in chosen:
        panel = overlay_panel(images[i].numpy(), maps[i].numpy(), masks[i].cpu().numpy(), vmin, vmax)
        source = Path(paths[i])
        target = out_dir / f"{source.parent.name}_{source.stem}.png"
        Image.fromarray(panel).save(target)
        written.append(target)
    return written

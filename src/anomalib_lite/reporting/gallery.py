"""The gallery of a category: the test images a researcher debugs from, drawn as overlays in ``maps/<category>/``
and described in ``maps/<category>/gallery.json`` (read by ``report.html``).

Three groups (an image in several is drawn once):

- ``false_positives``: the highest-scoring normal images, highest first: the false positives at the image
  threshold, then the normal images closest to it;
- ``false_negatives``: the lowest-scoring anomalous images, lowest first;
- ``sample``: the evenly spaced sample of :func:`~anomalib_lite.reporting.overlays.sample_indices`.

``eval.n_maps`` sizes the sample; each worst-case group holds ``ceil(n_maps / 2)`` images (choice).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from anomalib_lite.files import write_atomically
from anomalib_lite.metrics.predictions import Predictions
from anomalib_lite.reporting.overlays import (
    colour_bar,
    colour_map,
    sample_indices,
    save_overlays,
    save_png,
    save_stages,
)

GALLERY_FILE = "gallery.json"
COLOUR_BAR_FILE = "colorbar.png"
# Group key → its heading in the report.
GROUPS = {
    "false_positives": "Highest-scoring normal images (false positives first)",
    "false_negatives": "Lowest-scoring anomalous images (false negatives first)",
    "sample": "Sample (evenly spaced over the test images; those shown above are left out)",
}


def worst_count(n_maps: int) -> int:
    """Images in each worst-case group for a sample of ``n_maps`` (choice: half of it, rounded up)."""
    return math.ceil(n_maps / 2)


def worst_indices(scores: torch.Tensor, labels: torch.Tensor, count: int) -> tuple[list[int], list[int]]:
    """The ``count`` highest-scoring normal images (label 0), highest first, and the ``count`` lowest-scoring
    anomalous ones (label 1), lowest first; ties in test-set order.

    Args:
        scores: ``N`` image scores. labels: ``N`` labels in {0, 1}.
    Returns:
        Their indices into the test set.
    """
    values, flags = scores.double().cpu().tolist(), labels.cpu().tolist()
    normal = sorted((i for i, f in enumerate(flags) if f == 0), key=lambda i: -values[i])
    anomalous = sorted((i for i, f in enumerate(flags) if f == 1), key=lambda i: values[i])
    return normal[:count], anomalous[:count]


def image_label(pred: Predictions, i: int) -> str:
    """Image ``i``'s label as the report shows it: its defect type (``good`` for normal images), or
    ``good``/``anomalous`` when the dataset names no defect types."""
    if pred.defects:
        return pred.defects[i]
    return "anomalous" if int(pred.labels[i]) else "good"


def predicted_label(score: float, threshold: float | None) -> str | None:
    """``anomalous`` for ``score ≥ threshold`` (the metrics' convention), else ``good``; ``None`` without one."""
    if threshold is None:
        return None
    return "anomalous" if score >= threshold else "good"


def save_gallery(
    images: torch.Tensor,
    masks: torch.Tensor,
    pred: Predictions,
    metrics: dict[str, Any],
    n_maps: int,
    out_dir: Path,
    intermediates: Callable[[list[int]], dict[str, torch.Tensor] | None] | None = None,
) -> list[Path]:
    """Draw a category's gallery into ``out_dir``: an overlay per image (see
    :func:`~anomalib_lite.reporting.overlays.save_overlays`; the predicted mask outlined at ``metrics``'
    ``pixel_threshold`` when it has one), the model's stages where it has some (``<name>_stages.png``),
    ``colorbar.png`` and ``gallery.json`` (the colour map's name, the scale ``vmin``/``vmax``, both thresholds, the
    predicted-mask outline colour, the stage tile names, and per group its images: ``file``, ``stages``, ``path``,
    ``score``, ``label``, ``anomalous``, ``predicted``).

    Args:
        images: ``N×H×W×C`` uint8 test images. masks: ``N×H×W`` bool ground truth.
        pred: the predictions of these images (scores, labels, ``N×h×w`` maps, paths, defect types).
        metrics: the category's metrics (``image_threshold``, and ``pixel_threshold`` where recorded).
        n_maps: the sample size (``eval.n_maps``); 0 draws nothing.
        intermediates: test-set indices → the model's intermediate images of them (``name → B×3×H×W`` in [0, 1]),
            or ``None`` when it has none.
    Returns:
        The overlay files (not the stages nor the colour bar).
    """
    if n_maps <= 0 or len(pred.labels) == 0:
        return []
    sample = sample_indices(pred.labels, n_maps)
    highest_normal, lowest_anomalous = worst_indices(pred.scores, pred.labels, worst_count(n_maps))
    groups = {"false_positives": highest_normal, "false_negatives": lowest_anomalous, "sample": sample}
    chosen = list(dict.fromkeys(highest_normal + lowest_anomalous + sample))
    image_threshold, pixel_threshold = metrics.get("image_threshold"), metrics.get("pixel_threshold")
    maps = pred.maps.float().cpu()
    vmin, vmax = float(maps.min()), float(maps.max())
    overlays = save_overlays(images, maps, masks, pred.paths, chosen, out_dir, pixel_threshold)
    stages = intermediates(chosen) if intermediates else None
    stage_files = (
        save_stages(stages, maps[chosen], [pred.paths[i] for i in chosen], out_dir, (vmin, vmax)) if stages else []
    )
    cmap = colour_map()
    save_png(colour_bar(cmap), out_dir / COLOUR_BAR_FILE)
    scores = pred.scores.double().cpu().tolist()
    entries = {
        i: {
            "file": overlays[j].name,
            "stages": stage_files[j].name if stage_files else None,
            "path": pred.paths[i],
            "score": scores[i],
            "label": image_label(pred, i),
            "anomalous": bool(int(pred.labels[i])),
            "predicted": predicted_label(scores[i], image_threshold),
        }
        for j, i in enumerate(chosen)
    }
    gallery = {
        "colour_map": cmap.name,
        "colour_bar": COLOUR_BAR_FILE,
        "predicted_outline": list(cmap.outline),
        "vmin": vmin,
        "vmax": vmax,
        "image_threshold": image_threshold,
        "pixel_threshold": pixel_threshold,
        "stage_tiles": [*stages, "anomaly map"] if stages else None,
        "groups": {name: [entries[i] for i in indices] for name, indices in groups.items()},
    }
    text = json.dumps(gallery, indent=1).encode()
    write_atomically(out_dir / GALLERY_FILE, lambda file: file.write(text))
    return overlays


def read_gallery(folder: Path) -> dict[str, Any] | None:
    """A category's ``gallery.json`` (see :func:`save_gallery`) in ``folder``, or ``None`` when absent."""
    path = folder / GALLERY_FILE
    return json.loads(path.read_text()) if path.is_file() else None

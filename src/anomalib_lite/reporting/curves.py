"""Curve files: the exact ROC and PRO curves of a category as CSV (``curves/<category>/*.csv``).

The evaluator's curves have a corner at every distinct anomalous score (millions at MVTec AD size);
the files keep them thinned to a grid of ``1 / 1000`` on both axes (the first and the last corner in
each grid cell, so at most a few thousand rows, ending at the curve's own end): a plotted curve is
the same to the eye, and its trapezoidal area differs from the exact metric's by at most ``2e-3``
(far less in practice; the metrics in ``metrics.json`` come from the exact curve).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from anomalib_lite.files import write_atomically
from anomalib_lite.metrics.ranks import RankCurve

# The curves of a category: file stem → (its title, its y-axis name).
CURVES = {
    "image_roc": ("image ROC", "tpr"),
    "pixel_roc": ("pixel ROC", "tpr"),
    "pro": ("PRO", "pro"),
}
GRID = 1000


def thin_curve(curve: RankCurve, grid: int = GRID) -> RankCurve:
    """The corners of ``curve`` that are the first or the last in their cell of a ``grid × grid`` grid over
    FPR × y (plus both ends): a polyline within ``1 / grid`` of the curve everywhere."""
    cell = torch.floor(curve.fpr * grid) * (grid + 1) + torch.floor(curve.y * grid)
    keep = torch.ones_like(cell, dtype=torch.bool)
    keep[1:-1] = (cell[1:-1] != cell[:-2]) | (cell[1:-1] != cell[2:])
    return RankCurve(curve.fpr[keep], curve.y[keep], curve.thresholds[keep])


def write_curve_csv(curve: RankCurve, path: Path, y_name: str) -> Path:
    """``fpr,<y_name>,threshold`` rows of the thinned curve (threshold: the point counts scores ≥ it;
    ``inf`` at (0, 0), ``-inf`` at the end, empty where interpolated at the FPR limit), written atomically (an
    earlier file is kept whole when the write fails)."""
    thinned = thin_curve(curve)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["fpr", y_name, "threshold"])
    for fpr, y, threshold in zip(thinned.fpr.tolist(), thinned.y.tolist(), thinned.thresholds.tolist()):
        writer.writerow([repr(fpr), repr(y), "" if threshold != threshold else repr(threshold)])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: file.write(text.getvalue().encode()))
    return path


def write_curves(curves: dict[str, RankCurve], out_dir: Path) -> list[Path]:
    """One CSV per curve (``image_roc.csv``, ``pixel_roc.csv``, ``pro.csv``) in ``out_dir``."""
    return [write_curve_csv(curve, out_dir / f"{name}.csv", CURVES[name][1]) for name, curve in curves.items()]


def read_curves(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The curves in a category's curve folder: name → ``(fpr, y)`` float64 arrays (absent files left out)."""
    found = {}
    for name, (_, y_name) in CURVES.items():
        path = folder / f"{name}.csv"
        if path.is_file():
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            found[name] = (np.array([float(r["fpr"]) for r in rows]), np.array([float(r[y_name]) for r in rows]))
    return found

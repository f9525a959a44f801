"""PNG figures with matplotlib (the optional extra ``plots``; Agg backend): the ROC and PRO curves, the score
histogram and the training losses of ``report.html``, and the command ``python scripts/plot.py RUN [RUN…]``:
several runs' curves on one figure per category.

Without matplotlib, the figures are not drawn (``None``) and one log line names the extra.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from anomalib_lite.files import write_atomically
from anomalib_lite.reporting.curves import CURVES, read_curves

log = logging.getLogger("anomalib_lite")
MISSING = (
    "PNG plots skipped: matplotlib is not installed (pip install -e '.[plots]'); the CSVs are written, "
    "the report shows tables instead"
)
_warned = False


def pyplot() -> ModuleType | None:
    """matplotlib's pyplot on the Agg backend (no display needed), or ``None`` (logged once) when absent."""
    global _warned
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not _warned:
            log.warning(MISSING)
            _warned = True
        return None
    return plt


def plot_curves(
    series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path, title: str = "", fpr_limit: float = 0.3
) -> Path | None:
    """One figure, one panel per curve kind (image ROC, pixel ROC, PRO up to ``fpr_limit``), one line per series.

    Args:
        series: legend label → curve name (``image_roc``, ``pixel_roc``, ``pro``) → ``(fpr, y)``.
        path: the PNG to write (atomically: an earlier file is kept whole when the write fails).
        title: the figure's title.
    Returns:
        ``path``, or ``None`` when matplotlib is absent or no series has a curve.
    """
    kinds = [name for name in CURVES if any(name in curves for curves in series.values())]
    plt = pyplot() if kinds else None
    if plt is None:
        return None
    figure, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 4.2), squeeze=False)
    for axis, kind in zip(axes[0], kinds):
        limit = fpr_limit if kind == "pro" else 1.0
        for label, curves in series.items():
            if kind in curves:
                fpr, y = curves[kind]
                area = float(np.sum(np.diff(fpr) * (y[1:] + y[:-1]) / 2)) / limit
                axis.plot(fpr, y, label=f"{label} ({area:.3f})", linewidth=1.4)
        if kind != "pro":
            axis.plot([0, 1], [0, 1], color="0.75", linestyle=":", linewidth=1)
        axis.set(
            xlim=(0, limit),
            ylim=(0, 1.01),
            title=CURVES[kind][0],
            xlabel="false-positive rate",
            ylabel="PRO" if kind == "pro" else "true-positive rate",
        )
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right", fontsize="small")
    if title:
        figure.suptitle(title)
    png = figure_png(plt, figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: file.write(png))
    return path


def figure_png(plt: ModuleType, figure: Any) -> bytes:
    """The matplotlib ``figure`` laid out tightly and encoded as PNG (110 dpi); the figure is closed."""
    try:
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(figure)
    return buffer.getvalue()


@dataclass
class Histogram:
    """Score counts per group over shared bins.

    Attributes:
        edges: ``B + 1`` increasing bin edges (the last bin includes its right edge, as ``numpy.histogram``).
        counts: group name → ``B`` counts. scores: group name → its scores.
    """

    edges: np.ndarray
    counts: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]


def score_histogram(scores: Sequence[float], groups: Sequence[str], bins: int | None = None) -> Histogram:
    """Histogram of ``scores`` per group (e.g. ``good`` and each defect type), over ``bins`` equal bins spanning
    every score (default: ``2⌈√N⌉`` clipped to [8, 40] for ``N`` scores, a choice); groups in order of first
    appearance, ``good`` first."""
    values = np.asarray(scores, dtype=np.float64)
    edges = np.histogram_bin_edges(values, bins=bins or int(np.clip(2 * math.ceil(math.sqrt(len(values))), 8, 40)))
    names = sorted(dict.fromkeys(groups), key=lambda name: name != "good")
    labels = np.asarray(groups, dtype=object)
    members = {name: values[labels == name] for name in names}
    return Histogram(edges, {name: np.histogram(v, edges)[0] for name, v in members.items()}, members)


def plot_histogram(histogram: Histogram, threshold: float | None, title: str = "") -> bytes | None:
    """The score histogram as PNG bytes: ``good`` filled grey, each other group a coloured step line, the image
    threshold a dashed vertical line; ``None`` without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    figure, axis = plt.subplots(figsize=(7.5, 3.2))
    for name, counts in histogram.counts.items():
        style = {"color": "0.55", "alpha": 0.6, "histtype": "stepfilled"} if name == "good" else {"histtype": "step"}
        axis.hist(histogram.edges[:-1], histogram.edges, weights=counts, label=name, linewidth=1.6, **style)
    if threshold is not None:
        axis.axvline(
            threshold, color="crimson", linestyle="--", linewidth=1.3, label=f"image threshold {threshold:.4g}"
        )
    axis.set(xlabel="image anomaly score", ylabel="test images", title=title)
    axis.yaxis.get_major_locator().set_params(integer=True)
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small", loc="upper right")
    return figure_png(plt, figure)


def plot_losses(stages: list[dict[str, Any]], title: str = "") -> bytes | None:
    """The mean training loss per epoch, one panel per stage that recorded losses (``stages``: the ``training``
    stages of ``metrics.json``: ``name``, ``loss`` …), as PNG bytes; ``None`` without matplotlib or losses."""
    shown = [stage for stage in stages if stage.get("loss")]
    plt = pyplot() if shown else None
    if plt is None:
        return None
    figure, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.0), squeeze=False)
    for axis, stage in zip(axes[0], shown):
        loss = np.asarray(stage["loss"], dtype=np.float64)
        axis.plot(np.arange(1, len(loss) + 1), loss, marker="o" if len(loss) <= 30 else None, markersize=3)
        axis.set(title=str(stage.get("name", "")), xlabel="epoch", ylabel="mean loss")
        axis.xaxis.get_major_locator().set_params(integer=True)
        if loss.min() > 0 and loss.max() / loss.min() > 50:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    return figure_png(plt, figure)


def run_curves(
    runs: list[Path], category: str | None
) -> dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """category → legend label (``<run folder name> (<model>)``) → curve name → ``(fpr, y)``, read from
    each run's ``metrics.json`` and ``curves/<category>/*.csv``.

    Raises:
        FileNotFoundError: a run folder without ``metrics.json``, or no curve of the category asked for.
    """
    found: dict[str, dict[str, dict]] = {}
    names = [run.resolve().name for run in runs]
    for run, name in zip(runs, names):
        metrics = run / "metrics.json"
        if not metrics.is_file():
            raise FileNotFoundError(f"{run}: no metrics.json (not a finished run folder)")
        results = json.loads(metrics.read_text())
        if names.count(name) > 1:  # e.g. the same job of two sweeps: name the sweep too
            name = f"{run.resolve().parent.name}/{name}"
        label = f"{name} ({results.get('model', '?')})"
        for each in results.get("categories", {}):
            curves = read_curves(run / "curves" / each)
            if curves and category in (None, each):
                found.setdefault(each, {})[label] = curves
    if not found:
        wanted = f"of category {category!r} " if category else ""
        raise FileNotFoundError(f"no curves {wanted}under {', '.join(map(str, runs))}/curves/ (eval.curves=false?)")
    return found


def main(argv: list[str] | None = None) -> int:
    """Command line: one ``curves_<category>.png`` per category that the runs have curves for."""
    parser = argparse.ArgumentParser(
        description="Draw several runs' image ROC, pixel ROC and PRO curves on one figure per category "
        "(legend: run folder name and model, with the area), from their curves/<category>/*.csv. "
        "Needs matplotlib (the plots extra)."
    )
    parser.add_argument("runs", type=Path, nargs="+", help="run folders (holding metrics.json and curves/)")
    parser.add_argument("--category", help="only this category")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for curves_<category>.png (default: .)")
    parser.add_argument("--title", default="", help="figure title (default: the category)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        per_category = run_curves(args.runs, args.category)
    except FileNotFoundError as exc:
        parser.exit(1, f"error: {exc}\n")
    if pyplot() is None:
        parser.exit(1, f"error: {MISSING}\n")
    for category, series in per_category.items():
        pro_ends = [curves["pro"][0][-1] for curves in series.values() if "pro" in curves]
        limit = max(pro_ends) if pro_ends else 0.3
        path = plot_curves(series, args.out / f"curves_{category}.png", args.title or category, limit)
        print(path)
    return 0

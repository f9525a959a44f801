"""``python scripts/plot.py RUN [RUN…]``: several runs' ROC and PRO curves on one figure per category."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from anomalib_lite.curves import read_curves
from anomalib_lite.plots import MISSING, plot_curves, pyplot


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

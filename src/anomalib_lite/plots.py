"""PNG figures of the ROC and PRO curves, with matplotlib (the optional extra ``plots``; Agg backend).

Without matplotlib, :func:`plot_curves` draws nothing and logs one line naming the extra.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

import numpy as np

from anomalib_lite.curves import CURVES

log = logging.getLogger("anomalib_lite")
MISSING = "PNG curve plots skipped: matplotlib is not installed (pip install -e '.[plots]'); the CSVs are written"
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
        path: the PNG to write. title: the figure's title.
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
        axis.set(xlim=(0, limit), ylim=(0, 1.01), title=CURVES[kind][0], xlabel="false-positive rate",
                 ylabel="PRO" if kind == "pro" else "true-positive rate")  # fmt: skip
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right", fontsize="small")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

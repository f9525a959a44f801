"""Metric tables: the mean over categories or runs, the per-defect rows, and the Markdown table (columns and
formats from the metric catalogue, :mod:`anomalib_lite.metrics.catalogue`)."""

from __future__ import annotations

from typing import Any

from anomalib_lite.metrics.catalogue import METRICS, metric_columns


def mean_metrics(per_category: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Mean of each metric over the categories where it is defined."""
    means: dict[str, float | None] = {}
    for column in metric_columns(per_category):
        values = [m[column] for m in per_category.values() if m.get(column) is not None]
        means[column] = sum(values) / len(values) if values else None
    return means


def defect_label(row: str, defect: str) -> str:
    """The label of ``defect``'s row under the row ``row`` (a category or a run)."""
    return f"{row} [{defect}]"


def with_defect_rows(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``rows`` with, after each row that has ``per_defect`` metrics, one row per defect type
    (:func:`defect_label`; each defect type against the good images)."""
    expanded: dict[str, dict[str, Any]] = {}
    for name, metrics in rows.items():
        expanded[name] = metrics
        for defect, values in (metrics.get("per_defect") or {}).items():
            expanded[defect_label(name, defect)] = values
    return expanded


def format_table(per_category: dict[str, dict[str, Any]], label: str = "category", mean: bool = True) -> str:
    """A Markdown table: one row per category (or run), each followed by its per-defect rows (``name [defect]``:
    that defect type against the good images), and, with ``mean``, the mean over the categories; undefined
    metrics: ``-``."""

    columns = metric_columns(per_category)
    header = f"| {label} | " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    rows = with_defect_rows(per_category)
    if mean and len(per_category) > 1:
        rows["mean"] = mean_metrics(per_category)
    for name, metrics in rows.items():
        lines.append(f"| {name} | " + " | ".join(METRICS[c].format(metrics.get(c)) for c in columns) + " |")
    by_note: dict[str, list[str]] = {}
    for name, metrics in per_category.items():
        if metrics.get("note"):
            by_note.setdefault(metrics["note"], []).append(name)
    notes = [f"- {', '.join(names)}: {note}" for note, names in by_note.items()]
    return "\n".join(lines + notes)

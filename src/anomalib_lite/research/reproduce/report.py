"""The report of ``scripts/reproduce.py``: ``results.md`` (per arm: its setting, a per-category table of
ours / paper / difference, a line per reason a cell is not comparable) and ``results.csv`` (one row per cell)."""

from __future__ import annotations

import csv
from pathlib import Path

from anomalib_lite.research.reproduce.results import MEAN, ArmResult, describe_setting
from anomalib_lite.research.reproduce.tables import NAMES, ReproTable

CSV_COLUMNS = (
    "arm",
    "dataset",
    "data used",
    "category",
    "metric",
    "ours",
    "ours std",
    "runs",
    "paper",
    "difference",
    "not comparable because",
)


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def arm_markdown(table: ReproTable, result: ArmResult) -> list[str]:
    """The section of one arm on one dataset."""
    arm = result.arm
    lines = [f"## {arm.label} — {NAMES[result.data]}", ""]
    if arm.overrides:
        lines.append(f"Options: `{' '.join(arm.overrides)}`")
    if arm.note:
        lines.append(f"Note: {arm.note}")
    if arm.departure:
        lines.append(f"Ours, not the paper's row: {arm.departure}")
    source = (
        "the paper's" if arm.backbone_source == "paper" else f"ours ({arm.backbone_source.removeprefix('choice: ')})"
    )
    lines.append(
        f"Backbone: {arm.backbone}, {source}. Our runs: {describe_setting(result.runs)}"
        + (f" ({result.sweep})" if result.sweep else "")
    )
    lines += ["", *(f"- {note}" for note in result.notes), *([""] if result.notes else [])]
    metrics = list(arm.paper)
    if not metrics:
        lines += ["The paper gives no figure for this arm.", ""]
    labels = {
        metric: [label for label in next((c.paper for c in result.cells if c.metric == metric), {})]
        for metric in metrics
    }
    header = ["category"]
    for metric in metrics:
        header += [f"{metric} ours", *(f"{metric} {label}" for label in labels[metric]), f"{metric} difference"]
    rows: dict[str, dict[str, str]] = {}
    for cell in result.cells:
        row = rows.setdefault(cell.category, {})
        row[f"{cell.metric} ours"] = "-" if cell.ours is None else str(cell.ours)
        for label, value in cell.paper.items():
            row[f"{cell.metric} {label}"] = _figure(value)
        difference = cell.difference
        row[f"{cell.metric} difference"] = "n/c" if difference is None else f"{difference:+.4f}"
    if metrics and rows:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for category, row in rows.items():
            label = f"**{category}**" if category == MEAN else category
            lines.append("| " + " | ".join([label, *(row.get(h, "-") for h in header[1:])]) + " |")
        lines.append("")
    lines += not_comparable_lines(result)
    return lines


def not_comparable_lines(result: ArmResult) -> list[str]:
    """One line per reason a cell is not comparable, naming its cells (``every cell`` when it is all of them)."""
    by_reason: dict[str, dict[str, list[str]]] = {}
    for cell in result.cells:
        if cell.difference is None and cell.reason:
            by_reason.setdefault(cell.reason, {}).setdefault(cell.metric, []).append(cell.category)
    lines = []
    for reason, cells in by_reason.items():
        if sum(map(len, cells.values())) == len(result.cells):
            lines.append(f"- every cell: {reason}")
        else:
            named = "; ".join(f"{metric}: {', '.join(categories)}" for metric, categories in cells.items())
            lines.append(f"- {named}: {reason}")
    return ["Not comparable (n/c):", *lines, ""] if lines else []


def write_report(table: ReproTable, results: list[ArmResult], out: Path, settings: list[str]) -> str:
    """Write ``results.md`` and ``results.csv`` into ``out``; return the Markdown."""
    lines = [
        f"# {table.title}",
        "",
        f"`scripts/reproduce.py {table.name}`; experiment config `configs/experiment/{table.experiment}.yaml`.",
        *(f"Runs: {s}" for s in settings),
    ]
    cited = sorted({ref.cite() for r in results for refs in r.arm.paper.values() for ref in refs})
    lines += [
        "Paper figures: " + "; ".join(cited),
        "",
        "A difference (ours − paper) is given only where every run recorded the table's whole setting (dataset, "
        "backbone and its weights, image and map size, AUPRO FPR limit, every model option, a budget at least the "
        "paper's, no epoch cap), the metric is the paper's (no threshold chosen on our test set), the arm is the "
        "paper's row, and (for the mean) every seed covers every category of the table; ours is mean ± std over "
        "seeds. Elsewhere `n/c`, with the reason.",
        "",
    ]
    for result in results:
        lines += arm_markdown(table, result)
    markdown = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for result in results:
            for cell in result.cells:
                first = next(iter(cell.paper.values()), None)
                difference = cell.difference
                writer.writerow(
                    [
                        result.arm.label,
                        result.data,
                        result.data_used or "",
                        cell.category,
                        cell.metric,
                        "" if cell.ours is None else cell.ours.mean,
                        "" if cell.ours is None or cell.ours.std is None else cell.ours.std,
                        0 if cell.ours is None else cell.ours.n,
                        "" if first is None else first,
                        "" if difference is None else difference,
                        "" if difference is not None else cell.reason or "",
                    ]
                )
    return markdown

"""``python scripts/collect.py SWEEP_DIR``: one table from the run folders of a sweep."""

from __future__ import annotations

import argparse
import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomalib_lite.metrics.catalogue import metric_columns
from anomalib_lite.reporting.tables import format_table, mean_metrics


@dataclass
class SweepTable:
    """Rows of a sweep: ``"<job> / <category>"`` (or ``<job>`` when it has one category) → metrics.

    ``missing`` lists job folders without a ``metrics.json`` (failed or unfinished runs).
    """

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    with_mean: bool = True

    def grouped(self, key: str) -> SweepTable:
        """One row per value of override ``key`` (e.g. ``model.scales``): the mean over the runs sharing it.

        Raises:
            KeyError: no run has the override ``key``.
        """
        groups: dict[str, dict[str, dict[str, Any]]] = {}
        for label, metrics in self.rows.items():
            value = self.overrides.get(label, {}).get(key)
            if value is not None:
                groups.setdefault(f"{key}={value}", {})[label] = metrics
        if not groups:
            raise KeyError(f"no run of the sweep has the override {key!r}")
        rows = {f"{name} (mean of {len(members)})": mean_metrics(members) for name, members in groups.items()}
        return SweepTable(rows=rows, missing=self.missing, with_mean=False)


def _jobs(folder: Path) -> list[Path]:
    """Run folders (they hold Hydra's ``.hydra/``) at or below ``folder``, sorted by name."""
    if (folder / ".hydra").is_dir():
        return [folder]
    return sorted((p.parent for p in folder.rglob(".hydra") if p.is_dir()), key=lambda p: str(p))


def _split_overrides(name: str) -> list[str]:
    """``a=1,b=[2,3]`` → ``["a=1", "b=[2,3]"]`` (commas inside brackets belong to a value)."""
    return re.split(r",(?![^\[]*\])", name)


def _short_names(names: list[str]) -> list[str]:
    """Drop the ``key=value`` overrides every job shares, keeping what tells the jobs apart."""
    parts = [_split_overrides(name) for name in names]
    if len(names) < 2 or not all(all("=" in item for item in items) for items in parts):
        return names
    shared = set.intersection(*(set(items) for items in parts))
    return [",".join(i for i in items if i not in shared) or name for items, name in zip(parts, names)]


def collect_sweep(folder: Path) -> SweepTable:
    """Read every run folder of a sweep (or one run) into a :class:`SweepTable`.

    Raises:
        FileNotFoundError: ``folder`` holds no run folder at all.
    """
    jobs = _jobs(folder)
    if not jobs:
        raise FileNotFoundError(f"{folder}: no run folder (with a .hydra/ inside) found")
    table = SweepTable()
    full_names = [str(job.relative_to(folder)) if job != folder else job.name for job in jobs]
    for job, name, full in zip(jobs, _short_names(full_names), full_names):
        overrides = dict(item.split("=", 1) for item in _split_overrides(full) if "=" in item)
        path = job / "metrics.json"
        if not path.is_file():
            table.missing.append(name)
            continue
        per_category = json.loads(path.read_text())["categories"]
        for category, metrics in per_category.items():
            label = name if len(per_category) == 1 and job != folder else f"{name} / {category}"
            table.rows[label] = metrics
            table.overrides[label] = overrides
    return table


def write_tables(table: SweepTable, stem: Path) -> str:
    """Write ``<stem>.md`` and ``<stem>.csv`` (rows, each followed by its per-defect rows, then the mean over
    the rows unless grouped); return the Markdown. The CSV's ``defect`` column names a per-defect row's type
    (empty for a whole row)."""
    markdown = format_table(table.rows, label="run", mean=table.with_mean)
    if table.missing:
        markdown += "\n\nNo metrics.json (failed or unfinished): " + ", ".join(table.missing)
    stem.with_suffix(".md").write_text(markdown + "\n")
    with stem.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.writer(f)
        columns = metric_columns(table.rows)
        writer.writerow(["run", "defect", *columns])
        rows = []
        for label, metrics in table.rows.items():
            rows.append((label, "", metrics))
            rows += [(label, defect, values) for defect, values in (metrics.get("per_defect") or {}).items()]
        if table.rows and table.with_mean:
            rows.append(("mean", "", mean_metrics(table.rows)))
        for label, defect, metrics in rows:
            writer.writerow([label, defect, *("" if metrics.get(c) is None else metrics[c] for c in columns)])
    return markdown


def main(argv: list[str] | None = None) -> int:
    """Command line: collect a sweep folder, print its table, write ``results.md``/``results.csv`` into it."""
    parser = argparse.ArgumentParser(
        description="Turn the run folders of a sweep (e.g. outputs/<task>/multirun/<time>/) into one table with "
        "the mean over runs. Writes results.md and results.csv into the sweep folder (or --out STEM)."
    )
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder, or any folder holding run folders")
    parser.add_argument("--out", type=Path, help="output path without suffix (default: SWEEP_DIR/results)")
    parser.add_argument("--by", help="one row per value of this override, the mean over the others (e.g. model.scales)")
    args = parser.parse_args(argv)
    try:
        table = collect_sweep(args.sweep_dir)
        table = table.grouped(args.by) if args.by else table
    except (FileNotFoundError, KeyError) as exc:
        parser.exit(1, f"error: {exc}\n")
    print(write_tables(table, args.out or args.sweep_dir / "results"))
    return 0

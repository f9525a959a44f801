"""The papers' figures and their reader. Each family keeps its paper's tables next to its code, in
``models/<family>/paper_tables.yaml`` (package data); a family without that file has none.

Each file lists a paper's tables; each table gives its title, where its figures come from (lines of
``PAPER_TABLES.md`` and of the paper text), its dataset and metric, its columns, and one list of
values per row (``None`` where the paper prints none). See the header of any file for the fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from omegaconf import OmegaConf

from anomalib_lite.models.registry import model_names

TABLES_FILE = "paper_tables.yaml"


def papers() -> list[str]:
    """The registered families whose folder holds their paper's tables."""
    return [name for name in model_names() if (resources.files(f"anomalib_lite.models.{name}") / TABLES_FILE).is_file()]


@dataclass(frozen=True)
class PaperTableData:
    """One table of a paper, as its data file gives it.

    Attributes:
        paper: the family whose paper it is (``hfr``, ``msfi``, ``igd``, ``utad``).
        name: the table's key (e.g. ``table3``).
        title, dataset, metric, layout: as in the file. source: ``(file, first line, last line)``.
        paper_lines: lines of the paper text, or ``None``. columns: column labels.
        rows: row label → one value (or ``None``) per column. notes: the paper's inconsistencies.
    """

    paper: str
    name: str
    title: str
    dataset: str
    metric: str
    layout: str
    source: tuple[str, int, int]
    paper_lines: str | None
    columns: list[str]
    rows: dict[str, list[float | None]]
    notes: list[str] = field(default_factory=list)

    def value(self, row: str, column: str) -> float | None:
        """The figure at ``row``, ``column``.

        Raises:
            KeyError: no such row or column (naming the table and its labels).
        """
        if row not in self.rows:
            raise KeyError(f"{self.paper} {self.name}: no row {row!r}; rows: {', '.join(self.rows)}")
        if column not in self.columns:
            raise KeyError(f"{self.paper} {self.name}: no column {column!r}; columns: {', '.join(self.columns)}")
        return self.rows[row][self.columns.index(column)]

    def column(self, column: str) -> dict[str, float | None]:
        """Row label → the figure of ``column``."""
        return {row: self.value(row, column) for row in self.rows}

    def column_of_row(self, row: str) -> dict[str, float | None]:
        """Column label → the figure of ``row`` (for tables whose columns are categories)."""
        return {column: self.value(row, column) for column in self.columns}

    def cite(self) -> str:
        """Where the figures come from, for reports: ``HFR table1 (PAPER_TABLES.md L21-36)``."""
        file, first, last = self.source
        where = f"{file} L{first}-{last}" if first != last else f"{file} L{first}"
        return f"{self.paper.upper()} {self.name} ({where}{', paper ' + self.paper_lines if self.paper_lines else ''})"


def _table(paper: str, name: str, raw: dict[str, Any]) -> PaperTableData:
    columns = [str(c) for c in raw["columns"]]
    rows = {str(label): [None if v is None else float(v) for v in values] for label, values in raw["rows"].items()}
    bad = [label for label, values in rows.items() if len(values) != len(columns)]
    if bad:
        raise ValueError(f"models/{paper}/{TABLES_FILE} {name}: rows {bad} do not have {len(columns)} values")
    file, first, last = raw["source"]
    return PaperTableData(
        paper,
        name,
        raw["title"],
        raw["dataset"],
        raw["metric"],
        raw["layout"],
        (file, int(first), int(last)),
        raw.get("paper_lines"),
        columns,
        rows,
        list(raw.get("notes") or []),
    )


@cache
def paper_tables(paper: str) -> dict[str, PaperTableData]:
    """Every table of ``paper`` (one of :func:`papers`), by name, read from ``models/<paper>/paper_tables.yaml``.

    Raises:
        KeyError: an unknown paper.
    """
    if paper not in papers():
        raise KeyError(f"no paper {paper!r}; papers: {', '.join(papers())}")
    text = (resources.files(f"anomalib_lite.models.{paper}") / TABLES_FILE).read_text()
    raw = OmegaConf.to_container(OmegaConf.create(text))
    return {name: _table(paper, name, table) for name, table in raw["tables"].items()}


def paper_table(paper: str, name: str) -> PaperTableData:
    """One table: ``paper_table("hfr", "table1")``.

    Raises:
        KeyError: an unknown paper or table.
    """
    tables = paper_tables(paper)
    if name not in tables:
        raise KeyError(f"{paper} has no table {name!r}; tables: {', '.join(tables)}")
    return tables[name]

"""The papers' figures and their reader. Each family keeps its paper's tables next to its code, in
``models/<family>/paper_tables.yaml`` (package data); a family without that file has none.

Each file cites its paper (``citation``: authors, title, venue, year, arXiv id or DOI) and lists its tables; each
table gives the paper's own label and caption, where the paper presents it (section, page where known, the sentence
that refers to it, its lines in the paper's text as distributed), its dataset and metric, its columns, and one list
of values per row (``None`` where the paper prints none). See the header of any file for the fields.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from omegaconf import OmegaConf

from anomalib_lite.models.registry import model_names

TABLES_FILE = "paper_tables.yaml"
CITATION_KEYS = ("authors", "title", "venue", "year", "arxiv", "doi", "provenance")
TABLE_KEYS = ("table", "caption", "section", "page", "cited_as", "text_lines", "title", "dataset", "metric", "columns")


def papers() -> list[str]:
    """The registered families whose folder holds their paper's tables (a family registered from elsewhere, e.g. an
    anomalib baseline, has no folder of its own here)."""
    return [
        name
        for name in model_names()
        if importlib.util.find_spec(f"anomalib_lite.models.{name}") is not None
        and (resources.files(f"anomalib_lite.models.{name}") / TABLES_FILE).is_file()
    ]


@dataclass(frozen=True)
class PaperCitation:
    """The paper a family's figures come from.

    Attributes:
        authors: full names, in the paper's order. title, venue: as published. year: of that version.
        arxiv: the arXiv id (with its version where the figures are that version's), or ``None``.
        doi: the DOI, or ``None``. provenance: which of these fields the paper's text itself gives.
    """

    authors: tuple[str, ...]
    title: str
    venue: str
    year: int
    arxiv: str | None
    doi: str | None
    provenance: str

    def short(self) -> str:
        """``Chen et al. 2024, arXiv:2405.09148v1`` (``Hu and Lai …`` for two authors; the DOI without an arXiv id)."""
        surnames = [name.split()[-1] for name in self.authors]
        who = " and ".join(surnames) if len(surnames) <= 2 else f"{surnames[0]} et al."
        where = f"arXiv:{self.arxiv}" if self.arxiv else f"doi:{self.doi}" if self.doi else self.venue
        return f"{who} {self.year}, {where}"

    def reference(self) -> str:
        """The full reference: ``Authors. Title. Venue, year. arXiv:… / doi:…``."""
        ids = "".join(f" {kind}:{value}." for kind, value in (("arXiv", self.arxiv), ("doi", self.doi)) if value)
        return f"{', '.join(self.authors)}. {self.title}. {self.venue}, {self.year}.{ids}"


@dataclass(frozen=True)
class PaperTableData:
    """One table of a paper, as its data file gives it.

    Attributes:
        paper: the family whose paper it is (``hfr``, ``msfi``, ``igd``, ``utad``). name: the table's key (``table3``).
        citation: the paper. table: the paper's label (``Table 3``, ``Table III``). caption: the paper's caption,
            shortened, or ``None`` where its text lost it. section: the section presenting it. page: its page, or
            ``None`` where the text does not show it. cited_as: the paper's sentence that refers to it.
        text_lines: first and last 1-based line of the table in the paper's text as distributed.
        title: ours, what its figures are. dataset, metric: as in the file. columns: column labels.
        rows: row label → one value (or ``None``) per column. notes: the paper's inconsistencies and our readings.
    """

    paper: str
    name: str
    citation: PaperCitation
    table: str
    caption: str | None
    section: str
    page: int | None
    cited_as: str
    text_lines: tuple[int, int]
    title: str
    dataset: str
    metric: str
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
        """Where the figures are in the paper, for reports:
        ``IGD Table 1 (Chen et al. 2021, arXiv:2101.10043v1, Sec. 4.3 Experiments on …, p. 6)``."""
        page = f", p. {self.page}" if self.page is not None else ""
        return f"{self.paper.upper()} {self.table} ({self.citation.short()}, Sec. {self.section}{page})"


def _missing(raw: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    absent = [key for key in keys if key not in raw]
    if absent:
        raise ValueError(f"{where}: missing {', '.join(absent)}")


def _citation(paper: str, raw: dict[str, Any]) -> PaperCitation:
    where = f"models/{paper}/{TABLES_FILE} citation"
    _missing(raw, CITATION_KEYS, where)
    if not raw["authors"] or not (raw["arxiv"] or raw["doi"]):
        raise ValueError(f"{where}: needs its authors and an arXiv id or a DOI")
    return PaperCitation(
        tuple(str(a) for a in raw["authors"]),
        str(raw["title"]),
        str(raw["venue"]),
        int(raw["year"]),
        None if raw["arxiv"] is None else str(raw["arxiv"]),
        None if raw["doi"] is None else str(raw["doi"]),
        str(raw["provenance"]),
    )


def _table(paper: str, name: str, citation: PaperCitation, raw: dict[str, Any]) -> PaperTableData:
    where = f"models/{paper}/{TABLES_FILE} {name}"
    _missing(raw, (*TABLE_KEYS, "rows"), where)
    columns = [str(c) for c in raw["columns"]]
    rows = {str(label): [None if v is None else float(v) for v in values] for label, values in raw["rows"].items()}
    bad = [label for label, values in rows.items() if len(values) != len(columns)]
    if bad:
        raise ValueError(f"{where}: rows {bad} do not have {len(columns)} values")
    first, last = (int(n) for n in raw["text_lines"])
    if not 0 < first <= last:
        raise ValueError(f"{where}: text_lines {raw['text_lines']} is not [first, last] with 0 < first <= last")
    return PaperTableData(
        paper,
        name,
        citation,
        str(raw["table"]),
        raw["caption"],
        str(raw["section"]),
        raw["page"],
        str(raw["cited_as"]),
        (first, last),
        raw["title"],
        raw["dataset"],
        raw["metric"],
        columns,
        rows,
        list(raw.get("notes") or []),
    )


def parse_paper_file(paper: str, text: str) -> tuple[PaperCitation, dict[str, PaperTableData]]:
    """The citation and the tables (by name) of ``paper``, from the text of its ``paper_tables.yaml``.

    Raises:
        ValueError: a missing field (naming the file, the table and the fields), a citation without its authors or
            without an arXiv id or a DOI, a row without one value per column, or ``text_lines`` that are not
            ``[first, last]``.
    """
    raw = OmegaConf.to_container(OmegaConf.create(text))
    _missing(raw, ("citation", "tables"), f"models/{paper}/{TABLES_FILE}")
    citation = _citation(paper, raw["citation"])
    return citation, {name: _table(paper, name, citation, table) for name, table in raw["tables"].items()}


@cache
def _paper_file(paper: str) -> tuple[PaperCitation, dict[str, PaperTableData]]:
    if paper not in papers():
        raise KeyError(f"no paper {paper!r}; papers: {', '.join(papers())}")
    return parse_paper_file(paper, (resources.files(f"anomalib_lite.models.{paper}") / TABLES_FILE).read_text())


def paper_citation(paper: str) -> PaperCitation:
    """The paper of ``paper`` (one of :func:`papers`): ``paper_citation("hfr").reference()``.

    Raises:
        KeyError: an unknown paper.
    """
    return _paper_file(paper)[0]


def paper_tables(paper: str) -> dict[str, PaperTableData]:
    """Every table of ``paper`` (one of :func:`papers`), by name, read from ``models/<paper>/paper_tables.yaml``.

    Raises:
        KeyError: an unknown paper.
    """
    return _paper_file(paper)[1]


def paper_table(paper: str, name: str) -> PaperTableData:
    """One table: ``paper_table("hfr", "table1")``.

    Raises:
        KeyError: an unknown paper or table.
    """
    tables = paper_tables(paper)
    if name not in tables:
        raise KeyError(f"{paper} has no table {name!r}; tables: {', '.join(tables)}")
    return tables[name]

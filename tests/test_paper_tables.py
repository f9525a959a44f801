"""The papers' figures (src/anomalib_lite/models/*/paper_tables.yaml) against PAPER_TABLES.md, parsed here on its own.

``tests/fixtures/PAPER_TABLES.md`` is a verbatim copy of the project's transcription of the papers' tables
(the yaml files cite its line numbers).
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from anomalib_lite.data.mvtec import MVTEC_CATEGORIES
from anomalib_lite.research.paper_figures import paper_table, paper_tables, papers

from conftest import REPO

PAPER_TABLES_MD = REPO / "tests" / "fixtures" / "PAPER_TABLES.md"
ALL_TABLES = [(paper, name) for paper in papers() for name in paper_tables(paper)]


def md_lines(first: int, last: int) -> list[str]:
    return PAPER_TABLES_MD.read_text().split("\n")[first - 1 : last]


def md_row_numbers(line: str) -> list[float | None]:
    """The figures of one Markdown table row: every cell that starts with a number (bold allowed), '—' as None."""
    cells = [c.strip().strip("*").strip() for c in line.strip().strip("|").split("|")]
    values: list[float | None] = []
    for cell in cells:
        match = re.match(r"\d+\.\d+", cell)
        if match:
            values.append(float(match.group()))
        elif cell in ("—", "–"):
            values.append(None)
    return values


def test_every_paper_table_the_brief_names_is_there():
    names = {paper: set(paper_tables(paper)) for paper in papers()}
    assert {"table1", "table3", "table4"} <= names["hfr"]
    assert {f"table{i}" for i in range(1, 6)} <= names["msfi"] and {f"table{i}" for i in range(1, 6)} <= names["igd"]
    assert {"table1", "table2", "table2_ablation", "table3", "table4"} <= names["utad"]


@pytest.mark.parametrize(("paper", "name"), ALL_TABLES)
def test_structure(paper, name):
    table = paper_table(paper, name)
    assert table.layout in ("markdown", "text") and table.source[0] == "PAPER_TABLES.md"
    assert 0 < table.source[1] <= table.source[2]
    assert table.columns and all(len(v) == len(table.columns) for v in table.rows.values())
    assert all(v is None or 0 <= v <= 100 for values in table.rows.values() for v in values)
    if "mean" in table.rows and table.dataset == "mvtec" and len(table.rows) > 2:
        assert set(table.rows) - {"mean", "mean_pixel_auroc_per_image"} == set(MVTEC_CATEGORIES)


@pytest.mark.parametrize(("paper", "name"), [t for t in ALL_TABLES if paper_table(*t).layout == "markdown"])
def test_markdown_tables_equal_their_rows_in_paper_tables_md(paper, name):
    table = paper_table(paper, name)
    expected = [md_row_numbers(line) for line in md_lines(*table.source[1:])]
    assert list(table.rows.values()) == expected


@pytest.mark.parametrize(("paper", "name"), [t for t in ALL_TABLES if paper_table(*t).layout == "text"])
def test_text_tables_take_their_figures_from_their_source_lines(paper, name):
    table = paper_table(paper, name)
    text = " ".join(md_lines(*table.source[1:]))
    available = Counter(float(x) for x in re.findall(r"(?<![\d.])\d\.\d+", text))
    wanted = Counter(v for values in table.rows.values() for v in values if v is not None)
    assert not wanted - available, f"figures not on {table.cite()}: {wanted - available}"


def test_a_few_figures_read_from_paper_tables_md():
    assert paper_table("hfr", "table1").value("screw", "HFR col B (unlabelled, headline)") == 0.960
    assert paper_table("hfr", "table4").value("transistor", "HFR col A (unlabelled)") == 0.773
    assert paper_table("msfi", "table3").value("transistor", "384") == 0.874
    assert paper_table("igd", "table1").value("Ours (single model)", "CIFAR-10") == 0.8234
    assert paper_table("utad", "table4").value("iou", "Ours") == 0.649


# The "ours" columns whose printed mean should be the mean of the 15 categories (to the printed rounding).
OURS_COLUMNS = [
    ("hfr", "table1", "HFR col A (unlabelled)"),
    ("hfr", "table1", "HFR col B (unlabelled, headline)"),
    ("hfr", "table3", "HFR col B (unlabelled, headline)"),
    ("hfr", "table4", "HFR col B (unlabelled, headline)"),
    ("msfi", "table3", "128"),
    ("msfi", "table3", "256"),
    ("msfi", "table3", "384"),
    ("igd", "table2", "Ours"),
    ("igd", "table3", "Ours"),
    ("utad", "table1", "Ours"),
]


@pytest.mark.parametrize(("paper", "name", "column"), OURS_COLUMNS)
def test_printed_means_recompute_from_the_categories(paper, name, column):
    table = paper_table(paper, name)
    mean = sum(table.value(c, column) for c in MVTEC_CATEGORIES) / len(MVTEC_CATEGORIES)
    decimals = 2 if name in ("table2", "table1") and paper in ("igd", "utad") else 3
    assert mean == pytest.approx(table.value("mean", column), abs=10**-decimals)  # rounded or truncated


def test_the_known_typo_is_kept_as_printed_and_noted():
    table = paper_table("msfi", "table3")
    mean = sum(table.value(c, "multi-scale") for c in MVTEC_CATEGORIES) / 15
    assert abs(mean - table.value("mean", "multi-scale")) > 0.001 and any("typo" in n for n in table.notes)

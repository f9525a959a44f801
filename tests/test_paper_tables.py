"""The papers' figures (src/anomalib_lite/models/*/paper_tables.yaml): their citations, and every cell against the
project's own transcription of the papers' tables, parsed here on its own.

``tests/fixtures/PAPER_TABLES.md`` is a verbatim copy of that transcription (made from the papers' texts, which are not
in the repository). The package files cite the papers themselves; where each table's figures are in the fixture is
this test's concern: :data:`FIXTURE_LINES`.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
from omegaconf import OmegaConf

from anomalib_lite.data.mvtec import MVTEC_CATEGORIES
from anomalib_lite.research.paper_figures import (
    TABLES_FILE,
    PaperCitation,
    paper_citation,
    paper_table,
    paper_tables,
    papers,
    parse_paper_file,
)

from conftest import REPO

PAPER_TABLES_MD = REPO / "tests" / "fixtures" / "PAPER_TABLES.md"
ALL_TABLES = [(paper, name) for paper in papers() for name in paper_tables(paper)]
# Where each table's figures are in the fixture: (layout, first line, last line). layout: ``markdown`` (the rows of
# a Markdown table, in its order, its header two lines above the first) or ``text`` (in its sentences).
FIXTURE_LINES = {
    ("hfr", "table1"): ("markdown", 21, 36),
    ("hfr", "table3"): ("markdown", 42, 57),
    ("hfr", "table4"): ("markdown", 63, 78),
    ("msfi", "table1"): ("text", 84, 85),
    ("msfi", "table2"): ("markdown", 91, 92),
    ("msfi", "table3"): ("markdown", 98, 113),
    ("msfi", "table4"): ("text", 115, 116),
    ("msfi", "table5"): ("text", 118, 118),
    ("igd", "table1"): ("text", 132, 134),
    ("igd", "table2"): ("markdown", 141, 156),
    ("igd", "table3"): ("markdown", 162, 177),
    ("igd", "table4"): ("text", 179, 179),
    ("igd", "table5"): ("text", 185, 185),
    ("utad", "table1"): ("markdown", 195, 211),
    ("utad", "table1_baselines"): ("text", 214, 214),
    ("utad", "table2"): ("text", 218, 218),
    ("utad", "table2_ablation"): ("markdown", 223, 229),
    ("utad", "table3"): ("markdown", 235, 241),
    ("utad", "table4"): ("markdown", 247, 249),
}


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


def test_every_table_has_its_lines_in_the_fixture():
    assert set(FIXTURE_LINES) == set(ALL_TABLES)
    assert all(layout in ("markdown", "text") and 0 < first <= last for layout, first, last in FIXTURE_LINES.values())


@pytest.mark.parametrize(("paper", "name"), ALL_TABLES)
def test_structure(paper, name):
    table = paper_table(paper, name)
    assert re.fullmatch(r"Table ([1-9]|[IVX]+)", table.table) and table.section and table.cited_as
    assert table.caption is None or table.caption.strip()
    assert table.page is None or table.page > 0
    assert 0 < table.text_lines[0] <= table.text_lines[1]
    assert table.citation == paper_citation(paper)
    assert table.columns and all(len(v) == len(table.columns) for v in table.rows.values())
    assert all(v is None or 0 <= v <= 100 for values in table.rows.values() for v in values)
    if "mean" in table.rows and table.dataset == "mvtec" and len(table.rows) > 2:
        assert set(table.rows) - {"mean", "mean_pixel_auroc_per_image"} == set(MVTEC_CATEGORIES)


MARKDOWN_TABLES = [t for t in ALL_TABLES if FIXTURE_LINES[t][0] == "markdown"]
# Row labels of ours that are not the Markdown row's first cell, lower-cased, spaces as underscores.
ROW_ALIASES = {
    ("mean", "avg"),
    ("mean", "mean_iou"),
    ("mean_pixel_auroc_per_image", "mean_auroc"),
    ("one_component_a", "one_component"),
    ("one_component_b", "one_component"),
    ("two_components_a", "two_components"),
    ("two_components_b", "two_components"),
    ("parameters_millions", "#_param_(m)"),
    ("pixel_auroc_per_image", "auroc"),
}
# Column labels of ours that are not the Markdown header's cell.
COLUMN_ALIASES = {("utad", "table1"): {"Ours": "IoU"}}


def md_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.mark.parametrize(("paper", "name"), MARKDOWN_TABLES)
def test_markdown_tables_equal_their_rows_in_paper_tables_md(paper, name):
    """Each cell by its row and its column: the row's label is the Markdown row's, the column's the header's, and
    the figures are the row's, in the header's order."""
    table = paper_table(paper, name)
    _, first, last = FIXTURE_LINES[(paper, name)]
    lines = md_lines(first, last)
    expected = [md_row_numbers(line) for line in lines]
    assert list(table.rows.values()) == expected
    for label, line in zip(table.rows, lines):
        cell = md_cells(line)[0].strip("*").strip().lower().replace(" ", "_")
        assert cell == label.replace(" ", "_") or (label, cell) in ROW_ALIASES, (label, cell)
    header = md_cells(md_lines(first - 2, first - 2)[0])[1:]
    aliases = COLUMN_ALIASES.get((paper, name), {})
    assert [aliases.get(column, column) for column in table.columns] == header


# Every figure of each prose ("text") table, by row and column, read here from its lines in the fixture
# (FIXTURE_LINES): a figure under another row or column fails.
TEXT_CELLS = {
    ("msfi", "table1"): {  # L84-85: "Ours pixel AUROC 0.983, AUPRO 0.927; GAVGA 0.93/—, PatchSVDD 0.957/—, …"
        "Ours": (0.983, 0.927),
        "GAVGA": (0.93, None),
        "PatchSVDD": (0.957, None),
        "STAD": (None, 0.857),
        "PaDiM": (0.975, 0.921),
        "SPADE": (0.965, 0.917),
    },
    ("msfi", "table4"): {  # L115-116, for 0 / 25 / 50 / 75 / 100 %
        "val": (None, 0.984, 0.981, 0.982, 0.983),
        "test": (0.982, 0.984, 0.984, 0.985, 0.985),
    },
    ("msfi", "table5"): {"Ours": (0.983, 0.986, 0.985, 0.986, 0.987)},  # L118: Weight Avg … K=6
    ("igd", "table1"): {  # L132-134: MNIST, CIFAR-10, FMNIST
        "Ours (single model)": (0.9912, 0.8234, 0.9332),
        "Ours (ensemble of 5)": (0.9927, 0.8368, 0.9357),
        "DSVDD": (0.9480, 0.6481, 0.9280),
        "CAVGA-D_u": (0.9860, 0.7370, 0.8850),
        "Student-Teacher ensemble": (0.9935, 0.8196, None),
    },
    ("igd", "table4"): {"mean": (0.91, 0.89, 0.87, 0.82)},  # L179: Ours, CAVGA-R_u, AE_SSIM, DAE
    ("igd", "table5"): {"Ours": (0.685, 0.731, 0.795, 0.819, 0.823)},  # L185: MS-SSIM … + INTER
    ("utad", "table1_baselines"): {  # L214: the nine baselines, in the paper's column order
        "mean_iou": (0.09, 0.26, 0.33, 0.19, 0.37, 0.20, 0.39, 0.24, 0.47),
        "mean_pixel_auroc_per_image": (0.74, 0.78, 0.82, 0.87, 0.79, 0.86, 0.86, 0.87, 0.89),
    },
    ("utad", "table2"): {"Ours (full)": (0.994, 0.899, 0.884)},  # L218: MNIST, FMNIST, CIFAR-10
}


def test_every_text_table_is_checked_cell_by_cell():
    assert set(TEXT_CELLS) == {t for t in ALL_TABLES if FIXTURE_LINES[t][0] == "text"}


@pytest.mark.parametrize(("paper", "name"), sorted(TEXT_CELLS))
def test_text_tables_hold_each_figure_at_its_row_and_column(paper, name):
    table = paper_table(paper, name)
    cells = TEXT_CELLS[(paper, name)]
    assert list(table.rows) == list(cells)
    for row, figures in cells.items():
        assert len(figures) == len(table.columns)
        for column, figure in zip(table.columns, figures):
            assert table.value(row, column) == figure, (row, column)
    _, first, last = FIXTURE_LINES[(paper, name)]
    text = " ".join(md_lines(first, last))  # and every figure is on the table's own lines
    available = Counter(float(x) for x in re.findall(r"(?<![\d.])\d\.\d+", text))
    wanted = Counter(v for values in table.rows.values() for v in values if v is not None)
    assert not wanted - available, f"figures not on the fixture's lines {first}-{last}: {wanted - available}"


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


@pytest.mark.parametrize("paper", papers())
def test_each_file_cites_its_paper_and_no_file_outside_the_package(paper):
    citation = paper_citation(paper)
    assert citation.authors and all(len(name.split()) >= 2 for name in citation.authors)
    assert citation.title and citation.venue and 2000 < citation.year < 2100 and citation.provenance
    assert citation.arxiv is None or re.fullmatch(r"\d{4}\.\d{5}(v\d+)?", citation.arxiv)
    assert citation.arxiv or citation.doi
    text = (REPO / "src" / "anomalib_lite" / "models" / paper / TABLES_FILE).read_text()
    assert "PAPER_TABLES" not in text and "papers/" not in text and ".txt" not in text


@pytest.mark.parametrize("paper", papers())
def test_the_paper_tables_of_one_paper_sit_on_separate_lines_of_its_text(paper):
    """Keys of one paper table (UTAD's table1 and table1_baselines) may share lines; two paper tables may not."""
    spans: dict[str, tuple[int, int]] = {}
    for table in paper_tables(paper).values():
        first, last = spans.get(table.table, table.text_lines)
        spans[table.table] = (min(first, table.text_lines[0]), max(last, table.text_lines[1]))
    ordered = sorted(spans.values())
    assert all(end < start for (_, end), (start, _) in zip(ordered, ordered[1:])), ordered


def test_cite_names_the_paper_table_its_authors_section_and_page():
    assert paper_table("igd", "table1").cite() == (
        "IGD Table 1 (Chen et al. 2021, arXiv:2101.10043v1, Sec. 4.3 Experiments on MNIST, Fashion MNIST and "
        "CIFAR10, p. 6)"
    )
    assert (
        paper_table("msfi", "table3").cite()
        == "MSFI Table III (Hu and Lai 2022, arXiv:2212.05786, Sec. III.D.2 Multi-scale process)"
    )
    assert (
        paper_table("hfr", "table4").cite().startswith("HFR Table 4 (Chen et al. 2024, arXiv:2405.09148v1, Sec. 4.1.2")
    )


def test_citation_short_and_reference():
    one = PaperCitation(("Ada Lovelace",), "Notes", "A journal", 1843, None, "10.1/x", "ours")
    assert one.short() == "Lovelace 1843, doi:10.1/x"
    assert one.reference() == "Ada Lovelace. Notes. A journal, 1843. doi:10.1/x."
    three = PaperCitation(("A B", "C D", "E F"), "T", "arXiv preprint", 2020, "2001.00001", None, "ours")
    assert three.short() == "B et al. 2020, arXiv:2001.00001"
    assert paper_citation("utad").reference() == (
        "Yunfei Liu, Chaoqun Zhuang, Feng Lu. Unsupervised Two-Stage Anomaly Detection. arXiv preprint, 2021. "
        "arXiv:2103.11671."
    )


def _hfr_file_with(change) -> str:
    """The text of HFR's file after ``change`` (a function that edits its parsed dictionary in place)."""
    raw = OmegaConf.to_container(
        OmegaConf.create((REPO / "src" / "anomalib_lite" / "models" / "hfr" / TABLES_FILE).read_text())
    )
    change(raw)
    return OmegaConf.to_yaml(raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw["tables"]["table1"].pop("caption"), "hfr/paper_tables.yaml table1: missing caption"),
        (lambda raw: raw["citation"].pop("arxiv"), "citation: missing arxiv"),
        (lambda raw: raw.pop("citation"), "hfr/paper_tables.yaml: missing citation"),
        (lambda raw: raw["tables"]["table1"].update(text_lines=[81, 59]), r"table1: text_lines \[81, 59\]"),
        (lambda raw: raw["citation"].update(arxiv=None), "an arXiv id or a DOI"),
        (lambda raw: raw["tables"]["table3"]["rows"]["grid"].pop(), r"table3: rows \['grid'\] do not have 8 values"),
    ],
)
def test_a_bad_file_is_refused_naming_the_table_and_field(change, message):
    assert parse_paper_file("hfr", _hfr_file_with(lambda raw: None))[1].keys() == paper_tables("hfr").keys()
    with pytest.raises(ValueError, match=message):
        parse_paper_file("hfr", _hfr_file_with(change))

"""The run's outputs for a researcher: per-defect metrics in metrics.json, curve CSVs and PNGs, TensorBoard
images, report.html (self-contained) and scripts/plot.py."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from anomalib_lite.metrics import pixel_metrics
from anomalib_lite.reporting import plots
from anomalib_lite.reporting.curves import read_curves, thin_curve, write_curves
from anomalib_lite.reporting.plots import run_curves
from anomalib_lite.reporting.run_report import render_report

from conftest import TINY, run_entry


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One tiny HFR run on the synthetic ``brick`` category (four defect types)."""
    root = tmp_path_factory.mktemp("report")
    run = root / "run"
    result = run_entry(
        "train.py", *TINY, "eval.n_maps=3", "category=brick", f"data.root={root / 'data'}", f"hydra.run.dir={run}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run


class Page(HTMLParser):
    """The ``<img>`` sources and the text of each table row of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)


def parse(path) -> Page:
    page = Page()
    page.feed(path.read_text())
    page.close()
    return page


def test_a_run_writes_per_defect_metrics_curves_tensorboard_images_and_a_self_contained_report(trained_run):
    brick = json.loads((trained_run / "metrics.json").read_text())["categories"]["brick"]
    assert sorted(brick["per_defect"]) == ["hole", "patch", "scratch", "stain"]
    assert all(v["n_images"] == 4 + 2 and v["n_anomalous"] == 2 for v in brick["per_defect"].values())

    curves = read_curves(trained_run / "curves" / "brick")
    assert sorted(curves) == ["image_roc", "pixel_roc", "pro"]
    for name, metric, limit in (
        ("image_roc", "image_auroc", 1),
        ("pixel_roc", "pixel_auroc", 1),
        ("pro", "aupro", 0.3),
    ):
        fpr, y = curves[name]
        assert fpr[0] == 0 and fpr[-1] == pytest.approx(limit) and np.all(np.diff(fpr) >= 0)
        assert np.sum(np.diff(fpr) * (y[1:] + y[:-1]) / 2) / limit == pytest.approx(brick[metric], abs=2e-3)
    assert (trained_run / "curves" / "brick" / "curves.png").is_file()

    events = EventAccumulator(str(trained_run / "tensorboard" / "brick"), size_guidance={"images": 0})
    events.Reload()
    assert "curves/curves" in events.Tags()["images"]
    overlays = sorted(p.stem for p in (trained_run / "maps" / "brick").glob("*.png") if "_stages" not in p.stem)
    assert sorted(t[len("overlays/") :] for t in events.Tags()["images"] if t.startswith("overlays/")) == overlays
    assert "metrics/stain/aupro" in events.Tags()["scalars"]

    page = parse(trained_run / "report.html")
    assert len(page.images) == 1 + len(overlays) == 4
    assert all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in page.images)
    rows = {row[0]: row for row in page.rows if row}
    assert rows["brick"][1] == f"{brick['image_auroc']:.4f}" and rows["brick"][3] == f"{brick['aupro']:.4f}"
    for defect, values in brick["per_defect"].items():
        assert rows[f"{defect} vs good"][3] == f"{values['aupro']:.4f}"
    assert rows["model"][1] == "hfr" and rows["image size"][1] == "64" and rows["seed"][1] == "0"
    text = (trained_run / "report.html").read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text and "<link" not in text


def test_the_report_of_several_categories_has_each_ones_rows_and_the_mean(tmp_path):
    per_defect = {"crack": {"image_auroc": 0.5, "aupro": 0.25, "n_images": 3}}
    results = {
        "model": "msfi",
        "data": "mvtec",
        "categories": {
            "bottle": {"image_auroc": 0.75, "aupro": 0.5, "per_defect": per_defect, "note": "a note"},
            "screw": {"image_auroc": 0.25, "aupro": None},
        },
    }
    (tmp_path / "metrics.json").write_text(json.dumps(results))
    (tmp_path / "curves" / "bottle").mkdir(parents=True)
    config = {"model": {"name": "msfi", "epochs": 3}, "data": {"name": "mvtec", "image_size": 256}, "seed": 4}
    (tmp_path / "report.html").write_text(render_report(tmp_path, config))
    page = parse(tmp_path / "report.html")
    rows = {row[0]: row for row in page.rows if row}
    assert rows["bottle"][1:4] == ["0.7500", "-", "0.5000"] and rows["crack vs good"][1:4] == ["0.5000", "-", "0.2500"]
    assert rows["screw"][1:4] == ["0.2500", "-", "-"] and rows["mean"][1:4] == ["0.5000", "-", "0.5000"]
    assert rows["epochs"][1] == "epochs 3" and rows["seed"][1] == "4"
    text = (tmp_path / "report.html").read_text()
    assert "bottle: a note" in text and "install the plots extra" in text and page.images == []


def test_curve_files_are_thinned_within_the_grid_and_keep_both_ends():
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((6, 64, 64)) > 0.7)
    maps = torch.rand(6, 64, 64, generator=torch.Generator().manual_seed(0)) + masks * 0.3
    exact = pixel_metrics(maps, masks, curves=True)
    thinned = thin_curve(exact.roc, grid=100)
    assert exact.roc.fpr.numel() > 2000 and thinned.fpr.numel() <= 4 * 100 + 2
    assert (thinned.fpr[0], thinned.fpr[-1], thinned.y[-1]) == (0, 1, 1)
    assert thinned.area() == pytest.approx(exact.pixel_auroc, abs=2 / 100)
    # Every kept point is one of the exact curve's corners.
    corners = set(zip(exact.roc.fpr.tolist(), exact.roc.y.tolist()))
    assert set(zip(thinned.fpr.tolist(), thinned.y.tolist())) <= corners


def test_without_matplotlib_the_csvs_are_written_and_one_line_names_the_extra(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.setattr(plots, "_warned", False)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[1, 2:5, 2:5] = True
    curves = pixel_metrics(torch.rand(2, 8, 8) + masks, masks, curves=True)
    written = write_curves({"pixel_roc": curves.roc, "pro": curves.pro}, tmp_path)
    with caplog.at_level(logging.WARNING, logger="anomalib_lite"):
        for _ in range(2):
            assert plots.plot_curves({"run": read_curves(tmp_path)}, tmp_path / "curves.png") is None
    assert [p.name for p in written] == ["pixel_roc.csv", "pro.csv"] and not (tmp_path / "curves.png").exists()
    assert [r.message for r in caplog.records] == [plots.MISSING] and "'.[plots]'" in plots.MISSING
    with (tmp_path / "pro.csv").open() as f:
        assert next(csv.reader(f)) == ["fpr", "pro", "threshold"]


def test_plot_draws_several_runs_on_one_figure_and_names_a_folder_without_runs(trained_run, tmp_path):
    second = tmp_path / "second_run"
    shutil.copytree(trained_run, second, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    result = run_entry("scripts/plot.py", str(trained_run), str(second), "--out", str(tmp_path / "figures"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "figures" / "curves_brick.png").stat().st_size > 10_000
    assert list(run_curves([trained_run, second], None)["brick"]) == ["run (hfr)", "second_run (hfr)"]
    absent = run_entry("scripts/plot.py", str(tmp_path / "figures"))
    assert absent.returncode == 1 and "no metrics.json" in absent.stderr and "Traceback" not in absent.stderr


@pytest.mark.slow
def test_eval_writes_the_same_per_defect_metrics_curves_and_its_own_report(trained_run, tmp_path):
    run = tmp_path / "eval"
    checkpoint = trained_run / "checkpoints" / "brick" / "last.pt"
    result = run_entry("eval.py", f"ckpt_path={checkpoint}", "progress=false", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((trained_run / "metrics.json").read_text())["categories"]["brick"]["per_defect"]
    evaluated = json.loads((run / "metrics.json").read_text())["categories"]["brick"]["per_defect"]
    assert list(evaluated) == list(trained)
    for defect, values in trained.items():
        assert evaluated[defect] == pytest.approx(values, abs=1e-6)
    assert (run / "curves" / "brick" / "pro.csv").read_text() == (
        trained_run / "curves" / "brick" / "pro.csv"
    ).read_text()
    page = parse(run / "report.html")
    assert page.images and all(src.startswith("data:") for src in page.images)
    assert {row[0] for row in page.rows if row} >= {"brick", "stain vs good", "model", "seed"}

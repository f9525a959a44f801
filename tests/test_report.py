"""The run's outputs for a researcher: per-defect metrics in metrics.json, curve CSVs and PNGs, TensorBoard
images, report.html (self-contained; its gallery, colour bar, score histogram, losses and timings, stages and
setting) and scripts/plot.py."""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from anomalib_lite.metrics import pixel_metrics
from anomalib_lite.metrics.predictions import Predictions
from anomalib_lite.pipeline.evaluation import write_scores
from anomalib_lite.reporting import plots
from anomalib_lite.reporting.curves import read_curves, thin_curve, write_curves
from anomalib_lite.reporting.gallery import read_gallery, save_gallery
from anomalib_lite.reporting.overlays import colour_map, overlay_panel
from anomalib_lite.reporting.plots import run_curves, score_histogram
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


def parse_text(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def parse(path) -> Page:
    return parse_text(path.read_text())


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
    gallery = read_gallery(trained_run / "maps" / "brick")
    overlays = sorted({Path(e["file"]).stem for group in gallery["groups"].values() for e in group})
    assert sorted(t[len("overlays/") :] for t in events.Tags()["images"] if t.startswith("overlays/")) == overlays
    assert "metrics/stain/aupro" in events.Tags()["scalars"]

    page = parse(trained_run / "report.html")
    # The score histogram, the colour bar, each overlay once, the curves (HFR has no stages; no loss recorded yet).
    losses = 1 if brick.get("training", {}).get("stages") else 0
    assert len(page.images) == 2 + len(overlays) + 1 + losses
    assert all(src.startswith("data:image/png;base64,") for src in page.images)  # 64 px panels stay PNG
    rows: dict[str, list[str]] = {}
    for row in filter(None, page.rows):  # the first row of each name: the setting and metrics tables come first
        rows.setdefault(row[0], row)
    assert rows["brick"][1] == f"{brick['image_auroc']:.4f}" and rows["brick"][3] == f"{brick['aupro']:.4f}"
    for defect, values in brick["per_defect"].items():
        assert rows[f"{defect} vs good"][3] == f"{values['aupro']:.4f}"
    assert rows["model"][1] == "hfr" and rows["image size"][1] == "64" and rows["seed"][1] == "0"
    setting = json.loads((trained_run / "metrics.json").read_text())["setting"]
    assert rows["precision"][1] == f"{setting['precision']} (trainer.precision=auto)"  # used, then requested
    assert rows["epochs"][1] == "15 (capped at 1 per stage by trainer.max_epochs)"  # the recipe's 15, not "epochs 15"
    ((stage,),) = setting["schedule"].values()
    assert rows["stages run"][1] == f"{stage['stage']} 1 epoch ({stage['steps']} steps)" and rows["device"][1] == "cpu"
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
    assert rows["epochs"][1] == "3" and rows["seed"][1] == "4"
    assert rows["category"][1:4] == ["image AUROC", "pixel AUROC", "AUPRO"]  # the catalogue's titles, not keys
    text = (tmp_path / "report.html").read_text()
    assert "bottle: a note" in text and "install the plots extra" in text and page.images == []
    assert "image_auroc" not in text and "Training and timings" not in text  # no timings recorded: no table


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


# A fabricated category: 5 good images, then 5 anomalous ones (hole, scratch); scores chosen so that the two
# highest-scoring good images are #1 (0.9) and #3 (0.8), the two lowest-scoring anomalous ones #7 (0.05), #5 (0.15).
SCORES = [0.1, 0.9, 0.2, 0.8, 0.3, 0.15, 0.95, 0.05, 0.7, 0.6]
DEFECTS = ["good"] * 5 + ["hole", "hole", "scratch", "scratch", "scratch"]
TRAINING = {
    "seconds": 12.5,
    "stages": [
        {"name": "ie_net", "epochs": 3, "seconds": 8.0, "images_per_second": 40.0, "batch_size": 8,
         "learning_rate": 0.001, "peak_memory_mib": None, "loss": [0.9, 0.5, 0.25]},
        {"name": "expert_net", "epochs": 2, "seconds": 4.5, "images_per_second": 30.0, "batch_size": 4,
         "learning_rate": None, "peak_memory_mib": 0.01171875, "loss": [2.0, 1.5]},
    ],
}  # fmt: skip


def fabricated_run(folder: Path, pixel_threshold: float | None = 0.75, training: dict | None = TRAINING) -> Path:
    """A run folder with a metrics.json, scores CSV and gallery (with two-stage intermediates) of fabricated data;
    its maps range over [-2, 5] exactly."""
    n, side = len(SCORES), 16
    labels = torch.tensor([int(d != "good") for d in DEFECTS])
    masks = torch.zeros(n, side, side, dtype=torch.bool)
    masks[5:, 4:10, 4:10] = True
    maps = torch.rand(n, 8, 8, generator=torch.Generator().manual_seed(0))
    maps[0, 0, 0], maps[9, 3, 3] = -2.0, 5.0
    images = torch.full((n, side, side, 3), 120, dtype=torch.uint8)
    paths = [f"/data/cat/test/{d}/{i:03d}.png" for i, d in enumerate(DEFECTS)]
    map_masks = masks[:, ::2, ::2]  # the evaluator's masks are at the maps' size
    pred = Predictions(torch.tensor(SCORES), labels, maps, map_masks, torch.ones(n, dtype=torch.bool), paths, DEFECTS)
    metrics = {"image_auroc": 0.5, "image_threshold": 0.5, "n_images": n, "inference_ms_per_image": 1.25}
    if pixel_threshold is not None:
        metrics["pixel_threshold"] = pixel_threshold
    if training is not None:
        metrics["training"] = training

    def intermediates(chosen: list[int]) -> dict[str, torch.Tensor]:
        return {"input": torch.zeros(len(chosen), 3, side, side), "impression": torch.ones(len(chosen), 3, side, side)}

    save_gallery(images, masks, pred, metrics, 4, folder / "maps" / "cat", intermediates)
    write_scores(pred, folder / "scores" / "cat.csv")
    setting = {"model": "utad", "precision": "fp32", "device": "cpu", "seed": 0,
               "schedule": {"cat": [{"stage": "ie_net", "epochs": 3, "steps": 30}]}}  # fmt: skip
    results = {"model": "utad", "data": "fab", "setting": setting, "categories": {"cat": metrics}}
    (folder / "metrics.json").write_text(json.dumps(results))
    return folder


UTAD_CONFIG = {"model": {"name": "utad", "ie_epochs": 3, "expert_epochs": 2}, "trainer": {"precision": "auto"}}


def section(text: str, css: str) -> str:
    """The inside of the first ``<div class="… css">`` of ``text`` (gallery groups hold no nested div)."""
    match = re.search(rf'<div class="[^"]*\b{css}\b[^"]*"[^>]*>(.*?)</div>', text, re.S)
    assert match, css
    return match.group(1)


def captions(block: str) -> list[str]:
    """The text of each figcaption in ``block``, tags removed."""
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", block, re.S)]


def test_the_gallery_shows_the_highest_scoring_normals_and_lowest_scoring_anomalies_with_their_labels(tmp_path):
    run = fabricated_run(tmp_path)
    text = render_report(run, UTAD_CONFIG)
    false_positives = captions(section(text, "false_positives"))
    false_negatives = captions(section(text, "false_negatives"))
    assert [c.split(" · ")[0] for c in false_positives] == ["score 0.9", "score 0.8"]
    assert [c.split(" · ")[0] for c in false_negatives] == ["score 0.05", "score 0.15"]
    assert all("label: good" in c and "predicted: anomalous false positive" in c for c in false_positives)
    assert "label: scratch" in false_negatives[0] and "label: hole" in false_negatives[1]
    assert all("predicted: good false negative" in c for c in false_negatives)
    assert "good/001.png" in false_positives[0] and "scratch/007.png" in false_negatives[0]
    # The sample leaves out what the worst cases show; every image is drawn once.
    sample = captions(section(text, "sample"))
    assert not {c.split(" · ")[0] for c in sample} & {c.split(" · ")[0] for c in false_positives + false_negatives}
    drawn = sorted(p.name for p in (run / "maps" / "cat").glob("*.png") if p.name[-11:] != "_stages.png")
    shown = read_gallery(run / "maps" / "cat")["groups"]
    assert drawn == sorted({e["file"] for g in shown.values() for e in g} | {"colorbar.png"})
    page = parse_text(text)
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)


def test_the_colour_bar_spans_the_maps_range_and_marks_the_pixel_threshold(tmp_path):
    text = render_report(fabricated_run(tmp_path), UTAD_CONFIG)
    bar = re.search(r'<div class="colourbar" data-vmin="([^"]+)" data-vmax="([^"]+)">(.*?)</div></div>', text, re.S)
    assert (float(bar.group(1)), float(bar.group(2))) == (-2.0, 5.0)  # the fabricated maps' min and max
    ticks = [float(t) for t in re.findall(r'<span class="tick"[^>]*>([^<]+)</span>', bar.group(3))]
    assert ticks == pytest.approx([-2.0, -0.25, 1.5, 3.25, 5.0])
    left = float(re.search(r'class="marker" style="left:([0-9.]+)%"', bar.group(3)).group(1))
    assert left == pytest.approx(100 * (0.75 + 2) / 7, abs=1e-3) and "pixel threshold 0.75" in bar.group(3)
    assert "inferno (matplotlib)" in text


def test_the_histogram_counts_every_score_by_group(tmp_path):
    text = render_report(fabricated_run(tmp_path), UTAD_CONFIG)
    table = re.search(r'<table class="histogram">(.*?)</table>', text, re.S).group(1)
    header = re.findall(r"<th>([^<]*)</th>", table)
    assert header == ["score bin", "good", "hole", "scratch"]
    bins = [re.findall(r"<td>([^<]*)</td>", row) for row in re.findall(r"<tr><td>.*?</tr>", table)]
    totals = {name: sum(int(row[1 + k]) for row in bins) for k, name in enumerate(header[1:])}
    assert totals == {"good": 5, "hole": 2, "scratch": 3}
    summary = {r[0]: r for r in parse_text(text).rows if r and r[0] in ("good", "hole", "scratch")}
    assert [summary[g][5] for g in ("good", "hole", "scratch")] == ["2", "1", "2"]  # score ≥ threshold 0.5


def test_score_histogram_against_a_naive_count():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=200).tolist()
    groups = rng.choice(["good", "a", "b"], size=200).tolist()
    histogram = score_histogram(scores, groups, bins=7)
    assert list(histogram.counts) == ["good", *dict.fromkeys(g for g in groups if g != "good")]
    edges = histogram.edges
    assert edges[0] == min(scores) and edges[-1] == max(scores) and len(edges) == 8
    for name, counts in histogram.counts.items():
        naive = [0] * 7
        for score, group in zip(scores, groups):
            if group == name:
                b = next(b for b in range(7) if score < edges[b + 1] or b == 6)
                naive[b] += 1
        assert counts.tolist() == naive


def test_losses_and_timings_are_shown_when_recorded_and_skipped_when_not(tmp_path):
    text = render_report(fabricated_run(tmp_path / "with"), UTAD_CONFIG)
    rows = {tuple(r[:2]): r for r in parse_text(text).rows if r and r[0] == "cat"}
    ie, expert, total = rows[("cat", "ie_net")], rows[("cat", "expert_net")], rows[("cat", "all")]
    assert ie[2:9] == ["3", "8", "0.001", "8", "40", "-", "0.25"]  # epochs, batch, lr, s, img/s, MiB, last loss
    assert expert[4] == "-" and expert[7] == "0.0" and total[5] == "12.5" and total[9] == "1.25"
    assert "<h4>Training loss</h4>" in text
    bare = render_report(fabricated_run(tmp_path / "without", training=None), UTAD_CONFIG)
    assert "Training loss" not in bare and "ie_net 3 epochs" in bare  # the schedule row stays
    assert [r for r in parse_text(bare).rows if r[:2] == ["cat", ""]][0][9] == "1.25"  # inference only


def test_stages_and_the_resolved_setting_are_shown(tmp_path):
    text = render_report(fabricated_run(tmp_path), UTAD_CONFIG)
    assert "Left to right: input | impression | anomaly map" in text
    stages = section(text, "stages")
    assert len(re.findall("<img ", stages)) == len(list((tmp_path / "maps" / "cat").glob("*_stages.png"))) > 0
    rows = {r[0]: r for r in parse_text(text).rows if r}
    assert rows["precision"][1] == "fp32 (trainer.precision=auto)" and rows["device"][1] == "cpu"
    assert rows["epochs"][1] == "ie_epochs 3, expert_epochs 2" and rows["stages run"][1] == "ie_net 3 epochs (30 steps)"


def test_the_predicted_mask_is_outlined_only_with_a_pixel_threshold(tmp_path):
    image = np.full((8, 8, 3), 90, np.uint8)
    hot = np.zeros((8, 8), np.float32)
    hot[2:6, 2:6] = 1.0
    outline = colour_map().outline
    drawn = overlay_panel(image, hot, None, 0.0, 1.0, pixel_threshold=0.5)[:, 16:]
    assert (drawn[2, 2] == outline).all() and (drawn[1, 2] == 0).all() and not (drawn[4, 4] == outline).all()
    plain = overlay_panel(image, hot, None, 0.0, 1.0)[:, 16:]
    assert not (plain == np.array(outline, np.uint8)).all(axis=2).any()
    text = render_report(fabricated_run(tmp_path, pixel_threshold=None), UTAD_CONFIG)
    assert "metrics.json records no pixel_threshold" in text and 'class="marker"' not in text


@pytest.mark.parametrize("colour", [(0, 200, 0), (255, 255, 255), (0, 0, 0)])
def test_the_ground_truth_outline_contrasts_with_any_image(colour):
    image = np.full((8, 8, 3), colour, np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    outlined = overlay_panel(image, np.zeros((8, 8), np.float32), mask, 0.0, 1.0)[:, 8:16]
    ring = outlined[1:7, 1:7].reshape(-1, 3).astype(int)
    assert np.abs(ring - colour).sum(axis=1).max() >= 255 * 2  # some outline pixel is far from the image colour


def test_the_colours_are_matplotlibs_inferno_or_a_labelled_close_fallback(monkeypatch):
    reference = (matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).round()
    assert np.array_equal(colour_map().table, reference.astype(np.uint8))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    colour_map.cache_clear()
    try:
        fallback = colour_map()
    finally:
        colour_map.cache_clear()
    assert "matplotlib not installed" in fallback.name
    assert np.abs(fallback.table.astype(int) - reference).max() <= 7
    assert fallback.outline == (0, 255, 255)


def test_without_matplotlib_the_report_keeps_its_tables(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(plots, "_warned", True)
    colour_map.cache_clear()
    try:
        text = render_report(fabricated_run(tmp_path), UTAD_CONFIG)
    finally:
        colour_map.cache_clear()
    assert "piecewise-linear approximation (matplotlib not installed)" in text
    assert "<details open><summary>Histogram counts" in text and "Training loss" not in text
    assert "the last loss is in Timings" in text and 'class="colourbar"' in text


def test_a_run_written_before_gallery_json_still_shows_its_overlays(tmp_path):
    results = {"model": "hfr", "data": "mvtec", "categories": {"cat": {"image_auroc": 0.5}}}
    (tmp_path / "metrics.json").write_text(json.dumps(results))
    (tmp_path / "maps" / "cat").mkdir(parents=True)
    for name in ("hole_001", "hole_001_stages"):
        Image.fromarray(np.zeros((4, 12, 3), np.uint8)).save(tmp_path / "maps" / "cat" / f"{name}.png")
    page = parse_text(render_report(tmp_path, {}))
    assert len(page.images) == 1 and page.images[0].startswith("data:image/png;base64,")  # the overlay, not stages

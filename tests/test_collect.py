"""scripts/collect.py: a sweep folder becomes one table with the mean; failed jobs are listed, not dropped."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import run_entry


def _job(folder, name, image_auroc=None, category="3"):
    job = folder / name
    (job / ".hydra").mkdir(parents=True)
    if image_auroc is not None:
        metrics = {"image_auroc": image_auroc, "pixel_auroc": None, "aupro": None, "image_f1_max": 0.5}
        (job / "metrics.json").write_text(json.dumps({"categories": {category: metrics}}))


def test_collect_makes_one_table_with_the_mean_and_lists_failed_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, "data.normal_class=0,data=mnist5k,model=igd", 0.9, "0")
    _job(sweep, "data.normal_class=1,data=mnist5k,model=igd", 0.7, "1")
    _job(sweep, "data.normal_class=2,data=mnist5k,model=igd")  # failed: no metrics.json
    result = run_entry("scripts/collect.py", str(sweep))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "| data.normal_class=0 | 0.9000 | - | - | 0.5000 | - | - | - | - |" in lines
    assert "| data.normal_class=1 | 0.7000 | - | - | 0.5000 | - | - | - | - |" in lines
    assert "| mean | 0.8000 | - | - | 0.5000 | - | - | - | - |" in lines
    assert "No metrics.json (failed or unfinished): data.normal_class=2" in result.stdout
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert [r["run"] for r in rows] == ["data.normal_class=0", "data.normal_class=1", "mean"]
    assert float(rows[-1]["image_auroc"]) == pytest.approx(0.8) and rows[-1]["pixel_auroc"] == ""
    assert (sweep / "results.md").read_text().startswith("| run |")


def test_collect_of_a_folder_without_runs_fails_clearly(tmp_path):
    result = run_entry("scripts/collect.py", str(tmp_path))
    assert result.returncode == 1 and "no run folder" in result.stderr


def test_collect_by_an_override_averages_over_the_others(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, "category=a,model.scales=[128]", 0.6, "a")
    _job(sweep, "category=b,model.scales=[128]", 0.8, "b")
    _job(sweep, "category=a,model.scales=[128,256]", 1.0, "a")
    result = run_entry("scripts/collect.py", str(sweep), "--by", "model.scales")
    assert result.returncode == 0, result.stderr
    assert "| model.scales=[128] (mean of 2) | 0.7000 | - | - | 0.5000 | - | - | - | - |" in result.stdout
    assert "| model.scales=[128,256] (mean of 1) | 1.0000 | - | - | 0.5000 | - | - | - | - |" in result.stdout
    assert "| mean |" not in result.stdout


def test_every_table_has_a_row_per_defect_type_beside_the_overall_one(tmp_path):
    from anomalib_lite.reporting.tables import format_table

    per_defect = {
        "crack": {"image_auroc": 0.25, "pixel_auroc": 0.5, "aupro": 0.125, "n_images": 5},
        "hole": {"image_auroc": 0.75, "pixel_auroc": None, "aupro": None, "n_images": 4},
    }
    metrics = {"image_auroc": 0.5, "pixel_auroc": 0.5, "aupro": 0.25, "image_f1_max": 0.5, "per_defect": per_defect}
    other = {"image_auroc": 1.0, "pixel_auroc": 1.0, "aupro": 1.0, "image_f1_max": 1.0}
    lines = format_table({"bottle": metrics, "screw": other}).splitlines()
    assert lines[2:6] == [
        "| bottle | 0.5000 | 0.5000 | 0.2500 | 0.5000 | - | - | - | - |",
        "| bottle [crack] | 0.2500 | 0.5000 | 0.1250 | - | - | - | - | - |",
        "| bottle [hole] | 0.7500 | - | - | - | - | - | - | - |",
        "| screw | 1.0000 | 1.0000 | 1.0000 | 1.0000 | - | - | - | - |",
    ]
    # The mean is over the categories, not the defect rows.
    assert lines[6] == "| mean | 0.7500 | 0.7500 | 0.6250 | 0.7500 | - | - | - | - |"

    sweep = tmp_path / "sweep"
    for name, record in (("category=bottle", metrics), ("category=screw", other)):
        (sweep / name / ".hydra").mkdir(parents=True)
        (sweep / name / "metrics.json").write_text(json.dumps({"categories": {name[9:]: record}}))
    result = run_entry("scripts/collect.py", str(sweep))
    assert result.returncode == 0, result.stderr
    assert "| category=bottle [hole] | 0.7500 | - | - | - | - | - | - | - |" in result.stdout.splitlines()
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert [(r["run"], r["defect"]) for r in rows] == [
        ("category=bottle", ""),
        ("category=bottle", "crack"),
        ("category=bottle", "hole"),
        ("category=screw", ""),
        ("mean", ""),
    ]
    assert float(rows[1]["aupro"]) == 0.125 and float(rows[-1]["aupro"]) == 0.625

"""scripts/reproduce.py: what runs where data is present, stand-ins and skips, and the comparison table."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from anomalib_lite.cli.reproduce import TABLES, Dataset, Plan, comparison_rows, plan_dataset

from conftest import REPO, run_entry, write_mvtec_category


def make_mvtec(root, category):
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / category / sub).mkdir(parents=True)
    write_mvtec_category(root, category, np.random.default_rng(0), mask_for_all=True)


def test_present_categories_run_and_absent_ones_are_listed(tmp_path):
    make_mvtec(tmp_path / "mvtec", "screw")
    plan = plan_dataset(TABLES["hfr_mvtec"].datasets[0], {"mvtec": str(tmp_path / "mvtec")}, None, REPO)
    assert plan.data == "mvtec" and plan.categories == ["screw"] and not plan.stand_in
    assert len(plan.absent) == 14 and "bottle" in plan.absent


def test_absent_data_falls_back_to_its_stand_in_or_is_skipped(tmp_path):
    roots = {"mvtec": str(tmp_path / "none"), "mnist": str(tmp_path / "none"), "cifar10": str(tmp_path / "none")}
    mvtec = plan_dataset(TABLES["utad_mvtec"].datasets[0], roots, ["brick", "bottle"], REPO)
    assert mvtec.data == "synthetic" and mvtec.stand_in and mvtec.categories == ["brick"]
    assert "stand-in" in mvtec.note and "prepare_data.py mvtec" in mvtec.note
    mnist = plan_dataset(TABLES["igd_one_class"].datasets[0], roots, ["3"], REPO)
    assert mnist.data == "mnist5k" and mnist.categories == ["3"]
    nothing = plan_dataset(TABLES["utad_mvtec"].datasets[0], roots, ["bottle"], REPO)  # not a synthetic category
    assert nothing.data is None and "skipped" in nothing.note
    cifar = plan_dataset(TABLES["igd_one_class"].datasets[2], roots, None, REPO)
    assert cifar.data is None and not cifar.categories
    assert "skipped" in cifar.note and "test_batch" in cifar.note


def test_the_difference_is_given_only_against_the_real_data():
    real = Plan(Dataset("mvtec", {"pixel_auroc": 0.9}), "mvtec", ["bottle"])
    stand_in = Plan(Dataset("mnist", {"image_auroc": 0.99}, "mnist5k"), "mnist5k", ["0"])
    results = {"mvtec": {"mean": {"pixel_auroc": 0.8765}, "runs": 1}, "mnist": {"mean": {"image_auroc": 0.95}}}
    rows = comparison_rows([real, stand_in], results)
    assert rows[0]["difference"] == "-0.0235" and rows[0]["ours"] == "0.8765"
    assert rows[1]["difference"] == "-" and rows[1]["ours"] == "0.9500" and rows[1]["data used"] == "mnist5k"


def test_reproduce_runs_the_sweep_and_writes_the_comparison(tmp_path):
    make_mvtec(tmp_path / "mvtec", "bottle")
    out = tmp_path / "report"
    result = run_entry("scripts/reproduce.py", "hfr_mvtec", "--root", f"mvtec={tmp_path / 'mvtec'}", "--only",
                       "bottle,screw", "--out", str(out), "data.image_size=64", "data.batch_size=4",
                       "trainer.max_epochs=1", "trainer.progress=false")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    markdown = (out / "results.md").read_text()
    assert "categories absent, not run: screw" in markdown
    assert "Runs: only bottle, screw (--only)" in markdown and "trainer.max_epochs=1" in markdown
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["metric"] for r in rows] == ["image_auroc", "pixel_auroc", "aupro"]
    for row in rows:
        assert row["data used"] == "mvtec" and row["runs"] == "1"
        assert float(row["difference"]) == pytest.approx(float(row["ours"]) - float(row["paper"]), abs=1.5e-4)
    assert (out / "mvtec" / "bottle" / "metrics.json").is_file()
    again = run_entry("scripts/reproduce.py", "hfr_mvtec", "--out", str(out), "--dry-run")
    assert again.returncode != 0 and "already holds files" in again.stderr

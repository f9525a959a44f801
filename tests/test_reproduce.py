"""scripts/reproduce.py: what runs where data is present, stand-ins, and a difference only where like meets like."""

from __future__ import annotations

import csv
import dataclasses
import statistics
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.data.mvtec import MVTEC_CATEGORIES
from anomalib_lite.models.igd.config import IGDConfig
from anomalib_lite.pipeline.config import validate
from anomalib_lite.research.paper_figures import paper_table
from anomalib_lite.research.reproduce.command import Options, main, plan_dataset, reproduce
from anomalib_lite.research.reproduce.report import write_report
from anomalib_lite.research.reproduce.results import MEAN, ArmResult, Run, build_cells, paper_setting
from anomalib_lite.research.reproduce.tables import TABLES

from conftest import REPO, run_entry, write_mvtec_category

HFR = TABLES["hfr_mvtec"]
HFR_B = "HFR col B (unlabelled, headline)"
CONFIGS = CONFIG_DIR
HFR_SETTING = paper_setting(HFR, "mvtec", HFR.arms[0], CONFIGS)


def make_mvtec(root, category):
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / category / sub).mkdir(parents=True)
    write_mvtec_category(root, category, np.random.default_rng(0), mask_for_all=True)


def setting(backbone="wide_resnet50_2", stand_in=False, seed=0, dataset="mvtec", base=None, **changes):
    """A run's recorded setting: the table's own (``base``, default HFR's), with ``changes`` (``model.epochs``…)."""
    compared = {**(base or HFR_SETTING), "backbone.name": backbone, "backbone.stand_in": stand_in, "data.name": dataset}
    return {
        "dataset": dataset,
        "seed": seed,
        "image_size": 256,
        "precision": "fp32",
        "commit": "abc",
        "schedule": {"x": [{"stage": "s", "epochs": 1, "steps": 2}]},
        "backbone": {"requested": "wide_resnet50_2", "used": backbone, "stand_in": stand_in},
        "compared": {**compared, **{key.replace("__", "."): value for key, value in changes.items()}},
    }


def hfr_result(runs, data_used="mvtec"):
    result = ArmResult(HFR.arms[0], "mvtec", data_used, runs=runs, expected=HFR_SETTING)
    build_cells(HFR, result)
    return {(c.category, c.metric): c for c in result.cells}, result


def scores(value):
    return {"image_auroc": value, "pixel_auroc": value, "aupro": value}


def test_present_categories_run_and_absent_ones_are_listed(tmp_path):
    make_mvtec(tmp_path / "mvtec", "screw")
    plan = plan_dataset(HFR, "mvtec", {"mvtec": str(tmp_path / "mvtec")}, None, REPO)
    assert plan.data_used == "mvtec" and plan.categories == ["screw"] and not plan.stand_in
    assert len(plan.absent) == 14 and "bottle" in plan.absent


def test_absent_data_falls_back_to_its_stand_in_or_is_skipped(tmp_path):
    roots = {"mvtec": str(tmp_path / "none"), "mnist": str(tmp_path / "none"), "cifar10": str(tmp_path / "none")}
    mvtec = plan_dataset(TABLES["utad_mvtec"], "mvtec", roots, ["brick", "bottle"], REPO)
    assert mvtec.data_used == "synthetic" and mvtec.stand_in and mvtec.categories == ["brick"]
    assert "stand-in" in mvtec.note and "prepare_data.py mvtec" in mvtec.note
    mnist = plan_dataset(TABLES["igd_one_class"], "mnist", roots, ["3"], REPO)
    assert mnist.data_used == "mnist5k" and mnist.categories == ["3"]
    nothing = plan_dataset(TABLES["utad_mvtec"], "mvtec", roots, ["bottle"], REPO)  # not a synthetic category
    assert nothing.data_used is None and "skipped" in nothing.note
    cifar = plan_dataset(TABLES["igd_one_class"], "cifar10", roots, None, REPO)
    assert cifar.data_used is None and not cifar.categories and "test_batch" in cifar.note


def test_the_papers_setting_gives_differences_per_category_and_for_the_mean(tmp_path):
    runs = [Run(Path(c), setting(), {c: scores(0.9 + i / 1000)}) for i, c in enumerate(MVTEC_CATEGORIES)]
    cells, result = hfr_result(runs)
    screw = cells[("screw", "image_auroc")]
    expected = 0.9 + MVTEC_CATEGORIES.index("screw") / 1000 - paper_table("hfr", "table1").value("screw", HFR_B)
    assert screw.reason is None and screw.difference == pytest.approx(expected)
    mean = cells[(MEAN, "aupro")]
    ours = statistics.fmean(0.9 + i / 1000 for i in range(15))
    assert mean.difference == pytest.approx(ours - paper_table("hfr", "table4").value("mean", HFR_B))
    assert mean.paper["paper col A"] == paper_table("hfr", "table4").value("mean", "HFR col A (unlabelled)")
    markdown = write_report(HFR, [result], tmp_path, [])
    assert "| category | image_auroc ours | image_auroc paper | image_auroc paper col A | image_auroc difference |" in (
        markdown
    )
    assert (
        f"| screw | {0.9 + MVTEC_CATEGORIES.index('screw') / 1000:.4f} | 0.9600 | 0.8760 | {expected:+.4f} |"
        in markdown
    )
    assert "Not comparable" not in markdown and "backbone wide_resnet50_2; image size 256" in markdown
    assert "Backbone: wide_resnet50_2, ours (the paper says only 'pre-trained ResNet'" in markdown


def test_the_paper_setting_is_the_experiment_config_with_the_arm():
    assert HFR_SETTING["data.name"] == "mvtec" and HFR_SETTING["backbone.name"] == "wide_resnet50_2"
    assert HFR_SETTING["backbone.weights"] == "imagenet" and HFR_SETTING["backbone.stand_in"] is False
    assert HFR_SETTING["model.epochs"] == 200 and HFR_SETTING["data.image_size"] == 256
    assert HFR_SETTING["eval.fpr_limit"] == 0.3 and HFR_SETTING["trainer.max_epochs"] is None
    scales = TABLES["msfi_scales"]
    one = paper_setting(scales, "mvtec", scales.arms[0], CONFIGS)
    assert one["model.scales"] == [128] and one["backbone.name"] == "resnet50"


def test_a_run_at_64_px_for_one_epoch_with_random_weights_prints_no_difference(tmp_path):
    changes = {
        "data__image_size": 64,
        "eval__map_size": 64,
        "model__epochs": 1,
        "backbone__weights": "none",
        "trainer__max_epochs": 1,
        "eval__fpr_limit": 0.05,
        "backbone__layers": ["layer1"],
    }
    runs = [Run(Path(c), setting(**changes), {c: scores(0.9)}) for c in MVTEC_CATEGORIES]
    cells, result = hfr_result(runs)
    assert all(cell.difference is None for cell in cells.values())
    reason = cells[(MEAN, "aupro")].reason
    for named in (
        "data.image_size 64 (paper: 256)",
        "eval.map_size 64 (paper: 256)",
        "model.epochs 1 (paper: 200)",
        "backbone.weights none (paper: imagenet)",
        "trainer.max_epochs 1 (paper: None)",
        "eval.fpr_limit 0.05 (paper: 0.3)",
        "backbone.layers ['layer1'] (paper: None)",
    ):
        assert named in reason, named
    markdown = write_report(HFR, [result], tmp_path, [])
    assert "+0." not in markdown and "-0." not in markdown and "model.epochs 1 (paper: 200)" in markdown
    for key, value in changes.items():  # each alone is enough
        alone = hfr_result([Run(Path("a"), setting(**{key: value}), {"bottle": scores(0.9)})])[0]
        assert alone[("bottle", "aupro")].difference is None, key


def test_a_longer_budget_is_still_the_papers_setting():
    cells, _ = hfr_result([Run(Path("a"), setting(model__epochs=400), {"bottle": scores(0.9)})])
    assert cells[("bottle", "aupro")].difference is not None


def test_runs_recorded_on_other_data_are_not_compared_whatever_the_plan_said():
    # reproduce.py igd_one_class data=mnist5k: the plan says MNIST, the runs record mnist5k.
    table = TABLES["igd_one_class"]
    expected = paper_setting(table, "mnist", table.arms[0], CONFIGS)
    base = {**expected}
    runs = [
        Run(Path(c), setting("resnet18", dataset="mnist5k", base=base), {c: {"image_auroc": 0.97}})
        for c in map(str, range(10))
    ]
    result = ArmResult(table.arms[0], "mnist", "mnist", runs=runs, expected=expected)
    build_cells(table, result)
    assert result.cells and all(cell.difference is None for cell in result.cells)
    assert "data mnist5k, not MNIST" in result.reason
    same = [Run(r.folder, setting("resnet18", dataset="mnist", base=base), r.categories) for r in runs]
    result = ArmResult(table.arms[0], "mnist", "mnist", runs=same, expected=expected)
    build_cells(table, result)
    assert next(c for c in result.cells if c.category == MEAN).difference is not None


def test_a_seed_that_lacks_a_category_removes_the_mean():
    runs = [Run(Path(f"{c}{s}"), setting(seed=s), {c: scores(0.9)}) for s in (0, 1) for c in MVTEC_CATEGORIES]
    cells, _ = hfr_result(runs)
    assert cells[(MEAN, "aupro")].difference is not None
    cells, _ = hfr_result([r for r in runs if r.folder != Path("screw1")])  # seed 1's screw job failed
    mean = cells[(MEAN, "aupro")]
    assert mean.ours is None and mean.difference is None and "seed 1 lacks screw" in mean.reason
    assert cells[("bottle", "aupro")].difference is not None  # the categories themselves still compare


def test_metrics_at_thresholds_chosen_on_our_test_set_are_never_compared():
    table = TABLES["igd_mvtec"]
    expected = paper_setting(table, "mvtec", table.arms[0], CONFIGS)
    metrics = {"image_auroc": 0.9, "image_accuracy": 0.9, "pixel_auroc_per_image": 0.9, "n_pixel_auroc_images": 3}
    runs = [Run(Path(c), setting("resnet18", base=expected), {c: metrics}) for c in MVTEC_CATEGORIES]
    result = ArmResult(table.arms[0], "mvtec", "mvtec", runs=runs, expected=expected)
    build_cells(table, result)
    accuracy = [c for c in result.cells if c.metric == "image_accuracy"]
    assert accuracy and all(c.difference is None and "F1-optimal threshold" in c.reason for c in accuracy)
    assert all(c.difference is not None for c in result.cells if c.metric == "image_auroc")


def test_an_arm_that_is_ours_beside_a_paper_row_is_never_compared():
    table = TABLES["utad_ablation"]
    baseline = next(arm for arm in table.arms if arm.label.startswith("baseline"))
    assert baseline.departure and "fourth" in baseline.departure
    expected = paper_setting(table, "mnist", baseline, CONFIGS)
    runs = [Run(Path("a"), setting("vgg19", dataset="mnist", base=expected), {"0": {"image_auroc": 0.9}})]
    result = ArmResult(baseline, "mnist", "mnist", runs=runs, expected=expected)
    build_cells(table, result)
    assert result.cells and all(c.difference is None for c in result.cells)
    assert result.reason.startswith("ours, not the paper's row")
    dsvdd = next(arm for arm in TABLES["igd_ablation"].arms if arm.label == "+ KD + DSVDD")
    assert "soft-boundary" in dsvdd.departure


def test_a_reproduction_whose_backbone_differs_prints_no_difference(tmp_path):
    runs = [Run(Path(c), setting("tf_efficientnet_lite0", stand_in=True), {c: scores(0.9)}) for c in MVTEC_CATEGORIES]
    cells, result = hfr_result(runs)
    assert all(cell.difference is None for cell in cells.values())
    reason = cells[(MEAN, "aupro")].reason
    assert "backbone.name tf_efficientnet_lite0 (paper: wide_resnet50_2)" in reason
    assert "backbone.stand_in True (paper: False)" in reason
    other = [Run(Path("a"), setting("resnet18"), {"bottle": scores(0.9)})]  # another backbone, not a stand-in
    assert all(c.difference is None for c in hfr_result(other)[0].values())
    markdown = write_report(HFR, [result], tmp_path, [])
    assert "n/c" in markdown and "+0." not in markdown and "-0." not in markdown
    assert "- every cell: the setting differs from the paper's: backbone.name tf_efficientnet_lite0" in markdown
    assert "tf_efficientnet_lite0 (stand-in for wide_resnet50_2)" in markdown  # the setting line
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert rows and all(r["difference"] == "" and "backbone" in r["not comparable because"] for r in rows)


def test_stand_in_data_and_runs_without_a_setting_are_not_compared():
    cells, _ = hfr_result([Run(Path("a"), setting(dataset="synthetic"), {"brick": scores(0.9)})], "synthetic")
    assert all(c.difference is None for c in cells.values()) and ("brick", "aupro") in cells
    assert "data synthetic, not MVTec AD" in cells[(MEAN, "aupro")].reason
    cells, _ = hfr_result([Run(Path("a"), None, {"bottle": scores(0.9)})])
    assert cells[("bottle", "aupro")].difference is None
    assert "does not record its whole setting" in cells[("bottle", "aupro")].reason


def test_a_subset_of_categories_compares_each_but_not_the_mean():
    cells, _ = hfr_result([Run(Path("a"), setting(), {"bottle": scores(0.9)})])
    assert cells[("bottle", "pixel_auroc")].difference is not None
    assert cells[(MEAN, "pixel_auroc")].difference is None
    assert "seed 0 lacks cable, capsule" in cells[(MEAN, "pixel_auroc")].reason
    assert cells[("screw", "pixel_auroc")].reason == "not run"


def test_seeds_give_mean_and_sample_std_per_cell_and_for_the_mean():
    values = {0: 0.80, 1: 0.90, 2: 0.95}  # seed -> bottle's value; the other categories get value - 0.1 * i / 15
    runs = [
        Run(Path(f"{c}{s}"), setting(seed=s), {c: scores(values[s] - 0.1 * i / 15)})
        for s in values
        for i, c in enumerate(MVTEC_CATEGORIES)
    ]
    cells, _ = hfr_result(runs)
    bottle = cells[("bottle", "image_auroc")].ours
    assert bottle.n == 3 and bottle.mean == pytest.approx(np.mean([0.8, 0.9, 0.95]))
    assert bottle.std == pytest.approx(np.std([0.8, 0.9, 0.95], ddof=1))
    per_seed = [np.mean([v - 0.1 * i / 15 for i in range(15)]) for v in values.values()]
    mean = cells[(MEAN, "image_auroc")].ours
    assert mean.mean == pytest.approx(np.mean(per_seed)) and mean.std == pytest.approx(np.std(per_seed, ddof=1))
    assert "± " in str(mean)


def test_the_per_image_pixel_auroc_mean_is_over_all_anomalous_images_not_over_categories():
    # IGD L208 / UTAD Table 1 (CAVGA protocol): the mean over every anomalous image of the test set.
    table = TABLES["igd_mvtec"]
    counts = {c: 10 + 5 * i for i, c in enumerate(MVTEC_CATEGORIES)}
    values = {c: 0.6 + 0.02 * i for i, c in enumerate(MVTEC_CATEGORIES)}
    expected = paper_setting(table, "mvtec", table.arms[0], CONFIGS)
    igd_setting = setting("resnet18", base=expected)
    runs = [
        Run(Path(c), igd_setting, {c: {"pixel_auroc_per_image": values[c], "n_pixel_auroc_images": counts[c]}})
        for c in MVTEC_CATEGORIES
    ]
    result = ArmResult(table.arms[0], "mvtec", "mvtec", runs=runs, expected=expected)
    build_cells(table, result)
    mean = next(c for c in result.cells if (c.category, c.metric) == (MEAN, "pixel_auroc_per_image"))
    pooled = sum(values[c] * counts[c] for c in counts) / sum(counts.values())
    assert mean.ours.mean == pytest.approx(pooled) and abs(pooled - np.mean(list(values.values()))) > 0.01
    assert mean.difference == pytest.approx(pooled - 0.91)
    del runs[0].categories["bottle"]["n_pixel_auroc_images"]  # a metrics.json from before the count
    result = ArmResult(table.arms[0], "mvtec", "mvtec", runs=runs, expected=expected)
    build_cells(table, result)
    mean = next(c for c in result.cells if (c.category, c.metric) == (MEAN, "pixel_auroc_per_image"))
    assert mean.ours is None and mean.difference is None and "n_pixel_auroc_images" in mean.reason


def test_an_arm_whose_option_does_not_exist_is_listed_not_run(tmp_path):
    table = TABLES["igd_ablation"]
    lacking = dataclasses.replace(table.arms[0], requires=("model.distill", "model.ablation"))
    assert table.arms[0].missing("igd") == [] and lacking.missing("igd") == ["model.ablation"]
    options = Options(tmp_path / "r", roots={"cifar10": str(tmp_path / "none")}, dry_run=True)
    report = reproduce(dataclasses.replace(table, arms=(lacking, table.arms[-1])), options, REPO)
    assert "needs model.ablation, not in this code" in report
    listing = run_entry("scripts/reproduce.py", "--list")
    assert all(name in listing.stdout for name in TABLES) and "msfi_scales" in listing.stdout


def test_the_igd_ablation_arms_switch_off_the_parts_of_the_papers_table5_columns():
    # IGD Table 5 (L216-221): each column adds KD, a descriptor (DSVDD or GSVDD), then INTER to MS-SSIM.
    expected = {
        "MS-SSIM": (False, "none", False),
        "+ KD": (True, "none", False),
        "+ KD + DSVDD": (True, "svdd", False),
        "+ KD + GSVDD": (True, "gaussian", False),
        "+ KD + GSVDD + INTER": (True, "gaussian", True),
    }
    arms = TABLES["igd_ablation"].arms
    assert [arm.label for arm in arms] == list(expected) == paper_table("igd", "table5").columns[: len(expected)]
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        for arm in arms:
            assert arm.missing("igd") == []
            cfg = validate(compose("train", overrides=["+experiment=igd_one_class", "data=cifar10", *arm.overrides]))
            model = cfg.model
            assert isinstance(model, IGDConfig)
            assert (model.distilled, model.descriptor, model.interpolation) == expected[arm.label], arm.label
    GlobalHydra.instance().clear()


@pytest.mark.slow
def test_reproduce_stops_without_the_papers_backbone_and_runs_marked_with_allow_stand_in(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached WideResNet-50 weights
    make_mvtec(tmp_path / "mvtec", "bottle")
    tiny = [
        "data.image_size=64",
        "data.batch_size=4",
        "trainer.max_epochs=1",
        "trainer.progress=false",
        "eval.n_maps=0",
    ]
    common = ["hfr_mvtec", "--root", f"mvtec={tmp_path / 'mvtec'}", "--only", "bottle,screw"]
    main([*common, "--out", str(tmp_path / "a"), *tiny], workdir=REPO)  # in-process: no start-up
    stopped = capsys.readouterr()
    assert "prepare_data.py weights --name wide_resnet50_2" in stopped.err
    assert "--allow-stand-in" in stopped.out and not (tmp_path / "a" / "HFR").exists()  # stopped before any work
    out = tmp_path / "b"
    result = run_entry("scripts/reproduce.py", *common, "--out", str(out), "--allow-stand-in", "--seeds", "0,1", *tiny)
    assert result.returncode == 0, result.stderr[-3000:]
    markdown = (out / "results.md").read_text()
    assert "categories absent, not run: screw" in markdown and "seeds 0, 1 (--seeds)" in markdown
    assert "tf_efficientnet_lite0 (stand-in for wide_resnet50_2)" in markdown
    rows = [r for r in csv.DictReader((out / "results.csv").open()) if r["category"] == "bottle"]
    hfr = [r for r in rows if r["arm"] == "HFR"]  # the anomalib baselines' arms follow (ours, never compared)
    assert [r["metric"] for r in hfr] == ["image_auroc", "pixel_auroc", "aupro"]
    assert all(
        r["runs"] == "2" and r["difference"] == "" and "backbone.stand_in True" in r["not comparable because"]
        for r in hfr
    )
    assert all(r["difference"] == "" for r in rows) and {r["arm"] for r in rows} == {
        a.label for a in TABLES["hfr_mvtec"].arms
    }
    assert len(list((out / "HFR").rglob("metrics.json"))) == 2
    with pytest.raises(SystemExit):
        main(["hfr_mvtec", "--out", str(out), "--dry-run"], workdir=REPO)
    assert "already holds files" in capsys.readouterr().err
    assert main(["hfr_mvtec", "--out", str(out), "--collect", "--only", "bottle"], workdir=REPO) == 0
    assert "2 runs" in capsys.readouterr().out

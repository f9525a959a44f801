"""scripts/compare.py: DeLong's paired test (against a naive double loop), Welch's test over seeds, refusals."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from anomalib_lite.metrics.significance import delong_test, midranks, structural_components, welch_test
from anomalib_lite.research.compare import main as compare_main


def naive_delong(scores_a, scores_b, labels):
    """AUROCs and their covariance straight from the definitions (DeLong et al. 1988), by double loops."""
    psi = lambda x, y: 1.0 if x > y else 0.5 if x == y else 0.0  # noqa: E731
    positives = [i for i, label in enumerate(labels) if label == 1]
    negatives = [j for j, label in enumerate(labels) if label == 0]
    m, n = len(positives), len(negatives)
    v10, v01 = np.zeros((2, m)), np.zeros((2, n))
    for k, scores in enumerate((scores_a, scores_b)):
        for a, i in enumerate(positives):
            v10[k, a] = sum(psi(scores[i], scores[j]) for j in negatives) / n
        for b, j in enumerate(negatives):
            v01[k, b] = sum(psi(scores[i], scores[j]) for i in positives) / m
    auc = v10.mean(axis=1)
    s10, s01 = np.zeros((2, 2)), np.zeros((2, 2))
    for r in range(2):
        for s in range(2):
            s10[r, s] = sum((v10[r, a] - auc[r]) * (v10[s, a] - auc[s]) for a in range(m)) / (m - 1)
            s01[r, s] = sum((v01[r, b] - auc[r]) * (v01[s, b] - auc[s]) for b in range(n)) / (n - 1)
    return auc, s10 / m + s01 / n, v10, v01


def test_delong_covariance_equals_the_definition_on_a_small_case_with_ties():
    labels = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0])
    a = np.array([0.9, 0.3, 0.6, 0.6, 0.6, 0.1, 0.8, 0.2, 0.5, 0.4, 0.4])  # ties across and within classes
    b = np.array([0.7, 0.7, 0.2, 0.9, 0.1, 0.3, 0.8, 0.3, 0.6, 0.5, 0.0])
    auc, covariance, v10, v01 = naive_delong(a, b, labels)
    result = delong_test(a, b, labels)
    assert result.auroc == pytest.approx(tuple(auc), abs=1e-12)
    assert result.auroc[0] == pytest.approx(roc_auc_score(labels, a)) and result.auroc[1] == pytest.approx(
        roc_auc_score(labels, b)
    )
    np.testing.assert_allclose(result.covariance, covariance, atol=1e-12)
    fast_v10, fast_v01 = structural_components(np.stack([a, b]), labels)
    np.testing.assert_allclose(fast_v10, v10, atol=1e-12)
    np.testing.assert_allclose(fast_v01, v01, atol=1e-12)
    z = (auc[0] - auc[1]) / np.sqrt(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    assert result.z == pytest.approx(z) and result.p_value == pytest.approx(2 * stats.norm.sf(abs(z)))


def test_midranks_equal_scipy():
    values = np.array([3, 1, 2, 2, 5, 1, 2, 0.5])
    np.testing.assert_array_equal(midranks(values), stats.rankdata(values))


def test_identical_scores_differ_by_nothing_and_strongly_different_ones_do():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(40), np.zeros(60)].astype(int)
    good = labels * 2.0 + rng.normal(size=100)
    same = delong_test(good, good.copy(), labels)  # no variance of the difference: no test, not p = 1
    assert same.difference == 0 and math.isnan(same.p_value) and math.isnan(same.z)
    noise = rng.normal(size=100)
    different = delong_test(good, noise, labels)
    assert different.difference > 0.3 and different.p_value < 0.01


def test_delong_refuses_a_single_class():
    with pytest.raises(ValueError, match="anomalous and normal"):
        delong_test(np.ones(4), np.ones(4), np.zeros(4))


@pytest.mark.parametrize(("a", "b"), [([0.9, 0.92, 0.91], [0.85, 0.86, 0.88]), ([0.5, 0.7], [0.6, 0.61, 0.4, 0.55])])
def test_welch_equals_scipy(a, b):
    ours, theirs = welch_test(a, b), stats.ttest_ind(a, b, equal_var=False)
    assert ours.t == pytest.approx(theirs.statistic) and ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)


def test_degenerate_variances_give_an_undefined_test_not_p_0():
    labels = np.r_[np.ones(5), np.zeros(5)].astype(int)
    perfect, inverted = labels * 1.0, 1.0 - labels  # AUROC 1 and 0: each with zero variance
    result = delong_test(perfect, inverted, labels)
    assert result.difference == 1.0 and math.isnan(result.p_value)
    spread_free = welch_test([0.9, 0.9, 0.9], [0.8, 0.8])
    assert spread_free.difference == pytest.approx(0.1) and math.isnan(spread_free.p_value)
    assert math.isnan(welch_test([0.5, 0.5], [0.5, 0.5]).p_value)


def write_run(folder, category, seed, paths, labels, scores, metrics):
    (folder / "scores").mkdir(parents=True)
    setting = {
        "model": "hfr",
        "dataset": "synthetic",
        "seed": seed,
        "image_size": 64,
        "backbone": {"used": "tf_efficientnet_lite0", "requested": "x", "stand_in": True},
    }
    (folder / "metrics.json").write_text(json.dumps({"setting": setting, "categories": {category: metrics}}))
    with (folder / "scores" / f"{category}.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "score"])
        writer.writerows(zip(paths, labels, scores))


def test_compare_two_runs_and_two_seed_groups(tmp_path, capsys):
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(30), np.zeros(30)].astype(int)
    paths = [f"brick/test/{i:03d}.png" for i in range(60)]
    pixel = {"A": [0.80, 0.81, 0.79], "B": [0.60, 0.62, 0.61]}
    for side, shift in (("A", 3.0), ("B", 0.0)):
        for seed in range(3):
            scores = labels * shift + rng.normal(size=60)
            metrics = {"image_auroc": roc_auc_score(labels, scores), "pixel_auroc": pixel[side][seed]}
            order = rng.permutation(60)  # the file's order must not matter
            write_run(
                tmp_path / side / f"seed{seed}",
                "brick",
                seed,
                [paths[i] for i in order],
                labels[order],
                scores[order],
                metrics,
            )
    assert compare_main([str(tmp_path / "A" / "seed0"), str(tmp_path / "B" / "seed0")]) == 0
    single = capsys.readouterr().out
    assert "| brick | 0 / 0 |" in single and "beyond chance" in single
    groups = [str(tmp_path / "A" / f"seed{s}") for s in range(3)] + ["--"] + [str(tmp_path / "B")]
    assert compare_main(groups) == 0
    out = capsys.readouterr().out
    welch = stats.ttest_ind(pixel["A"], pixel["B"], equal_var=False)
    row = next(line for line in out.splitlines() if line.startswith("| brick | pixel_auroc |"))
    assert f"| {welch.pvalue:.4f} | beyond chance |" in row and "± " in row
    assert sum(line.startswith("| brick | ") and " / " in line for line in out.splitlines()) == 3  # seed pairs


def test_the_mean_over_categories_needs_every_category_in_every_seed(tmp_path, capsys):
    labels, paths = [1, 0, 1, 0], ["x/1.png", "x/2.png", "x/3.png", "x/4.png"]
    for side, value in (("A", 0.9), ("B", 0.8)):
        for seed in range(2):
            for category in ("brick", "grass"):
                if (side, seed, category) == ("A", 1, "grass"):
                    continue  # that job failed
                metrics = {"image_auroc": value + seed / 100, "pixel_auroc": value}
                write_run(tmp_path / side / f"{category}{seed}", category, seed, paths, labels, [1, 2, 3, 4], metrics)
    assert compare_main([str(tmp_path / "A"), "--", str(tmp_path / "B")]) == 0
    out = capsys.readouterr().out
    mean = next(line for line in out.splitlines() if line.startswith("| mean | image_auroc |"))
    assert "no mean: A: seed 1 lacks grass" in mean and "0.9" not in mean
    assert any(line.startswith("| brick | image_auroc |") and "0.9" in line for line in out.splitlines())


def test_compare_refuses_runs_on_different_test_images(tmp_path, capsys):
    labels = [1, 0, 1, 0]
    write_run(tmp_path / "a", "brick", 0, ["x/1.png", "x/2.png", "x/3.png", "x/4.png"], labels, [1, 2, 3, 4], {})
    write_run(tmp_path / "b", "brick", 0, ["x/1.png", "x/2.png", "x/3.png", "x/9.png"], labels, [1, 2, 3, 4], {})
    with pytest.raises(SystemExit) as exit_info:
        compare_main([str(tmp_path / "a"), str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "different test images" in err
    assert str(tmp_path / "a" / "scores" / "brick.csv") in err and "x/9.png" in err
    write_run(tmp_path / "c", "grass", 0, ["x/1.png", "x/2.png", "x/3.png", "x/4.png"], labels, [1, 2, 3, 4], {})
    with pytest.raises(SystemExit):
        compare_main([str(tmp_path / "a"), str(tmp_path / "c")])
    assert "share no category" in capsys.readouterr().err

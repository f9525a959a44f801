"""The exact ROC and PRO curves from the ranks: their points against scikit-learn's ``roc_curve`` and a
naive PRO sweep, their areas against the scalar metrics."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score, roc_curve

from anomalib_lite.metrics import auroc, pixel_metrics
from anomalib_lite.metrics import ranks as ranks_module
from anomalib_lite.metrics.auroc import roc_curve as exact_roc_curve

from conftest import random_case


def assert_same_roc(curve, labels: np.ndarray, scores: np.ndarray) -> None:
    """Every point of ``curve`` is a point of scikit-learn's full ROC curve, and every point of that curve
    lies on ``curve`` (the ones ours leaves out sit on a horizontal run between two of ours)."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    theirs = {(round(a, 12), round(b, 12)) for a, b in zip(fpr, tpr)}
    ours = [(round(a, 12), round(b, 12)) for a, b in zip(curve.fpr.tolist(), curve.y.tolist())]
    assert set(ours) <= theirs
    for x, y in theirs - set(ours):
        left = [a for a, b in ours if b == y and a < x]
        right = [a for a, b in ours if b == y and a > x]
        assert left and right, f"({x}, {y}) of scikit-learn's curve is not on ours"
    assert ours[0] == (0.0, 0.0) and ours[-1] == (1.0, 1.0)


@pytest.mark.parametrize("levels", [None, 3, 12])
@pytest.mark.parametrize("seed", range(3))
def test_image_roc_curve_is_sklearns_and_its_area_is_the_auroc(seed, levels, rank_path):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    scores = (rng.random(60) + labels * 0.4).astype(np.float32)
    if levels is not None:
        scores = (np.round(scores * levels) / levels).astype(np.float32)  # ties within and across classes
    curve = exact_roc_curve(torch.from_numpy(scores), torch.from_numpy(labels))
    assert_same_roc(curve, labels, scores)
    assert curve.area() == pytest.approx(auroc(torch.from_numpy(scores), torch.from_numpy(labels)), abs=1e-12)
    assert curve.area() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("levels", [None, 5])
@pytest.mark.parametrize("seed", range(2))
def test_curve_thresholds_give_their_points(seed, levels, rank_path):
    # An independent count: the share of negatives (and positives) at or above each point's threshold.
    maps, masks = random_case(seed, n=5, size=14, levels=levels)
    curve = pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks), curves=True).roc
    scores, positive = maps.ravel(), masks.ravel()
    finite = torch.isfinite(curve.thresholds)
    for threshold, fpr, tpr in zip(curve.thresholds[finite], curve.fpr[finite], curve.y[finite]):
        above = scores >= float(threshold)
        assert (above & ~positive).sum() / (~positive).sum() == pytest.approx(float(fpr), abs=1e-12)
        assert (above & positive).sum() / positive.sum() == pytest.approx(float(tpr), abs=1e-12)


def naive_pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct threshold, from (0, 0): the MVTec AD reference sweep, by brute force."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected regions within each image
    regions, n_regions = ndimage.label(masks, structure=structure)
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in sorted(np.unique(maps), reverse=True):
        above = maps >= t
        fprs.append((above & normal).sum() / normal.sum())
        pros.append(np.mean([(above & (regions == r)).sum() / (regions == r).sum() for r in range(1, n_regions + 1)]))
    return np.array(fprs), np.array(pros)


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("levels", [None, 4])
@pytest.mark.parametrize("seed", range(2))
def test_pixel_curves_are_the_reference_sweeps_and_their_areas_the_metrics(seed, levels, limit, rank_path):
    maps, masks = random_case(seed, n=5, size=14, levels=levels)
    got = pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks), limit, curves=True)
    assert_same_roc(got.roc, masks.ravel(), maps.ravel())
    assert got.roc.area() == pytest.approx(got.pixel_auroc, abs=1e-12)
    assert got.pro.area() / limit == pytest.approx(got.aupro, abs=1e-12)

    fprs, pros = naive_pro_curve(maps, masks)
    ours = list(zip(got.pro.fpr.tolist(), got.pro.y.tolist()))
    assert ours[-1][0] == pytest.approx(min(limit, 1.0), abs=1e-12)
    reference = {(round(a, 12), round(b, 12)) for a, b in zip(fprs, pros)}
    interpolated = torch.isnan(got.pro.thresholds)
    assert int(interpolated.sum()) <= 1 and (not interpolated.any() or bool(interpolated[-1]))
    for (x, y), extra in zip(ours, interpolated.tolist()):
        if not extra:
            assert (round(x, 12), round(y, 12)) in reference
        else:  # on the reference's segment that crosses the limit
            assert y == pytest.approx(np.interp(x, fprs, pros), abs=1e-12)
    assert got.pro.fpr.max() <= limit


def test_a_cut_curve_stops_at_the_limit_without_interpolating_when_a_point_is_on_it():
    curve = ranks_module.RankCurve(
        torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64),
        torch.tensor([0.0, 0.5, 0.75, 1.0], dtype=torch.float64),
        torch.tensor([np.inf, 2.0, 1.0, -np.inf]),
    )
    on_point = ranks_module.cut_curve(curve, 0.5)
    assert on_point.fpr.tolist() == [0.0, 0.25, 0.5] and not torch.isnan(on_point.thresholds).any()
    between = ranks_module.cut_curve(curve, 0.375)
    assert between.fpr.tolist() == [0.0, 0.25, 0.375] and between.y[-1] == pytest.approx(0.625)

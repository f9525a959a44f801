"""The evaluator against independent references: scikit-learn and naive sweeps."""

import importlib.util
import os

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import jaccard_score, precision_recall_curve, roc_auc_score

from anomalib_lite.metrics import auroc, f1_max, pixel_metrics, segmentation_iou
from anomalib_lite.metrics.auroc import largest, sort_in_parts_

from conftest import REPO


def naive_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """A sweep over every distinct threshold, then the reference trapezoid rule."""
    labels = np.zeros(masks.shape, dtype=np.int64)
    n_regions = 0
    for i, mask in enumerate(masks):
        lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
        labels[i] = np.where(lab > 0, lab + n_regions, 0)
        n_regions += n
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in sorted(np.unique(maps), reverse=True):
        above = maps >= t
        fprs.append((above & normal).sum() / normal.sum())
        overlaps = [(above & (labels == r)).sum() / (labels == r).sum() for r in range(1, n_regions + 1)]
        pros.append(float(np.mean(overlaps)))
    fprs, pros = np.array(fprs), np.array(pros)
    area, i = 0.0, 1
    while i < len(fprs) and fprs[i] <= fpr_limit:
        area += (fprs[i] - fprs[i - 1]) * (pros[i] + pros[i - 1]) / 2
        i += 1
    if i < len(fprs) and fprs[i - 1] < fpr_limit:
        y = pros[i - 1] + (pros[i] - pros[i - 1]) * (fpr_limit - fprs[i - 1]) / (fprs[i] - fprs[i - 1])
        area += (fpr_limit - fprs[i - 1]) * (pros[i - 1] + y) / 2
    return area / fpr_limit


def random_case(seed: int, n: int = 4, size: int = 12, levels: int | None = None):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(1, n):
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, size - 3, 2)
            h, w = rng.integers(1, 5, 2)
            masks[i, y : y + h, x : x + w] = True
    maps = rng.random((n, size, size)) + masks * rng.random() * 1.5
    if levels is not None:  # quantise to force many ties
        maps = np.round(maps * levels) / levels
    return maps.astype(np.float32), masks


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [None, 4, 20])
def test_aupro_and_pixel_auroc_match_references(seed, levels):
    maps, masks = random_case(seed, levels=levels)
    got = pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks))
    assert got.aupro == pytest.approx(naive_aupro(maps, masks), abs=1e-6)
    assert got.pixel_auroc == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-6)


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_aupro_other_fpr_limits(limit):
    maps, masks = random_case(11, levels=10)
    got = pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks), fpr_limit=limit).aupro
    assert got == pytest.approx(naive_aupro(maps, masks, limit), abs=1e-6)


def test_diagonal_touching_pixels_are_one_region():
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, 1, 1] = masks[0, 2, 2] = True  # touch only at a corner: one 8-connected region
    masks[0, 4, 4] = True  # a second region
    maps = np.zeros((1, 6, 6), dtype=np.float32)
    maps[0, 1, 1] = maps[0, 2, 2] = 1.0  # the first region found entirely, the second missed
    got = pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks)).aupro
    # 8-connected: PRO is 1/2 until the last threshold (FPR 1, PRO 1), so the curve
    # runs (0, .5) -> (1, 1); its mean height up to FPR .3 is (.5 + .65) / 2 = .575.
    # 4-connectivity would give 2/3 + .05 instead.
    assert got == pytest.approx(0.575, abs=1e-9)
    assert got == pytest.approx(naive_aupro(maps, masks), abs=1e-9)


def test_one_region_all_ties():
    masks = np.zeros((2, 5, 5), dtype=bool)
    masks[1, 2:4, 2:4] = True
    maps = np.full((2, 5, 5), 0.5, dtype=np.float32)
    got = pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks))
    assert got.pixel_auroc == pytest.approx(0.5)
    assert got.aupro == pytest.approx(naive_aupro(maps, masks), abs=1e-9)


def test_no_anomalous_pixel_is_undefined_not_a_crash():
    maps = torch.rand(3, 8, 8)
    got = pixel_metrics(maps, torch.zeros(3, 8, 8, dtype=torch.bool))
    assert got.pixel_auroc is None and got.aupro is None


@pytest.mark.parametrize("seed", range(5))
def test_image_auroc_and_f1_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60) + labels * 0.4, 1).astype(np.float32)  # ties
    assert auroc(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(
        roc_auc_score(labels, scores), abs=1e-6
    )
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best, threshold = f1_max(torch.from_numpy(scores), torch.from_numpy(labels))
    assert best == pytest.approx(f1[:-1].max(), abs=1e-6)
    assert threshold == pytest.approx(thresholds[np.argmax(f1[:-1])], abs=1e-6)


def test_scores_are_not_squashed():
    """Scores far outside [0, 1] keep their order (no sigmoid, no clamping)."""
    labels = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([1000.0, 1001.0, 1002.0, 999.0])
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()))


def test_auroc_single_class_is_undefined():
    assert auroc(torch.rand(5), torch.zeros(5)) is None


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_segmentation_iou_matches_sklearn_jaccard_per_image(threshold):
    rng = np.random.default_rng(3)
    maps = rng.gamma(2.0, size=(6, 16, 16)).astype(np.float32)
    masks = np.zeros((6, 16, 16), dtype=bool)
    masks[1, 2:8, 3:9] = True
    masks[3, 10:, :5] = True
    masks[4, 5, 5] = True
    maps[masks] += 3.0
    scaled = (maps - maps.min()) / (maps.max() - maps.min())
    expected = np.mean(
        [jaccard_score(masks[i].ravel(), scaled[i].ravel() >= threshold) for i in range(6) if masks[i].any()]
    )
    got = segmentation_iou(torch.from_numpy(maps), torch.from_numpy(masks), threshold)
    assert got == pytest.approx(expected, abs=1e-12)


def test_segmentation_iou_scale_is_shared_by_all_images():
    # A normal image with a tiny map must not be stretched to [0, 1] on its own: only the
    # anomalous image's region reaches the threshold, so the IoU is exact.
    maps = torch.zeros(2, 8, 8)
    maps[0] = 0.01 * torch.rand(8, 8)
    maps[1, 2:4, 2:4] = 1.0
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[1, 2:4, 2:5] = True
    assert segmentation_iou(maps, masks, 0.5) == pytest.approx(4 / 6)
    assert segmentation_iou(maps, torch.zeros_like(masks), 0.5) is None
    with pytest.raises(ValueError, match="threshold"):
        segmentation_iou(maps, masks, 1.5)


def sorted_chunks(values: np.ndarray, sizes: list[int]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.sort(chunk)) for chunk in np.split(values, np.cumsum(sizes)[:-1])]


@pytest.mark.parametrize("k", [1, 7, 500, 2999, 3000])
def test_largest_over_several_sorted_parts_matches_a_full_sort(k):
    rng = np.random.default_rng(k)
    values = (np.round(rng.normal(size=3000) * 20) / 20).astype(np.float32)  # many ties, negatives
    values[:5] = -0.0
    parts = sorted_chunks(values, [1000, 1700, 300])
    everything = np.sort(values)
    kth = everything[-k]
    expected = everything[everything >= kth]
    np.testing.assert_array_equal(largest(parts, k).numpy(), expected)
    np.testing.assert_array_equal(largest([torch.from_numpy(everything)], k).numpy(), expected)


def test_sorting_in_parts_gives_the_same_metrics_as_one_sort(monkeypatch):
    # 2.6 M pixels: enough for several parts; quantised maps put tie groups across part borders.
    rng = np.random.default_rng(5)
    maps = np.round(rng.random((40, 256, 256)) * 300).astype(np.float32)
    masks = np.zeros(maps.shape, dtype=bool)
    masks[::2, 100:140, 60:90] = True
    maps[masks] += 40
    results = {}
    for cores in (1, 2):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        parts = sort_in_parts_(torch.from_numpy(maps[~masks]))
        assert len(parts) == cores
        results[cores] = pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks))
    assert results[2].pixel_auroc == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert results[2].aupro == pytest.approx(results[1].aupro, abs=1e-12)
    assert results[2].pixel_auroc == pytest.approx(results[1].pixel_auroc, abs=1e-12)


@pytest.mark.parametrize("levels", [None, 4])
def test_the_benchmark_reference_aupro_matches_the_naive_sweep(levels):
    # scripts/benchmark.py checks the evaluator at full size against this reference: check the reference.
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    maps, masks = random_case(7, levels=levels)
    assert benchmark.reference_aupro(maps, masks) == pytest.approx(naive_aupro(maps, masks), abs=1e-12)


def test_per_image_pixel_auroc_is_the_mean_of_sklearns_auroc_image_by_image():
    # The CAVGA protocol (IGD Table 4, UTAD Table 1): one ROC per anomalous image over its own pixels.
    from anomalib_lite.metrics import per_image_pixel_auroc

    rng = np.random.default_rng(11)
    maps = np.round(rng.random((7, 20, 20)) * 50).astype(np.float32)  # ties
    masks = np.zeros(maps.shape, dtype=bool)
    masks[1, 3:9, 4:12] = True
    masks[2, 15:, 15:] = True
    masks[4, 0, 0] = True
    masks[5] = True  # all anomalous: no normal pixel, AUROC undefined, left out
    maps[masks] += rng.normal(5, 10, masks.sum()).astype(np.float32)
    expected = np.mean([roc_auc_score(masks[i].ravel(), maps[i].ravel()) for i in (1, 2, 4)])
    got = per_image_pixel_auroc(torch.from_numpy(maps), torch.from_numpy(masks))
    assert got == pytest.approx(expected, abs=1e-12)
    pooled = roc_auc_score(masks[:5].ravel(), maps[:5].ravel())
    assert abs(got - pooled) > 1e-3  # not the pooled pixel AUROC
    assert per_image_pixel_auroc(torch.from_numpy(maps), torch.zeros(7, 20, 20, dtype=torch.bool)) is None


@pytest.mark.parametrize("threshold", [-0.5, 0.3, 0.71])
def test_image_accuracy_equals_sklearn_accuracy_at_the_threshold(threshold):
    from sklearn.metrics import accuracy_score

    from anomalib_lite.metrics import image_accuracy

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 60)
    scores = (rng.normal(size=60) + labels).round(1).astype(np.float32)
    scores[:3] = np.float32(threshold)  # ties at the threshold count as anomalous
    expected = accuracy_score(labels, scores >= np.float32(threshold))
    assert image_accuracy(torch.from_numpy(scores), torch.from_numpy(labels), threshold) == pytest.approx(expected)


def test_the_evaluator_reports_the_papers_metrics_and_normalises_the_iou_over_every_image():
    from anomalib_lite.metrics import Predictions, compute_metrics

    rng = np.random.default_rng(4)
    maps = rng.random((6, 16, 16)).astype(np.float32)
    masks = np.zeros(maps.shape, dtype=bool)
    masks[3, 2:9, 2:9] = masks[4, 8:, 8:] = masks[5, :4, :] = True
    maps[masks] += 0.8
    maps[0] *= 3.0  # a normal image with the set's largest values: it sets the IoU scale
    maps[5] += 4.0  # an anomalous image without a mask file: it sets the scale too, but has no IoU
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = maps.reshape(6, -1).max(1)
    valid = np.array([True, True, True, True, True, False])
    pred = Predictions(
        torch.from_numpy(scores), torch.from_numpy(labels), torch.from_numpy(maps), torch.from_numpy(masks),
        torch.from_numpy(valid),
    )  # fmt: skip
    metrics = compute_metrics(pred, iou_threshold=0.3)
    scaled = (maps - maps.min()) / (maps.max() - maps.min())  # over all six images
    expected_iou = np.mean([jaccard_score(masks[i].ravel(), scaled[i].ravel() >= 0.3) for i in (3, 4)])
    assert metrics["iou"] == pytest.approx(expected_iou, abs=1e-12)
    expected_auroc = np.mean([roc_auc_score(masks[i].ravel(), maps[i].ravel()) for i in (3, 4)])
    assert metrics["pixel_auroc_per_image"] == pytest.approx(expected_auroc, abs=1e-12)
    accuracy = np.mean((scores >= metrics["image_threshold"]) == labels)
    assert metrics["image_accuracy"] == pytest.approx(accuracy)


def test_segmentation_iou_normalisation_includes_images_without_a_known_mask():
    maps = torch.zeros(2, 4, 4)
    maps[0, :2, :2] = 1.0
    maps[1] = 4.0  # unknown mask: only its values count, in the scale
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True
    masks[1] = True
    valid = torch.tensor([True, False])
    assert segmentation_iou(maps, masks, 0.5, valid) == 0.0  # 1/4 < 0.5: nothing predicted on image 0
    assert segmentation_iou(maps[:1], masks[:1], 0.5) == 1.0


def test_igd_and_utad_tables_compare_with_their_papers_own_metrics():
    from anomalib_lite.cli.reproduce import TABLES

    igd = TABLES["igd_mvtec"].datasets[0].paper
    utad = TABLES["utad_mvtec"].datasets[0].paper
    assert igd == {"image_auroc": 0.901, "pixel_auroc_per_image": 0.91, "image_accuracy": 0.84}
    assert utad == {"iou": 0.53, "pixel_auroc_per_image": 0.90}

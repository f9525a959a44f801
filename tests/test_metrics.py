"""The evaluator against independent references: scikit-learn and naive sweeps."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.measure import label
from sklearn.metrics import jaccard_score, precision_recall_curve, roc_auc_score

from anomalib_lite.metrics import (
    Predictions,
    auroc,
    compute_metrics,
    f1_max,
    pixel_metrics,
    region_weights,
    segmentation_iou,
)
from anomalib_lite.metrics.ranks import KthLargest, keys_to_values, order_keys, rank_positives

from conftest import RANK_PATHS, random_case, rank_path_taken


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


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [None, 4, 20])
def test_aupro_and_pixel_auroc_match_references(seed, levels, rank_path):
    maps, masks = random_case(seed, levels=levels)
    got = pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks))
    assert got.aupro == pytest.approx(naive_aupro(maps, masks), abs=1e-6)
    assert got.pixel_auroc == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_region_weights_match_whole_frame_labelling(seed):
    """Labelling each image's bounding box gives the weights of labelling the whole frames (scikit-image):
    regions on the borders, touching only at a corner, several per image, and images without one."""
    rng = np.random.default_rng(seed)
    masks = rng.random((7, 12, 10)) > 0.8
    masks[0] = False
    masks[1, 0, 0] = masks[1, -1, -1] = masks[1, 5, 5] = masks[1, 6, 6] = True  # corners and a diagonal pair
    masks[2] = True  # one region filling the frame
    regions = np.concatenate([label(mask, connectivity=2)[mask] + 1000 * i for i, mask in enumerate(masks)])
    _, inverse, sizes = np.unique(regions, return_inverse=True, return_counts=True)
    expected = 1.0 / (sizes[inverse] * sizes.size)
    got = region_weights(torch.from_numpy(masks))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_region_weights_without_anomalous_pixels():
    assert region_weights(torch.zeros(3, 4, 4, dtype=torch.bool)).numel() == 0


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_aupro_other_fpr_limits(limit, rank_path):
    maps, masks = random_case(11, levels=10)
    got = pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks), fpr_limit=limit).aupro
    assert got == pytest.approx(naive_aupro(maps, masks, limit), abs=1e-6)


def test_diagonal_touching_pixels_are_one_region(rank_path):
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


def test_one_region_all_ties(rank_path):
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
def test_image_auroc_and_f1_match_sklearn(seed, rank_path):
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


def test_auroc_single_class_is_undefined(rank_path):
    assert auroc(torch.rand(5), torch.zeros(5)) is None
    assert auroc(torch.rand(5), torch.ones(5)) is None
    maps = torch.rand(2, 4, 4)
    assert pixel_metrics(maps, torch.ones(2, 4, 4, dtype=torch.bool)) == pixel_metrics(maps, maps < -1)


@pytest.mark.parametrize("label", [0, 1])
def test_a_single_class_test_set_has_no_f1_threshold_or_accuracy(label):
    """Anomalous-only (or normal-only) test images: F1-max, its threshold and the accuracy at it are
    undefined (``None``), as AUROC is; per-defect rows need good images, so there are none."""
    maps, masks = random_case(5, n=4)
    masks &= bool(label)  # a normal image has no anomalous pixel
    labels = torch.full((4,), label)
    scores = torch.from_numpy(maps.reshape(4, -1).max(1))
    assert f1_max(scores, labels) is None
    defects = ["crack", "stain", "crack", "hole"] if label else ["good"] * 4
    tensors = (scores, labels, torch.from_numpy(maps), torch.from_numpy(masks), torch.ones(4, dtype=torch.bool))
    got = compute_metrics(Predictions(*tensors, defects=defects))
    for key in ("image_auroc", "image_f1_max", "image_threshold", "image_accuracy"):
        assert got[key] is None, key
    assert "per_defect" not in got
    assert got["n_images"] == 4 and got["n_anomalous"] == 4 * label


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


def load_benchmark():
    """The benchmark command's module (its map distributions and its reference AUPRO)."""
    from anomalib_lite.research.benchmark import command

    return command


@pytest.mark.parametrize("levels", [None, 4])
def test_the_benchmark_reference_aupro_matches_the_naive_sweep(levels):
    # scripts/benchmark.py checks the evaluator at full size against this reference: check the reference.
    benchmark = load_benchmark()
    maps, masks = random_case(7, levels=levels)
    assert benchmark.reference_aupro(maps, masks) == pytest.approx(naive_aupro(maps, masks), abs=1e-12)


@pytest.mark.parametrize("kind", list(load_benchmark().KINDS))
def test_the_evaluator_is_exact_on_every_benchmark_distribution(kind, rank_path):
    # benchmark.py evaluator --kind times these at MVTec AD size; here each is checked small, both rank paths.
    benchmark = load_benchmark()
    maps, masks, scores, labels = benchmark.evaluator_case(kind, 10, 32, seed=3)
    pixel = pixel_metrics(maps, masks)
    assert pixel.pixel_auroc == pytest.approx(roc_auc_score(masks.numpy().ravel(), maps.numpy().ravel()), abs=1e-12)
    assert pixel.aupro == pytest.approx(naive_aupro(maps.numpy().astype(np.float64), masks.numpy()), abs=1e-12)
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)


def adversarial_scores(seed: int, n: int = 3000) -> np.ndarray:
    """float32 scores hard for a bucketed count: many share the high 16 bits of their bit pattern
    (consecutive floats above 1.0, across a bucket border, and negative ones), with ties, −0.0, +0.0,
    infinities, subnormals and values far apart."""
    rng = np.random.default_rng(seed)
    one = np.float32(1.0).view(np.int32)
    minus_two = np.float32(-2.0).view(np.int32)
    parts = [
        (one + rng.integers(0, 1 << 16, n // 3)).astype(np.int32).view(np.float32),  # one bucket
        (one + (1 << 16) - 40 + rng.integers(0, 80, n // 6)).astype(np.int32).view(np.float32),  # its border
        (minus_two + rng.integers(0, 300, n // 6)).astype(np.int32).view(np.float32),  # negative, one bucket
        np.round(rng.normal(size=n // 6) * 4) / 4,  # ties and negatives
        np.array([0.0, -0.0, 0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 3e38, -3e38]),
    ]
    values = np.concatenate(parts).astype(np.float32)
    return values[rng.permutation(values.size)]


def test_order_keys_order_as_the_floats_do():
    values = adversarial_scores(0)
    keys = order_keys(torch.from_numpy(values)).numpy().astype(np.int64)
    i, j = np.random.default_rng(1).integers(0, values.size, (2, 20000))
    np.testing.assert_array_equal(keys[i] < keys[j], values[i] < values[j])
    np.testing.assert_array_equal(keys[i] == keys[j], values[i] == values[j])  # −0.0 == +0.0 too
    back = keys_to_values(torch.from_numpy(keys.astype(np.int32))).numpy()
    np.testing.assert_array_equal(back, values)
    assert not np.signbit(back[values == 0]).any()  # −0.0 comes back as +0.0
    positive_only = np.abs(values)
    np.testing.assert_array_equal(order_keys(torch.from_numpy(positive_only)).numpy(), positive_only.view(np.int32))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    ("path", "parts", "window_buckets"),
    [
        ("counting", 1, 1),
        ("counting", 1, 3),
        ("counting", 1, 256),
        ("sorted parts", 1, None),  # windows are the counting path's only
        ("sorted parts", 3, None),
    ],
)
def test_counted_ranks_match_a_sort_of_the_negatives(seed, path, parts, window_buckets):
    values = adversarial_scores(seed)
    rng = np.random.default_rng(seed + 10)
    positive = rng.random(values.size) < 0.2
    negatives = np.sort(values[~positive])
    for k in [1, 2, 17, negatives.size // 3, negatives.size - 1, negatives.size]:
        with rank_path_taken(path, parts):
            got = rank_positives(
                torch.from_numpy(values), torch.from_numpy(positive), k, sort_below=0, window_buckets=window_buckets
            )
        np.testing.assert_array_equal(got.positives.numpy(), values[positive])
        below = np.searchsorted(negatives, values[positive], side="left")
        np.testing.assert_array_equal(got.below.numpy(), below)
        np.testing.assert_array_equal(got.equal.numpy(), np.searchsorted(negatives, values[positive], "right") - below)
        kth = np.partition(values[~positive], negatives.size - k)[negatives.size - k]
        assert got.kth.value == kth
        assert got.kth.below == np.count_nonzero(negatives < kth)
        assert got.kth.equal == np.count_nonzero(negatives == kth)
    sorted_path = rank_positives(torch.from_numpy(values), torch.from_numpy(positive), 5, sort_below=values.size + 1)
    np.testing.assert_array_equal(sorted_path.below.numpy(), got.below.numpy())
    with rank_path_taken(path, parts):
        large_path = rank_positives(torch.from_numpy(values), torch.from_numpy(positive), 5, sort_below=0)
    assert sorted_path.kth == large_path.kth


@pytest.mark.parametrize("path", RANK_PATHS)
def test_the_kth_largest_negative_among_neighbouring_floats(path):
    ladder = [np.float32(1.0)]
    for _ in range(4):
        ladder.append(np.nextafter(ladder[-1], np.float32(2.0)))  # adjacent keys
    values = np.repeat(np.array(ladder, np.float32), [3, 1, 2, 4, 1])
    positive = np.zeros(values.size, dtype=bool)
    positive[[0, 5]] = True
    negatives = np.sort(values[~positive])
    for k in range(1, negatives.size + 1):
        with rank_path_taken(path):
            got = rank_positives(torch.from_numpy(values), torch.from_numpy(positive), k).kth
        kth = negatives[negatives.size - k]
        assert got == KthLargest(float(kth), np.count_nonzero(negatives < kth), np.count_nonzero(negatives == kth))


@pytest.mark.parametrize("seed", range(3))
def test_pixel_auroc_equals_sklearn_on_adversarial_scores(seed, rank_path):
    values = adversarial_scores(seed, n=3600)
    values = values[np.isfinite(values)][:3000]  # scikit-learn refuses infinities
    positive = np.random.default_rng(seed).random(values.size) < 0.3
    maps, masks = values.reshape(3, 25, 40), positive.reshape(3, 25, 40)
    got = pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks))
    assert got.pixel_auroc == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert auroc(torch.from_numpy(values), torch.from_numpy(positive)) == got.pixel_auroc


def test_counted_aupro_with_many_regions_and_ties_matches_the_naive_sweep(rank_path):
    rng = np.random.default_rng(4)
    masks = ndimage.zoom(rng.random((3, 4, 4)), (1, 4, 4), order=0) > 0.6  # several regions per image
    masks[0] = False
    maps = (np.round(rng.random(masks.shape) * 6) / 6 + masks * 0.3).astype(np.float32)  # ties across classes
    maps[0, :2] = -0.0
    maps[1, :2] = 0.0
    for limit in (0.1, 0.3, 1.0):
        got = pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks), limit)
        assert got.aupro == pytest.approx(naive_aupro(maps, masks, limit), abs=1e-12)
        assert got.pixel_auroc == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_compute_metrics_pixel_figures_cover_only_images_with_a_known_mask():
    maps, masks = random_case(3, n=5)
    valid = np.array([True, True, False, True, True])
    scores = torch.from_numpy(maps.reshape(5, -1).max(1))
    labels = torch.tensor([0, 1, 1, 1, 1])
    for mask_valid in (valid, np.ones(5, dtype=bool)):
        maps_t, masks_t = torch.from_numpy(maps), torch.from_numpy(masks)
        got = compute_metrics(Predictions(scores, labels, maps_t, masks_t, torch.from_numpy(mask_valid)))
        kept = masks[mask_valid].ravel()
        assert got["pixel_auroc"] == pytest.approx(roc_auc_score(kept, maps[mask_valid].ravel()), abs=1e-12)
        assert got["aupro"] == pytest.approx(naive_aupro(maps[mask_valid], masks[mask_valid]), abs=1e-12)
        assert got["n_pixel_images"] == mask_valid.sum()


def test_per_image_pixel_aurocs_are_sklearns_auroc_image_by_image():
    # The CAVGA protocol (IGD Table 4; our reading of UTAD Table 1): one ROC per anomalous image over its pixels.
    from anomalib_lite.metrics import per_image_pixel_aurocs

    rng = np.random.default_rng(11)
    maps = np.round(rng.random((7, 20, 20)) * 50).astype(np.float32)  # ties
    masks = np.zeros(maps.shape, dtype=bool)
    masks[1, 3:9, 4:12] = True
    masks[2, 15:, 15:] = True
    masks[4, 0, 0] = True
    masks[5] = True  # all anomalous: no normal pixel, AUROC undefined, left out
    maps[masks] += rng.normal(5, 10, masks.sum()).astype(np.float32)
    expected = [roc_auc_score(masks[i].ravel(), maps[i].ravel()) for i in (1, 2, 4)]
    got = per_image_pixel_aurocs(torch.from_numpy(maps), torch.from_numpy(masks))
    assert got == pytest.approx(expected, abs=1e-12)
    pooled = roc_auc_score(masks[:5].ravel(), maps[:5].ravel())
    assert abs(np.mean(got) - pooled) > 1e-3  # their mean is not the pooled pixel AUROC
    assert per_image_pixel_aurocs(torch.from_numpy(maps), torch.zeros(7, 20, 20, dtype=torch.bool)) == []


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


@pytest.mark.parametrize("threshold", [-0.5, 0.3, 0.71])
def test_image_balanced_accuracy_equals_sklearn_at_the_threshold(threshold):
    from sklearn.metrics import balanced_accuracy_score

    from anomalib_lite.metrics.per_image import image_accuracy, image_balanced_accuracy

    rng = np.random.default_rng(5)
    labels = (rng.random(80) < 0.73).astype(int)  # MVTec AD's share of anomalous test images
    scores = (rng.normal(size=80) + labels).round(1).astype(np.float32)
    scores[:3] = np.float32(threshold)
    s, y = torch.from_numpy(scores), torch.from_numpy(labels)
    expected = balanced_accuracy_score(labels, scores >= np.float32(threshold))
    assert image_balanced_accuracy(s, y, threshold) == pytest.approx(expected)
    assert image_balanced_accuracy(s, y, threshold) != pytest.approx(image_accuracy(s, y, threshold))
    assert image_balanced_accuracy(s, torch.ones_like(y), threshold) is None


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
        torch.from_numpy(scores),
        torch.from_numpy(labels),
        torch.from_numpy(maps),
        torch.from_numpy(masks),
        torch.from_numpy(valid),
    )
    metrics = compute_metrics(pred, declared={"iou": {"threshold": 0.3}})
    scaled = (maps - maps.min()) / (maps.max() - maps.min())  # over all six images
    expected_iou = np.mean([jaccard_score(masks[i].ravel(), scaled[i].ravel() >= 0.3) for i in (3, 4)])
    assert metrics["iou"] == pytest.approx(expected_iou, abs=1e-12)
    expected_auroc = np.mean([roc_auc_score(masks[i].ravel(), maps[i].ravel()) for i in (3, 4)])
    assert metrics["pixel_auroc_per_image"] == pytest.approx(expected_auroc, abs=1e-12)
    assert metrics["n_pixel_auroc_images"] == 2  # image 5's mask is unknown
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
    from anomalib_lite.research.reproduce.tables import TABLES

    def means(table: str) -> dict[str, float | None]:
        (arm,) = TABLES[table].arms
        return {metric: refs[0].figures("mvtec")[1] for metric, refs in arm.paper.items()}

    # IGD's 0.91 is the per-image pixel AUROC (CAVGA protocol) and 0.84 the accuracy, never the pooled AUROC
    assert means("igd_mvtec") == {
        "image_auroc": 0.901,
        "image_accuracy": 0.84,
        "image_balanced_accuracy": 0.84,
        "pixel_auroc_per_image": 0.91,
    }
    assert means("utad_mvtec") == {"iou": 0.53, "pixel_auroc_per_image": 0.90}

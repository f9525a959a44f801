"""Average precision, F1-max, AUPIMO and predicted masks against independent references: scikit-learn, naive loops
of the definitions, anomalib's AUPIMO; the evaluator's and the catalogue's new keys."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve
from test_metrics import load_benchmark

from anomalib_lite.metrics import (
    METRICS,
    Predictions,
    aupimo,
    average_precision,
    compute_metrics,
    f1_max,
    metric_columns,
    pixel_metrics,
    predicted_masks,
)

from conftest import random_case

# The module itself (``anomalib_lite.metrics.aupimo`` as an attribute is the function).
AUPIMO_MODULE = importlib.import_module("anomalib_lite.metrics.aupimo")


def naive_f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Every threshold of scikit-learn's precision-recall curve in turn: the best F1 and, among the thresholds
    within 1e-12 of it, the highest."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = [2 * p * r / (p + r) if p + r > 0 else 0.0 for p, r in zip(precision[:-1], recall[:-1])]
    best = max(f1)
    return best, max(t for t, value in zip(thresholds, f1) if value >= best - 1e-12)


def naive_aupimo(
    maps: np.ndarray, masks: np.ndarray, normal: np.ndarray, bounds: tuple[float, float] = (1e-5, 1e-4)
) -> dict[int, float]:
    """The paper's definition, one anomalous image at a time: a point (shared FPR over the normal images'
    pixels, the image's TPR) at every distinct score and above the highest, TPR linear in FPR between
    neighbouring points (tied scores), and ``∫ TPR d(log FPR) / log(U / L)`` by numerical quadrature."""
    low, high = bounds
    normal_scores = np.sort(maps[normal].ravel().astype(np.float64))
    result = {}
    for i in np.flatnonzero(masks.reshape(len(masks), -1).any(1) & ~normal):
        positives = np.sort(maps[i][masks[i]].astype(np.float64))
        thresholds = np.unique(np.concatenate([normal_scores, positives]))[::-1]
        fpr = np.r_[0.0, 1 - np.searchsorted(normal_scores, thresholds, "left") / normal_scores.size]
        tpr = np.r_[0.0, 1 - np.searchsorted(positives, thresholds, "left") / positives.size]
        area = 0.0
        for j in range(len(fpr) - 1):
            f0, f1, t0, t1 = fpr[j], fpr[j + 1], tpr[j], tpr[j + 1]
            a, b = max(f0, low), min(f1, high)
            if b > a:  # a vertical piece (f0 == f1) has no area

                def height(z, f0=f0, f1=f1, t0=t0, t1=t1):
                    return (t0 + (t1 - t0) * (z - f0) / (f1 - f0)) / z

                area += quad(height, a, b, epsabs=1e-14, epsrel=1e-13)[0]
        result[int(i)] = area / np.log(high / low)
    return result


def scores_case(kind: str, seed: int, n: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Image scores and labels: ``random`` (distinct), ``quantised`` (ties across the classes) or ``constant``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.normal(size=n) + labels
    if kind == "quantised":
        scores = np.round(scores * 2) / 2
    elif kind == "constant":
        scores = np.full(n, 0.25)
    return scores.astype(np.float32), labels


@pytest.mark.parametrize("kind", ["random", "quantised", "constant"])
@pytest.mark.parametrize("seed", range(3))
def test_image_ap_and_f1_max_equal_sklearn(kind, seed, rank_path):
    scores, labels = scores_case(kind, seed)
    s, y = torch.from_numpy(scores), torch.from_numpy(labels)
    assert average_precision(s, y) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    best, threshold = f1_max(s, y)
    expected_best, expected_threshold = naive_f1_max(labels, scores)
    assert best == pytest.approx(expected_best, abs=1e-12)
    assert threshold == expected_threshold


def test_ap_and_f1_max_are_undefined_with_one_class():
    scores = torch.rand(6)
    for labels in (torch.zeros(6), torch.ones(6)):
        assert average_precision(scores, labels) is None and f1_max(scores, labels) is None


def test_f1_max_takes_the_highest_of_thresholds_with_the_same_f1():
    # t = 4: TP 1, FP 0 → F1 2/3; t = 1: TP 2, FP 2 → 4/6, the same F1; the rule keeps the higher threshold.
    scores = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])
    labels = torch.tensor([1, 0, 0, 1, 0])
    assert f1_max(scores, labels) == (pytest.approx(2 / 3), 4.0)


def pixel_case(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Maps and masks: ``random`` (conftest's raised rectangles), ``levels4``/``levels20`` (quantised: ties
    across the classes) or ``constant``."""
    if kind == "constant":
        maps, masks = random_case(seed, n=4, size=12)
        return np.full_like(maps, 0.5), masks
    return random_case(seed, n=5, size=16, levels={"random": None, "levels4": 4, "levels20": 20}[kind])


@pytest.mark.parametrize("kind", ["random", "levels4", "levels20", "constant"])
@pytest.mark.parametrize("seed", range(3))
def test_pixel_ap_and_f1_max_equal_sklearn(kind, seed, rank_path):
    maps, masks = pixel_case(kind, seed)
    got = pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks))
    assert got.pixel_ap == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)
    best, threshold = naive_f1_max(masks.ravel(), maps.ravel())
    assert got.pixel_f1_max == pytest.approx(best, abs=1e-12)
    assert got.pixel_threshold == threshold
    # The predicted masks at that threshold have that F1 (scikit-learn's f1_score of the binary masks).
    predicted = predicted_masks(torch.from_numpy(maps), got.pixel_threshold).numpy()
    assert f1_score(masks.ravel(), predicted.ravel()) == pytest.approx(got.pixel_f1_max, abs=1e-12)


def test_pixel_ap_and_f1_max_can_be_left_out():
    maps, masks = random_case(1)
    got = pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks), precision_recall=False)
    assert got.pixel_auroc is not None
    assert (got.pixel_ap, got.pixel_f1_max, got.pixel_threshold) == (None, None, None)


@pytest.mark.parametrize("threshold", [-1.0, 0.25, 0.5, 0.7])
def test_predicted_masks_are_the_pixels_at_or_above_the_threshold(threshold):
    maps, _ = random_case(2, levels=4)  # ties at the thresholds 0.25, 0.5
    got = predicted_masks(torch.from_numpy(maps), threshold).numpy()
    expected = np.zeros(maps.shape, dtype=bool)
    for index in np.ndindex(maps.shape):
        expected[index] = maps[index] >= np.float32(threshold)
    np.testing.assert_array_equal(got, expected)
    assert got.any() or threshold > maps.max()


def test_predicted_masks_refuse_a_nan_threshold():
    with pytest.raises(ValueError, match="NaN"):
        predicted_masks(torch.rand(2, 4, 4), float("nan"))


def aupimo_case(kind: str, seed: int, n: int = 6, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Maps and masks for AUPIMO: every other image normal; ``random``, ``levels`` (quantised to 8 levels: ties
    between normal and anomalous scores), ``constant``, or ``separated`` (anomalous pixels above every other)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(1, n, 2):
        y, x = rng.integers(0, size - 6, 2)
        masks[i, y : y + rng.integers(2, 7), x : x + rng.integers(2, 7)] = True
    maps = rng.random((n, size, size)) + masks * rng.random() * 0.8
    if kind == "levels":
        maps = np.floor(maps * 8) / 8
    elif kind == "constant":
        maps = np.full(maps.shape, 0.5)
    elif kind == "separated":
        maps = maps + 2.0 * masks
    return maps.astype(np.float32), masks


@pytest.fixture(params=["numpy", "torch"])
def scan_path(request, monkeypatch):
    """Run a test with AUPIMO's CPU scans through NumPy and through torch (the code CUDA runs)."""
    monkeypatch.setattr(AUPIMO_MODULE, "NUMPY_ON_CPU", request.param == "numpy")
    return request.param


@pytest.mark.parametrize("kind", ["random", "levels", "constant", "separated"])
@pytest.mark.parametrize("bounds", [(1e-5, 1e-4), (1e-3, 1e-2), (0.02, 0.4), (0.05, 1.0)])
@pytest.mark.parametrize("seed", range(2))
def test_aupimo_equals_the_naive_loop_of_its_definition(kind, bounds, seed, scan_path):
    maps, masks = aupimo_case(kind, seed)
    normal = ~masks.reshape(len(masks), -1).any(1)
    got = aupimo(torch.from_numpy(maps), torch.from_numpy(masks), fpr_bounds=bounds)
    expected = naive_aupimo(maps, masks, normal, bounds)
    assert got.images.tolist() == list(expected)
    np.testing.assert_allclose(got.values.numpy(), list(expected.values()), rtol=0, atol=1e-9)
    assert got.mean == pytest.approx(np.mean(list(expected.values())), abs=1e-9)
    if kind == "constant":  # chance level: TPR = FPR on the diagonal
        assert got.mean == pytest.approx((bounds[1] - bounds[0]) / np.log(bounds[1] / bounds[0]), abs=1e-12)
    if kind == "separated":
        assert got.mean == pytest.approx(1.0, abs=1e-12)


def test_aupimo_at_the_papers_bounds_with_many_pixels():
    # 3 normal images of 200×200: the paper's FPR range spans normal pixels 2 to 12.
    maps, masks = aupimo_case("random", 3, n=6, size=200)
    normal = ~masks.reshape(len(masks), -1).any(1)
    maps[1, :3, :3] = maps[normal].max() + 1  # normal pixels of an anomalous image above every normal image's
    got = aupimo(torch.from_numpy(maps), torch.from_numpy(masks))
    expected = naive_aupimo(maps, masks, normal)
    np.testing.assert_allclose(got.values.numpy(), list(expected.values()), rtol=0, atol=1e-9)


@pytest.mark.parametrize("bounds", [(1e-4, 1e-3), (1e-3, 1e-2)])
def test_aupimo_is_exact_when_its_sampled_guess_selects_too_few_pixels(bounds, monkeypatch, scan_path):
    # The selection threshold is guessed from a strided sample of the normal pixels (1 000 here: every 120th of
    # 120 000). Raising exactly the sampled pixels makes every guess too high: a guess keeping fewer normal
    # pixels than the FPR bound needs must be retried lower (bounds 1e-4..1e-3: once; 1e-3..1e-2: down to
    # every pixel).
    monkeypatch.setattr(AUPIMO_MODULE, "_SAMPLE", 1000)
    maps, masks = aupimo_case("random", 5, n=6, size=200)
    normal = ~masks.reshape(len(masks), -1).any(1)
    flat = maps.reshape(6, -1)
    flat[np.flatnonzero(normal)[:, None], np.arange(0, flat.shape[1], 120)] += 5.0
    maps += 5.0 * masks  # the anomalous pixels among the raised ones: an AUPIMO strictly inside (0, 1)
    got = aupimo(torch.from_numpy(maps), torch.from_numpy(masks), fpr_bounds=bounds)
    expected = naive_aupimo(maps, masks, normal, bounds)
    np.testing.assert_allclose(got.values.numpy(), list(expected.values()), rtol=0, atol=1e-9)
    assert 0.05 < got.mean < 0.95


def test_aupimo_normal_images_can_be_named_and_must_have_empty_masks():
    maps, masks = aupimo_case("random", 4)
    normal = np.array([True, False, False, False, True, False])  # image 2 (empty mask) takes no part
    got = aupimo(torch.from_numpy(maps), torch.from_numpy(masks), torch.from_numpy(normal))
    expected = naive_aupimo(maps, masks, normal)
    assert got.images.tolist() == [1, 3, 5] == list(expected)
    np.testing.assert_allclose(got.values.numpy(), list(expected.values()), rtol=0, atol=1e-9)
    assert got.n_normal_images == 2
    with pytest.raises(ValueError, match="normal have anomalous pixels"):
        aupimo(torch.from_numpy(maps), torch.from_numpy(masks), torch.ones(6, dtype=torch.bool))
    with pytest.raises(ValueError, match="bounds"):
        aupimo(torch.from_numpy(maps), torch.from_numpy(masks), fpr_bounds=(1e-4, 1e-5))
    assert aupimo(torch.from_numpy(maps), torch.zeros(6, 24, 24, dtype=torch.bool)) is None
    assert aupimo(torch.from_numpy(maps), torch.ones(6, 24, 24, dtype=torch.bool)) is None


def test_aupimo_equals_anomalibs():
    pimo = pytest.importorskip(
        "anomalib.metrics.pimo.functional", reason="anomalib is not installed (pip install -e '.[peer]')"
    )
    # 8 normal images of 250×250: the bounds 1e-5 and 1e-4 fall on 5 and 50 normal pixels, points that
    # anomalib's sampled thresholds reach; smooth maps plus noise (distinct scores), as a model's.
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(16, 2, 32, 32, generator=generator)
    background, blob = torch.nn.functional.interpolate(coarse, size=(250, 250), mode="bilinear").unbind(1)
    anomalous = (torch.arange(16) % 2).bool()[:, None, None]
    masks = (blob > 0.8) & anomalous
    maps = (
        0.5 * background
        + 4 * (blob - 0.75).clamp(min=0) * anomalous
        + 0.05 * torch.rand(16, 250, 250, generator=generator)
    )
    got = aupimo(maps, masks)
    reference = pimo.aupimo_scores(maps, masks.int(), num_thresholds=300_000)[4]
    assert got.images.tolist() == torch.nonzero(~reference.isnan()).flatten().tolist()
    # anomalib samples 300 000 thresholds (and integrates between the samples on the log axis); we are exact.
    np.testing.assert_allclose(got.values.numpy(), reference[got.images].numpy(), rtol=0, atol=1e-5)
    assert got.values.std() > 1e-3  # the images differ: a mean copied to every image would fail


@pytest.mark.parametrize("kind", list(load_benchmark().KINDS))
def test_the_new_metrics_and_the_benchmarks_references_are_exact_on_every_benchmark_distribution(kind, rank_path):
    # benchmark.py evaluator --check compares the metrics at MVTec AD size with its references: check both here.
    benchmark = load_benchmark()
    maps, masks, scores, labels = benchmark.evaluator_case(kind, 10, 32, seed=3)
    maps_np, masks_np = maps.numpy(), masks.numpy()
    pixel = pixel_metrics(maps, masks)
    assert pixel.pixel_ap == pytest.approx(average_precision_score(masks_np.ravel(), maps_np.ravel()), abs=1e-12)
    best, threshold = naive_f1_max(masks_np.ravel(), maps_np.ravel())
    assert (pixel.pixel_f1_max, pixel.pixel_threshold) == (pytest.approx(best, abs=1e-12), threshold)
    assert benchmark.reference_f1_max(masks_np.ravel(), maps_np.ravel()) == (pytest.approx(best, abs=1e-12), threshold)
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    normal = ~masks_np.reshape(10, -1).any(1)
    for bounds in ((1e-5, 1e-4), (1e-3, 1e-2)):
        expected = list(naive_aupimo(maps_np, masks_np, normal, bounds).values())
        got = aupimo(maps, masks, fpr_bounds=bounds).values.numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
        np.testing.assert_allclose(benchmark.reference_aupimo(maps_np, masks_np, bounds), expected, rtol=0, atol=1e-6)


def evaluator_case() -> tuple[Predictions, np.ndarray]:
    """Ten images, paths named: good ones, ``crack`` and ``hole`` ones (quantised maps: ties); image 8's mask is
    unknown; image 9 is anomalous with an empty mask (it has no AUPIMO)."""
    rng = np.random.default_rng(7)
    defects = ["good"] * 4 + ["crack"] * 3 + ["hole"] * 3
    labels = np.array([d != "good" for d in defects], dtype=np.int64)
    masks = np.zeros((10, 20, 20), dtype=bool)
    for i in range(4, 9):
        y, x = rng.integers(0, 14, 2)
        masks[i, y : y + rng.integers(2, 7), x : x + rng.integers(2, 7)] = True
    strength = np.array([0.0] * 4 + [1.0] * 3 + [0.3] * 3)[:, None, None]
    maps = (np.round((rng.random(masks.shape) + masks * strength) * 20) / 20).astype(np.float32)
    scores = maps.reshape(10, -1).max(1) + rng.normal(0, 0.1, 10).astype(np.float32)
    valid = np.ones(10, dtype=bool)
    valid[8] = False
    tensors = (torch.from_numpy(a) for a in (scores, labels, maps, masks, valid))
    paths = [f"test/{d}/{i:03d}.png" for i, d in enumerate(defects)]
    return Predictions(*tensors, paths=paths, defects=defects), valid


def test_the_evaluator_writes_the_new_metrics_exactly():
    pred, valid = evaluator_case()
    scores, labels = pred.scores.numpy(), pred.labels.numpy()
    maps, masks = pred.maps.numpy(), pred.masks.numpy()
    got = compute_metrics(pred)
    assert got["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    known_maps, known_masks = maps[valid], masks[valid]
    assert got["pixel_ap"] == pytest.approx(average_precision_score(known_masks.ravel(), known_maps.ravel()), abs=1e-12)
    best, threshold = naive_f1_max(known_masks.ravel(), known_maps.ravel())
    assert got["pixel_f1_max"] == pytest.approx(best, abs=1e-12) and got["pixel_threshold"] == threshold
    # AUPIMO: normal = the good images; one value per anomalous image with a known, non-empty mask.
    normal = labels[valid] == 0
    expected = naive_aupimo(known_maps, known_masks, normal)
    paths = [p for p, v in zip(pred.paths, valid) if v]
    assert got["aupimo_by_image"] == pytest.approx({paths[i]: value for i, value in expected.items()}, abs=1e-9)
    assert list(got["aupimo_by_image"]) == [pred.paths[i] for i in (4, 5, 6, 7)]  # 8: unknown mask; 9: empty
    assert got["aupimo"] == pytest.approx(np.mean(list(expected.values())), abs=1e-9)
    assert got["n_aupimo_images"] == 4
    for kind in ("crack", "hole"):
        chosen = (labels == 0) | np.array([d == kind for d in pred.defects])
        row = got["per_defect"][kind]
        assert row["image_ap"] == pytest.approx(average_precision_score(labels[chosen], scores[chosen]), abs=1e-12)
        known = chosen & valid
        assert row["pixel_ap"] == pytest.approx(
            average_precision_score(masks[known].ravel(), maps[known].ravel()), abs=1e-12
        )
        of_kind = [value for path, value in got["aupimo_by_image"].items() if f"/{kind}/" in path]
        assert row["aupimo"] == pytest.approx(np.mean(of_kind), abs=1e-12)
    assert got["per_defect"]["crack"]["aupimo"] != got["per_defect"]["hole"]["aupimo"]


def test_the_new_metrics_are_columns_and_the_threshold_is_labelled_a_test_set_choice():
    from anomalib_lite.reporting.tables import format_table

    pred, _ = evaluator_case()
    metrics = compute_metrics(pred)
    columns = metric_columns({"c": metrics})
    for name in ("image_ap", "pixel_ap", "pixel_f1_max", "aupimo"):
        assert METRICS[name].always and METRICS[name].higher_is_better and name in columns
    assert metric_columns({}) == tuple(name for name, metric in METRICS.items() if metric.always)
    assert "pixel_threshold" not in columns and "image_threshold" not in columns
    assert "test set" in METRICS["pixel_threshold"].test_set_threshold
    assert METRICS["pixel_f1_max"].test_set_threshold is None  # the best over thresholds: comparable with papers
    header = format_table({"c": metrics}).splitlines()[0]
    assert "| aupimo |" in header and "pixel_threshold" not in header

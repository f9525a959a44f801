"""Per-defect-type metrics: each defect type's images against the good ones, checked against scikit-learn
and against the evaluator's own pixel metrics on the subset built independently (NumPy indexing)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from anomalib_lite.data import DataModule, ImageSet
from anomalib_lite.data.datamodule import ImageRecord
from anomalib_lite.metrics import Predictions, collect_predictions, compute_metrics, per_defect_metrics, pixel_metrics
from anomalib_lite.metrics import per_defect as per_defect_module
from anomalib_lite.models.base import AnomalyOutput


def defect_case(seed: int):
    """12 images: 4 good, then ``crack``/``stain``/``hole`` ones with a raised square of different
    strength each (so the types differ in difficulty); the last ``hole`` image has no known mask."""
    rng = np.random.default_rng(seed)
    defects = ["good"] * 4 + ["crack"] * 3 + ["stain"] * 3 + ["hole"] * 2
    strength = {"good": 0.0, "crack": 1.0, "stain": 0.2, "hole": 0.5}
    n, size = len(defects), 10
    masks = np.zeros((n, size, size), dtype=bool)
    for i, defect in enumerate(defects):
        if defect != "good":
            y, x = rng.integers(0, size - 4, 2)
            masks[i, y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = True
    maps = rng.random((n, size, size)) + masks * np.array([strength[d] for d in defects])[:, None, None]
    maps = maps.astype(np.float32)
    labels = np.array([d != "good" for d in defects], dtype=np.int64)
    scores = maps.reshape(n, -1).max(1) + rng.normal(0, 0.2, n).astype(np.float32)
    mask_valid = np.ones(n, dtype=bool)
    mask_valid[-1] = False
    return defects, scores, labels, maps, masks, mask_valid


@pytest.mark.parametrize("seed", range(3))
def test_each_defect_type_against_the_good_images_matches_sklearn_and_the_subsets_pixel_metrics(seed):
    defects, scores, labels, maps, masks, mask_valid = defect_case(seed)
    pred = Predictions(*(torch.from_numpy(a) for a in (scores, labels, maps, masks, mask_valid)), defects=defects)
    got = compute_metrics(pred)["per_defect"]
    assert list(got) == ["crack", "hole", "stain"]
    kinds = np.array(defects)
    for kind, values in got.items():
        chosen = (kinds == "good") | (kinds == kind)
        assert values["image_auroc"] == pytest.approx(roc_auc_score(labels[chosen], scores[chosen]), abs=1e-12)
        known = chosen & mask_valid
        assert values["pixel_auroc"] == pytest.approx(roc_auc_score(masks[known].ravel(), maps[known].ravel()), 1e-12)
        subset = pixel_metrics(torch.from_numpy(maps[known].copy()), torch.from_numpy(masks[known].copy()))
        assert values["aupro"] == pytest.approx(subset.aupro, abs=1e-12)
        assert (values["n_images"], values["n_anomalous"]) == (chosen.sum(), (kinds == kind).sum())
    # The types really differ: a per-defect value that were the overall one would fail above as well.
    assert got["crack"]["aupro"] != got["stain"]["aupro"]


def test_no_per_defect_record_with_one_defect_type_or_no_good_image():
    defects, scores, labels, maps, masks, mask_valid = defect_case(0)
    tensors = [torch.from_numpy(a) for a in (scores, labels, maps, masks, mask_valid)]
    one_type = ["good"] * 4 + ["crack"] * 8
    assert per_defect_metrics(*tensors, one_type) == {}
    assert "per_defect" not in compute_metrics(Predictions(*tensors, defects=one_type))
    assert per_defect_metrics(*tensors[:1], torch.ones(12, dtype=torch.long), *tensors[2:], defects) == {}
    with pytest.raises(ValueError, match="3 defect types for 12 images"):
        per_defect_metrics(*tensors, defects[:3])


class ScoreByBrightness(torch.nn.Module):
    """A stand-in model: the map is the image's mean channel, the score its maximum."""

    def predict(self, image: torch.Tensor) -> AnomalyOutput:
        anomaly_map = image.mean(1)
        return AnomalyOutput(anomaly_map, anomaly_map.flatten(1).amax(1))


def test_test_batches_carry_the_defect_type_into_the_predictions(tmp_path):
    records = [
        ImageRecord(tmp_path / f"{d}/{i}.png", int(d != "good"), None, d)
        for i, d in enumerate(["good", "good", "crack", "stain", "crack"])
    ]
    images = torch.zeros(5, 8, 8, 3, dtype=torch.uint8)
    test = ImageSet(records, images, torch.zeros(5, 8, 8, dtype=torch.bool), torch.ones(5, dtype=torch.bool))
    datamodule = DataModule(test, test, batch_size=2)
    pred = collect_predictions(ScoreByBrightness(), datamodule.test_loader(), torch.device("cpu"), progress=False)
    assert pred.defects == ["good", "good", "crack", "stain", "crack"]


@pytest.mark.parametrize("limit", [0.02, 0.3, 1.0])
@pytest.mark.parametrize("levels", [None, 3])
@pytest.mark.parametrize("seed", range(3))
def test_ranks_beside_the_shared_sorted_good_pixels_equal_the_subsets_own_metrics(seed, levels, limit):
    defects, scores, labels, maps, masks, mask_valid = defect_case(seed)
    if levels is not None:  # ties within and across the good and the defect images, and −0.0 beside +0.0
        maps = (np.round(maps * levels) / levels).astype(np.float32)
        maps[0, 0, :3], maps[5, 0, :3] = -0.0, 0.0
    good, kind = slice(0, 4), slice(4, 7)
    normal_sorted = torch.sort(torch.from_numpy(maps[good]).reshape(-1)).values
    got = per_defect_module.pixel_metrics_beside(
        normal_sorted, torch.from_numpy(maps[kind]), torch.from_numpy(masks[kind]), limit
    )
    both = np.concatenate([maps[good], maps[kind]]), np.concatenate([masks[good], masks[kind]])
    expected = pixel_metrics(torch.from_numpy(both[0]), torch.from_numpy(both[1]), limit)
    assert got.pixel_auroc == pytest.approx(roc_auc_score(both[1].ravel(), both[0].ravel()), abs=1e-12)
    assert got.aupro == pytest.approx(expected.aupro, abs=1e-12)


@pytest.mark.parametrize("good_defect", [False, True])
def test_a_type_without_masks_or_a_good_image_with_a_defect_pixel_still_gives_the_subsets_metrics(good_defect):
    defects, scores, labels, maps, masks, mask_valid = defect_case(1)
    if good_defect:
        masks[0, 2:4, 2:4] = True  # the shared sort of the good pixels would be wrong: each subset on its own
    mask_valid[7:10] = False  # stain: no known mask
    tensors = [torch.from_numpy(a) for a in (scores, labels, maps, masks, mask_valid)]
    got = per_defect_metrics(*tensors, defects)
    kinds = np.array(defects)
    for kind in ("crack", "hole", "stain"):
        known = ((kinds == "good") | (kinds == kind)) & mask_valid
        subset = pixel_metrics(torch.from_numpy(maps[known].copy()), torch.from_numpy(masks[known].copy()))
        assert (got[kind]["pixel_auroc"], got[kind]["aupro"]) == pytest.approx((subset.pixel_auroc, subset.aupro))
    assert (got["stain"]["aupro"] is None) is not good_defect

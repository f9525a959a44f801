"""The evaluator refuses NaN/inf scores and maps, naming the images, instead of ranking them as numbers."""

from __future__ import annotations

import pytest
import torch

from anomalib_lite.errors import AnomalibLiteError, NonFiniteError
from anomalib_lite.metrics import Predictions, compute_metrics


def _predictions() -> Predictions:
    labels = torch.tensor([0, 0, 1, 1])
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[2:, 2:5, 2:5] = True
    maps = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(0)) + 2 * masks
    return Predictions(
        scores=maps.flatten(1).amax(1),
        labels=labels,
        maps=maps,
        masks=masks,
        mask_valid=torch.ones(4, dtype=torch.bool),
        paths=[f"test/{i}.png" for i in range(4)],
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_score_on_a_normal_image_is_refused_naming_it(value):
    pred = _predictions()
    pred.scores[1] = value
    with pytest.raises(NonFiniteError, match=r"1 of 4 test images: test/1\.png \(score\)") as caught:
        compute_metrics(pred)
    assert isinstance(caught.value, AnomalibLiteError)  # reported as one message by the command line


def test_a_non_finite_map_pixel_is_refused_naming_every_image_concerned():
    pred = _predictions()
    pred.maps[0, 3, 3] = float("nan")
    pred.maps[3, 0, 0] = float("inf")
    pred.scores[3] = float("inf")
    with pytest.raises(NonFiniteError, match=r"2 of 4 test images: test/0\.png \(map\), test/3\.png \(score and map\)"):
        compute_metrics(pred)


def test_finite_predictions_still_give_metrics():
    assert compute_metrics(_predictions())["image_auroc"] == 1.0

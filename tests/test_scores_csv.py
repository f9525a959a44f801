"""scores/<category>.csv: each test image's label, score, defect, predicted label and own pixel AUROC."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from anomalib_lite.metrics import Predictions
from anomalib_lite.pipeline.evaluation import SCORE_COLUMNS, write_scores


def _predictions() -> Predictions:
    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.random((5, 8, 8)).round(1))  # ties on purpose
    masks = torch.zeros(5, 8, 8, dtype=torch.bool)
    masks[2, 2:5, 3:6] = True
    masks[3, :4] = True
    masks[4] = True  # all anomalous: its AUROC is undefined
    return Predictions(
        scores=torch.tensor([0.1, 0.7, 0.4, 0.9, 0.5]),
        labels=torch.tensor([0, 0, 1, 1, 1]),
        maps=maps,
        masks=masks,
        mask_valid=torch.tensor([True, True, True, True, True]),
        paths=[f"img_{i}.png" for i in range(5)],
        defects=["good", "good", "hole", "hole", "scratch"],
    )


def test_each_row_has_its_predicted_label_and_its_own_pixel_auroc(tmp_path):
    pred = _predictions()
    write_scores(pred, tmp_path / "scores.csv", threshold=0.5)
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert tuple(rows[0]) == SCORE_COLUMNS
    assert [r["predicted"] for r in rows] == ["0", "1", "0", "1", "1"]  # score ≥ 0.5
    assert [r["defect"] for r in rows] == ["good", "good", "hole", "hole", "scratch"]
    for i in (2, 3):
        expected = roc_auc_score(pred.masks[i].flatten().numpy(), pred.maps[i].flatten().numpy())
        assert float(rows[i]["pixel_auroc"]) == pytest.approx(expected, abs=1e-12)
    assert [rows[i]["pixel_auroc"] for i in (0, 1, 4)] == ["", "", ""]  # no anomalous pixel, or no normal one


def test_without_a_threshold_the_predicted_column_is_empty(tmp_path):
    write_scores(_predictions(), tmp_path / "scores.csv")
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert {r["predicted"] for r in rows} == {""}

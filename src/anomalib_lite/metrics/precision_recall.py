"""Exact average precision and F1-max from the positives' ranks among the negatives, and the predicted masks.

A threshold ``t`` predicts the scores ``≥ t``. Precision and recall change only at a threshold equal to a
positive score (a threshold between positive scores adds negatives only: recall stays, precision falls), so
both metrics need, at each distinct positive score ``v``, ``TP(v)`` = the positives ``≥ v`` and ``FP(v)`` =
the negatives ``≥ v``. With the positives sorted by descending score (one sort of the positives only), ``TP``
is the index of the last positive of ``v``'s tie group + 1 and ``FP`` = #negatives − #negatives below ``v``,
from the same exact ranks that AUROC and AUPRO use (:mod:`~anomalib_lite.metrics.ranks`): no second sort of
the pixels.

- Average precision is scikit-learn's ``average_precision_score`` (no interpolation):
  ``AP = Σ_v (R(v) − R(v⁺)) · P(v)`` over the distinct thresholds, ``R`` = recall, ``P`` = precision, ``v⁺`` the
  next higher threshold; tied scores enter together.
- F1-max is the largest ``F1(v) = 2 TP / (TP + FP + #positives)`` and the threshold ``v`` reaching it (the
  highest such threshold when several reach it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anomalib_lite.metrics.auroc import ranks_of_both_classes
from anomalib_lite.metrics.ranks import PositiveRanks, ranks_descending, tie_ends


@dataclass
class PrecisionRecallCounts:
    """The confusion counts at every distinct positive score, from the highest down.

    Attributes:
        thresholds: ``K`` float32 distinct positive scores, descending.
        true_positives: ``K`` int64, the positives ``≥`` each threshold.
        false_positives: ``K`` int64, the negatives ``≥`` each threshold.
        n_positive: the number of positives (``true_positives[-1]``).
    """

    thresholds: torch.Tensor
    true_positives: torch.Tensor
    false_positives: torch.Tensor
    n_positive: int


def precision_recall_counts(ranks: PositiveRanks) -> PrecisionRecallCounts:
    """The counts of :class:`PrecisionRecallCounts` from exact ranks (:func:`~anomalib_lite.metrics.ranks.
    rank_positives`; positives in any order, sorted here unless already descending)."""
    ordered, _ = ranks_descending(ranks)
    ends = tie_ends(ordered.positives)
    return PrecisionRecallCounts(
        ordered.positives[ends],
        ends + 1,
        ordered.n_negative - ordered.below[ends],
        ordered.positives.numel(),
    )


def average_precision_from_counts(counts: PrecisionRecallCounts) -> float:
    """``Σ (TP(v) − TP(v⁺)) / #positives · TP(v) / (TP(v) + FP(v))`` in float64 (scikit-learn's AP)."""
    true_pos = counts.true_positives
    new_pos = torch.diff(true_pos, prepend=true_pos.new_zeros(1)).double()
    precision = true_pos.double() / (true_pos + counts.false_positives).double()
    return float((new_pos * precision).sum()) / counts.n_positive


def f1_max_from_counts(counts: PrecisionRecallCounts) -> tuple[float, float]:
    """``(best F1, the highest threshold reaching it)``, F1 = ``2 TP / (TP + FP + #positives)`` (float64)."""
    true_pos = counts.true_positives
    f1 = 2 * true_pos.double() / (true_pos + counts.false_positives + counts.n_positive).double()
    best = int(torch.argmax(f1))  # the first maximum: the highest threshold
    return float(f1[best]), float(counts.thresholds[best])


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Exact average precision (scikit-learn's ``average_precision_score``, ties included).

    Args:
        scores: ``N`` scores, higher = more anomalous. labels: ``N`` labels in {0, 1} (bool or integer).
    Returns:
        The AP, or ``None`` when only one class is present (undefined, as AUROC).
    """
    ranks = ranks_of_both_classes(scores, labels)
    return None if ranks is None else average_precision_from_counts(precision_recall_counts(ranks))


def f1_max(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float] | None:
    """Best F1 over all thresholds ``score >= t`` and the threshold that gives it.

    Args:
        scores: ``N`` scores; labels: ``N`` labels in {0, 1}.
    Returns:
        ``(f1, threshold)`` (the highest threshold when several give the best F1), or ``None`` when only one
        class is present: without a positive F1 is undefined, and without a negative every threshold up to the
        lowest score gives F1 = 1, so neither the value nor a threshold says anything about separating the
        classes.
    """
    ranks = ranks_of_both_classes(scores, labels)
    return None if ranks is None else f1_max_from_counts(precision_recall_counts(ranks))


def predicted_masks(maps: torch.Tensor, threshold: float) -> torch.Tensor:
    """The binary masks a pixel threshold predicts: ``maps >= threshold``.

    Args:
        maps: ``N×H×W`` (or any shape) anomaly maps. threshold: e.g. ``metrics.json``'s ``pixel_threshold``
            (the pixel F1-max threshold of the test set, our choice of rule).
    Returns:
        A bool tensor of ``maps``' shape.

    Raises:
        ValueError: ``threshold`` is NaN (it would predict nothing, silently).
    """
    if threshold != threshold:
        raise ValueError("pixel threshold is NaN: no mask can be predicted from it")
    return maps >= threshold

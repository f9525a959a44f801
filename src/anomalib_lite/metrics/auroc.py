"""Exact ROC AUC and ROC curve in torch, on whichever device the scores are on.

No binning: AUROC is the Mann-Whitney statistic (ties count one half) over the exact ranks of
the positives among the negatives (:mod:`~anomalib_lite.metrics.ranks`), as an exact integer
ratio. This equals scikit-learn's ``roc_auc_score``, whose trapezoidal curve merges tied scores
the same way.
"""

from __future__ import annotations

import torch

from anomalib_lite.metrics.ranks import PositiveRanks, RankCurve, curve_from_ranks, rank_positives


def auroc_from_ranks(ranks: PositiveRanks) -> float:
    """AUROC = (Σ over positives of #negatives below + ½ #negatives equal) / (P · N), from exact ranks."""
    twice_u = int((2 * ranks.below + ranks.equal).sum())
    return twice_u / (2 * ranks.below.numel() * ranks.n_negative)


def ranks_of_both_classes(scores: torch.Tensor, labels: torch.Tensor) -> PositiveRanks | None:
    """Exact ranks of the positives among the negatives of flat ``scores``/``labels``; ``None`` when
    only one class is present (AUROC and ROC undefined)."""
    scores = scores.reshape(-1).float()
    positive = labels.reshape(-1).bool()
    n_pos = int(torch.count_nonzero(positive))
    if n_pos == 0 or n_pos == positive.numel():
        return None
    return rank_positives(scores, positive)


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Exact area under the ROC curve.

    Args:
        scores: ``N`` scores, higher = more anomalous.
        labels: ``N`` labels in {0, 1} (bool or integer).
    Returns:
        The AUROC, or ``None`` when only one class is present (undefined).
    """
    ranks = ranks_of_both_classes(scores, labels)
    return None if ranks is None else auroc_from_ranks(ranks)


def roc_curve(scores: torch.Tensor, labels: torch.Tensor) -> RankCurve | None:
    """The exact ROC curve (every corner, tied scores merged), whose trapezoidal area is :func:`auroc`.

    Args:
        scores: ``N`` scores, higher = more anomalous. labels: ``N`` labels in {0, 1} (bool or integer).
    Returns:
        The curve (``y`` = TPR), or ``None`` when only one class is present.
    """
    ranks = ranks_of_both_classes(scores, labels)
    return None if ranks is None else curve_from_ranks(ranks)

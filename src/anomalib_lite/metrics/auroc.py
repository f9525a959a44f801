"""Exact ROC AUC and F1-max in torch, on whichever device the scores are on.

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


def _ranks_of_both_classes(scores: torch.Tensor, labels: torch.Tensor) -> PositiveRanks | None:
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
    ranks = _ranks_of_both_classes(scores, labels)
    return None if ranks is None else auroc_from_ranks(ranks)


def roc_curve(scores: torch.Tensor, labels: torch.Tensor) -> RankCurve | None:
    """The exact ROC curve (every corner, tied scores merged), whose trapezoidal area is :func:`auroc`.

    Args:
        scores: ``N`` scores, higher = more anomalous. labels: ``N`` labels in {0, 1} (bool or integer).
    Returns:
        The curve (``y`` = TPR), or ``None`` when only one class is present.
    """
    ranks = _ranks_of_both_classes(scores, labels)
    return None if ranks is None else curve_from_ranks(ranks)


def f1_max(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float] | None:
    """Best F1 over all thresholds ``score >= t`` and the threshold that gives it.

    Args:
        scores: ``N`` scores; labels: ``N`` labels in {0, 1}.
    Returns:
        ``(f1, threshold)``, or ``None`` when only one class is present: without a positive F1 is
        undefined, and without a negative every threshold up to the lowest score gives F1 = 1, so
        neither the value nor a threshold says anything about separating the classes.
    """
    scores = scores.reshape(-1).float()
    positive = labels.reshape(-1).bool()
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == positive.numel():
        return None
    order = torch.argsort(scores, descending=True)
    sorted_scores = scores[order]
    true_pos = torch.cumsum(positive[order].double(), 0)
    predicted = torch.arange(1, scores.numel() + 1, device=scores.device, dtype=torch.float64)
    # Keep the last point of each run of tied scores: a threshold takes all of them.
    last_of_run = torch.ones_like(positive)
    last_of_run[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    f1 = 2 * true_pos / (predicted + n_pos)
    f1 = torch.where(last_of_run, f1, torch.zeros_like(f1))
    best = int(torch.argmax(f1))
    return float(f1[best]), float(sorted_scores[best])

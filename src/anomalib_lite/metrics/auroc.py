"""Exact ROC AUC and F1-max in torch, on whichever device the scores are on.

No binning and no argsort of the whole array: AUROC is the Mann-Whitney statistic
(ties count one half), computed from the sorted scores of each class with
``searchsorted``. This equals scikit-learn's ``roc_auc_score``, whose trapezoidal
curve merges tied scores the same way.
"""

from __future__ import annotations

import numpy as np
import torch


def sort_values(values: torch.Tensor) -> torch.Tensor:
    """Return the values of a 1-D tensor sorted ascending, on the same device.

    On CPU NumPy's SIMD sort is several times faster than ``torch.sort`` and needs
    no index array; on CUDA ``torch.sort`` is used.
    """
    if values.device.type == "cpu":
        return torch.from_numpy(np.sort(values.contiguous().numpy(), kind="quicksort"))
    return torch.sort(values).values


def count_ranks(sorted_negatives: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Sum over positives of (#negatives below it + ½ #negatives equal to it), float64.

    Args:
        sorted_negatives: ``N`` negative scores, ascending.
        positives: ``P`` positive scores, any order.
    Returns:
        A 0-d float64 tensor: the Mann-Whitney U statistic of the positives.
    """
    below = torch.searchsorted(sorted_negatives, positives, side="left")
    below_or_equal = torch.searchsorted(sorted_negatives, positives, side="right")
    return (below.double() + below_or_equal.double()).sum() / 2


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Exact area under the ROC curve.

    Args:
        scores: ``N`` scores, higher = more anomalous.
        labels: ``N`` labels in {0, 1} (bool or integer).
    Returns:
        The AUROC, or ``None`` when only one class is present (undefined).
    """
    scores = scores.reshape(-1).float()
    positive = labels.reshape(-1).bool()
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    negatives = sort_values(scores[~positive])
    return float(count_ranks(negatives, scores[positive]) / (n_pos * n_neg))


def f1_max(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float] | None:
    """Best F1 over all thresholds ``score >= t`` and the threshold that gives it.

    Args:
        scores: ``N`` scores; labels: ``N`` labels in {0, 1}.
    Returns:
        ``(f1, threshold)``, or ``None`` when there is no positive.
    """
    scores = scores.reshape(-1).float()
    positive = labels.reshape(-1).bool()
    n_pos = int(positive.sum())
    if n_pos == 0:
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

"""Exact ROC AUC and F1-max in torch, on whichever device the scores are on.

No binning and no argsort of the whole array: AUROC is the Mann-Whitney statistic
(ties count one half), computed from the sorted scores of each class with
``searchsorted``. This equals scikit-learn's ``roc_auc_score``, whose trapezoidal
curve merges tied scores the same way.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch


def select(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values[mask]`` as a new 1-D tensor; on CPU through NumPy, several times faster there."""
    if values.device.type == "cpu":
        return torch.from_numpy(values.numpy()[mask.numpy()])
    return values[mask]


def sort_in_parts_(values: torch.Tensor) -> list[torch.Tensor]:
    """Sort a 1-D tensor in place, as one or more ascending parts whose union is the input.

    On CPU the tensor is cut into one chunk per core (up to 8), each sorted in its own thread
    by NumPy's SIMD sort, which releases the GIL; no index array is made and nothing is
    copied. On CUDA it is one ``torch.sort``. Functions here take such a list of parts.
    """
    if values.device.type != "cpu":
        return [torch.sort(values).values]
    array = values.contiguous().numpy()
    n_parts = max(1, min(os.cpu_count() or 1, 8, array.size // 1_000_000))
    chunks = np.array_split(array, n_parts)
    with ThreadPoolExecutor(n_parts) as pool:
        list(pool.map(lambda chunk: chunk.sort(kind="quicksort"), chunks))
    return [torch.from_numpy(chunk) for chunk in chunks]


def count_ranks(sorted_parts: list[torch.Tensor], positives: torch.Tensor) -> torch.Tensor:
    """Sum over positives of (#negatives below it + ½ #negatives equal to it), float64.

    Args:
        sorted_parts: the negative scores as ascending parts (:func:`sort_in_parts_`).
        positives: ``P`` positive scores, any order.
    Returns:
        A 0-d float64 tensor: the Mann-Whitney U statistic of the positives.
    """
    total = torch.zeros((), dtype=torch.float64, device=positives.device)
    for part in sorted_parts:
        below = torch.searchsorted(part, positives, side="left")
        below_or_equal = torch.searchsorted(part, positives, side="right")
        total += (below.double() + below_or_equal.double()).sum() / 2
    return total


def _order_key(value: np.float32) -> int:
    """An integer that orders float32 values as the floats are ordered."""
    bits = int(np.float32(value).view(np.uint32))
    return bits ^ 0xFFFFFFFF if bits & 0x80000000 else bits | 0x80000000


def _from_order_key(key: int) -> np.float32:
    bits = key & 0x7FFFFFFF if key & 0x80000000 else key ^ 0xFFFFFFFF
    return np.uint32(bits).view(np.float32)


def largest(sorted_parts: list[torch.Tensor], k: int) -> torch.Tensor:
    """Every value ≥ the ``k``-th largest of the union of the parts, ascending.

    Ties of the ``k``-th largest value are all included, so each distinct value in the
    result comes with its full count. Several (CPU, float32) parts: the ``k``-th largest is
    found by bisection on the float's order key, then the parts' tails are merged.
    """
    if len(sorted_parts) == 1:
        part = sorted_parts[0]
        kth = part[part.numel() - k : part.numel() - k + 1]
        return part[int(torch.searchsorted(part, kth, side="left")) :]
    arrays = [part.numpy() for part in sorted_parts]

    def at_least(key: int) -> int:
        value = _from_order_key(key)
        return sum(a.size - int(np.searchsorted(a, value, side="left")) for a in arrays)

    low = min(_order_key(a[0]) for a in arrays if a.size)  # at_least(low) = all ≥ k
    high = max(_order_key(a[-1]) for a in arrays if a.size)
    while low < high:  # the largest key with at_least(key) ≥ k: the k-th largest value
        middle = (low + high + 1) // 2
        low, high = (middle, high) if at_least(middle) >= k else (low, middle - 1)
    value = _from_order_key(low)
    merged = np.concatenate([a[np.searchsorted(a, value, side="left") :] for a in arrays])
    merged.sort(kind="stable")  # merges the already sorted runs
    return torch.from_numpy(merged)


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
    negatives = sort_in_parts_(select(scores, ~positive))
    return float(count_ranks(negatives, select(scores, positive)) / (n_pos * n_neg))


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

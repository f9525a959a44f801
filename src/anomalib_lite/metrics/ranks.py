"""Exact ranks of the positive scores among the negative ones, without sorting the negatives.

Pixel AUROC and AUPRO need, for every positive score ``p``, the number of negative scores strictly
below ``p`` and equal to ``p``, and the AUPRO also the ``k``-th largest negative score (where the FPR
limit is crossed). :func:`rank_positives` gives exactly these.

Small inputs (fewer than ``SORT_BELOW`` scores) sort the negatives. Large ones work on int32 keys that
order as the float32 scores do (−0.0 and +0.0 share the key 0):

- on CPU (unless ``COUNT_ON_CPU``) every key is sorted, in one part per thread (NumPy's sort releases
  the GIL), and the positives, sorted too, are located in each part by binary search; the positives'
  own keys are then taken out of the counts. Its cost does not depend on how the scores spread.
- on CUDA the keys are counted, not sorted. One ``bincount`` of the keys' high 16 bits puts every
  score in one of 65 536 buckets; a positive's rank among the negatives of *other* buckets follows
  from the cumulative counts. Only the buckets that hold both classes (and the bucket of the ``k``-th
  largest negative) need the order inside the bucket: a second ``bincount`` counts every full key in
  those buckets, over contiguous windows of at most ``window_buckets`` buckets (bounded memory:
  8 bytes × 65 536 per bucket), a full pass over the keys each.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from anomalib_lite.metrics.profiling import phase

SORT_BELOW = 1 << 22
COUNT_ON_CPU = False
WINDOW_BUCKETS = 256
_LOW_BITS = 16
_N_BUCKETS = 1 << 16
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


@dataclass
class KthLargest:
    """The ``k``-th largest negative score and how many negatives lie strictly below it and equal it."""

    value: float
    below: int
    equal: int


@dataclass
class PositiveRanks:
    """Where the positive scores sit among the negative ones.

    Attributes:
        positives: ``P`` float32 positive scores, in the order of ``scores[positive]`` (−0.0 as +0.0).
        below: ``P`` int64, the number of negative scores strictly below each positive.
        equal: ``P`` int64, the number of negative scores equal to each positive.
        n_negative: the number of negative scores.
        kth: the ``k``-th largest negative when asked for, else ``None``.
        ascending: ``P`` int64, a permutation that sorts ``positives`` ascending, when the ranking computed one
            (:func:`ranks_descending` then needs no sort of its own), else ``None``.
    """

    positives: torch.Tensor
    below: torch.Tensor
    equal: torch.Tensor
    n_negative: int
    kth: KthLargest | None
    ascending: torch.Tensor | None = None


def order_keys(values: torch.Tensor) -> torch.Tensor:
    """int32 keys of float32 values with ``key(a) < key(b)`` iff ``a < b`` and ``key(a) == key(b)`` iff
    ``a == b`` (so −0.0 and +0.0 both map to 0): the float's magnitude bits, negated for negative floats.

    Args:
        values: contiguous float32 tensor (NaN not allowed: it has no order).
    Returns:
        An int32 tensor of the same shape; a view of ``values`` when no value has its sign bit set.
    """
    bits = values.view(torch.int32)
    if bits.numel() == 0 or int(bits.min()) >= 0:
        return bits
    keys = _empty_int32(bits.shape, bits.device)
    torch.bitwise_and(bits, 0x7FFFFFFF, out=keys)
    sign = bits >> 31  # 0 or −1: x ^ −1 − (−1) = −x
    keys ^= sign
    keys -= sign
    return keys


def keys_to_values(keys: torch.Tensor) -> torch.Tensor:
    """The float32 values of :func:`order_keys` keys (the inverse, −0.0 coming back as +0.0)."""
    magnitude = keys.abs()
    bits = torch.where(keys < 0, magnitude | _INT32_MIN, magnitude)
    return bits.view(torch.float32)


def rank_positives(
    scores: torch.Tensor,
    positive: torch.Tensor,
    kth_largest: int | None = None,
    sort_below: int | None = None,
    window_buckets: int | None = None,
) -> PositiveRanks:
    """Exact rank counts of the positive scores among the negative ones.

    Args:
        scores: ``N`` float32 scores (contiguous; any device).
        positive: ``N`` bool labels, True for a positive.
        kth_largest: also find the ``k``-th largest negative score, ``1 <= k <= #negatives``.
        sort_below: inputs with fewer scores sort the negatives instead of sorting keys in parts (CPU) or
            counting them (default ``SORT_BELOW``).
        window_buckets: when counting, at most this many high-16-bit buckets are counted exactly in one pass
            (default ``WINDOW_BUCKETS``).
    Returns:
        :class:`PositiveRanks`.
    """
    scores, positive = scores.reshape(-1), positive.reshape(-1)
    n_negative = positive.numel() - int(torch.count_nonzero(positive))
    if kth_largest is not None and not 1 <= kth_largest <= n_negative:
        raise ValueError(f"kth_largest={kth_largest} outside [1, {n_negative}] negatives")
    if scores.numel() < (SORT_BELOW if sort_below is None else sort_below):
        return _rank_by_sorting(scores, positive, n_negative, kth_largest)
    if scores.device.type == "cpu" and not COUNT_ON_CPU:
        return _rank_by_sorted_parts(scores, positive, n_negative, kth_largest)
    window_buckets = WINDOW_BUCKETS if window_buckets is None else window_buckets
    return _rank_by_counting(scores, positive, n_negative, kth_largest, window_buckets)


def _rank_by_sorting(
    scores: torch.Tensor, positive: torch.Tensor, n_negative: int, kth_largest: int | None
) -> PositiveRanks:
    negatives = torch.sort(scores[~positive]).values
    positives = scores[positive] + 0.0  # −0.0 → +0.0, as the counting path returns them
    below = torch.searchsorted(negatives, positives, side="left")
    equal = torch.searchsorted(negatives, positives, side="right") - below
    kth = None
    if kth_largest is not None:
        value = negatives[n_negative - kth_largest : n_negative - kth_largest + 1]
        kth_below = int(torch.searchsorted(negatives, value, side="left"))
        kth_equal = int(torch.searchsorted(negatives, value, side="right")) - kth_below
        kth = KthLargest(float(value + 0.0), kth_below, kth_equal)
    return PositiveRanks(positives, below, equal, n_negative, kth)


def _rank_by_sorted_parts(
    scores: torch.Tensor, positive: torch.Tensor, n_negative: int, kth_largest: int | None
) -> PositiveRanks:
    with phase("keys"):
        keys = order_keys(scores.contiguous()).numpy()
        positive_keys = keys[positive.numpy()]
        order = np.argsort(positive_keys)  # ties may come in any order: their ranks are equal
        needles = positive_keys[order]

    def locate(part: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ordered = np.sort(part)
        return ordered, np.searchsorted(ordered, needles, "left"), np.searchsorted(ordered, needles, "right")

    with phase("sort in parts"):
        n_parts = torch.get_num_threads()
        with ThreadPoolExecutor(n_parts) as pool:
            located = list(pool.map(locate, np.array_split(keys, n_parts)))
    with phase("ranks from the sorted parts"):
        parts = [ordered for ordered, _, _ in located]
        own_below, own_at_or_below = _tie_bounds(needles)
        below_sorted = sum(left for _, left, _ in located) - own_below
        at_or_below = sum(right for _, _, right in located) - own_at_or_below
        below, equal = np.empty_like(below_sorted), np.empty_like(below_sorted)
        below[order] = below_sorted
        equal[order] = at_or_below - below_sorted
    kth = None if kth_largest is None else _kth_in_parts(parts, needles, kth_largest, n_negative)
    positives = keys_to_values(torch.from_numpy(positive_keys))
    below_tensor, equal_tensor = torch.from_numpy(below), torch.from_numpy(equal)
    return PositiveRanks(positives, below_tensor, equal_tensor, n_negative, kth, torch.from_numpy(order))


def _tie_bounds(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each element of a sorted array, the number of elements strictly below it and at or below it
    (``searchsorted`` left and right of the array in itself, in linear time)."""
    ends = tie_ends(torch.from_numpy(ordered)).numpy()
    lengths = np.diff(ends, prepend=-1)
    return np.repeat(ends + 1 - lengths, lengths), np.repeat(ends + 1, lengths)


def _kth_in_parts(parts: list[np.ndarray], needles: np.ndarray, k: int, n_negative: int) -> KthLargest:
    """The ``k``-th largest negative: the highest key with at least ``k`` negatives at or above it, by binary
    search over the int32 keys (``parts``: every key, each part sorted; ``needles``: the positives' keys, sorted)."""

    def at_or_above(key: int) -> int:
        if key > _INT32_MAX:
            return 0
        key = np.int32(key)  # a Python int would make searchsorted copy the part to int64
        everyone = sum(part.size - int(np.searchsorted(part, key, "left")) for part in parts)
        return everyone - (needles.size - int(np.searchsorted(needles, key, "left")))

    low, high = _INT32_MIN, _INT32_MAX  # at_or_above(low) >= k; the answer lies in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        if at_or_above(middle) >= k:
            low = middle
        else:
            high = middle - 1
    count = at_or_above(low)
    value = float(keys_to_values(torch.tensor([low], dtype=torch.int32))[0])
    return KthLargest(value, n_negative - count, count - at_or_above(low + 1))


def _rank_by_counting(
    scores: torch.Tensor, positive: torch.Tensor, n_negative: int, kth_largest: int | None, window_buckets: int
) -> PositiveRanks:
    device = scores.device
    with phase("keys"):
        keys = order_keys(scores.contiguous())
        positive_keys = _select(keys, positive)
    with phase("bucket histogram"):
        buckets = _empty_int32(keys.shape, device)
        torch.bitwise_right_shift(keys, _LOW_BITS, out=buckets)
        buckets += _N_BUCKETS // 2
        negative_count = torch.bincount(buckets, minlength=_N_BUCKETS)
        positive_bucket = (positive_keys >> _LOW_BITS).long() + _N_BUCKETS // 2
        positive_count = torch.bincount(positive_bucket, minlength=_N_BUCKETS)
        negative_count -= positive_count
        negatives_before = negative_count.cumsum(0) - negative_count  # in lower buckets
        resolve = (positive_count > 0) & (negative_count > 0)
        kth_bucket = None
        if kth_largest is not None:
            negatives_after = n_negative - negatives_before - negative_count  # in higher buckets
            kth_bucket = int((negatives_after >= kth_largest).sum())
            resolve[kth_bucket] = True

    below = negatives_before[positive_bucket]
    equal = torch.zeros_like(below)
    kth = None
    resolved = torch.nonzero(resolve).flatten().tolist()
    for first, last in _windows(resolved, window_buckets):
        with phase("key histogram"):
            low_clip = max(_key_start(first) - 1, _INT32_MIN)  # position 0 gathers every lower key
            high_clip = min(_key_start(last + 1), _INT32_MAX)  # the last position every higher key
            torch.clamp(keys, low_clip, high_clip, out=buckets)
            buckets -= low_clip
            counts = _bincount(buckets, high_clip - low_clip + 1)
            positions = (positive_keys.clamp(low_clip, high_clip) - low_clip).long()
            counts.index_add_(0, positions, torch.full_like(positions, -1))  # negatives only
            before = counts.cumsum(0)
            before -= counts  # negatives below each position, within the window
        with phase("ranks from counts"):
            inside = resolve[positive_bucket] & (positive_bucket >= first) & (positive_bucket <= last)
            start = _key_start(positive_bucket[inside]) - low_clip
            below[inside] += before[positions[inside]] - before[start]
            equal[inside] = counts[positions[inside]]
            if kth_bucket is not None and first <= kth_bucket <= last:
                kth = _kth_in_bucket(counts, before, kth_bucket, low_clip, kth_largest, negatives_before, n_negative)
        del counts, before
    return PositiveRanks(keys_to_values(positive_keys), below, equal, n_negative, kth)


def _kth_in_bucket(
    counts: torch.Tensor,
    before: torch.Tensor,
    bucket: int,
    low_clip: int,
    k: int,
    negatives_before: torch.Tensor,
    n_negative: int,
) -> KthLargest:
    """The ``k``-th largest negative, known to lie in ``bucket``, from the window's exact key counts."""
    start = _key_start(bucket) - low_clip
    in_bucket = counts[start : start + (1 << _LOW_BITS)]
    below_in_bucket = before[start : start + (1 << _LOW_BITS)] - before[start]
    # Negatives at or above each key of the bucket; the k-th largest is the highest key with at least k.
    at_or_above = n_negative - int(negatives_before[bucket]) - below_in_bucket
    offset = int((at_or_above >= k).sum()) - 1
    key = torch.tensor([start + offset + low_clip], dtype=torch.int32)
    below = n_negative - int(at_or_above[offset])
    return KthLargest(float(keys_to_values(key)[0]), below, int(in_bucket[offset]))


def _key_start(bucket: int | torch.Tensor) -> int | torch.Tensor:
    """The smallest key in a bucket (``bucket`` in [0, 65 536]: the key's high 16 bits + 32 768)."""
    return (bucket - _N_BUCKETS // 2) * (1 << _LOW_BITS)


def _windows(buckets: list[int], size: int) -> list[tuple[int, int]]:
    """Cut ascending bucket indices into runs ``(first, last)`` spanning at most ``size`` buckets each."""
    windows: list[tuple[int, int]] = []
    for bucket in buckets:
        if windows and bucket - windows[-1][0] < size:
            windows[-1] = (windows[-1][0], bucket)
        else:
            windows.append((bucket, bucket))
    return windows


def _bincount(values: torch.Tensor, length: int) -> torch.Tensor:
    """``torch.bincount(values, minlength=length)``; on CPU in one thread per core over slices of ``values``
    (torch's CPU bincount is serial; it releases the GIL), the per-slice counts then summed."""
    n_parts = torch.get_num_threads() if values.device.type == "cpu" else 1
    if n_parts == 1 or values.numel() < SORT_BELOW:
        return torch.bincount(values, minlength=length)
    with ThreadPoolExecutor(n_parts) as pool:
        parts = list(pool.map(lambda part: torch.bincount(part, minlength=length), values.chunk(n_parts)))
    for part in parts[1:]:
        parts[0] += part
    return parts[0]


def _select(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values[mask]``; on CPU through NumPy, faster there."""
    if values.device.type == "cpu":
        return torch.from_numpy(values.numpy()[mask.numpy()])
    return values[mask]


def _empty_int32(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """An uninitialised int32 buffer; on CPU from NumPy, whose large blocks use huge pages (fewer faults)."""
    if device.type == "cpu":
        return torch.from_numpy(np.empty(shape, dtype=np.int32))
    return torch.empty(shape, dtype=torch.int32, device=device)


@dataclass
class RankCurve:
    """A curve swept over the thresholds ``score ≥ t`` from high to low ``t``: ROC (``y`` = TPR) or PRO
    (``y`` = the PRO weight of the anomalous pixels at or above ``t``).

    Attributes:
        fpr: ``K`` float64, the share of negatives at or above each point's threshold; ascending, from 0.
        y: ``K`` float64, non-decreasing, from 0.
        thresholds: ``K`` float32; point ``k`` counts the scores ``≥ thresholds[k]`` (``+inf`` at (0, 0),
            ``-inf`` at the last point (every score), NaN at a point interpolated at an FPR limit).
    """

    fpr: torch.Tensor
    y: torch.Tensor
    thresholds: torch.Tensor

    def area(self) -> float:
        """Trapezoidal area under the curve (float64)."""
        return float(torch.trapezoid(self.y, self.fpr))


def ranks_descending(ranks: PositiveRanks) -> tuple[PositiveRanks, torch.Tensor | None]:
    """The same ranks with the positives sorted by descending score (one sort of the positives, or the ranking's
    ``ascending`` permutation reversed; none when they already are: then ``ranks`` itself and ``None``), and the
    permutation applied (``new[i] =
    old[order[i]]``; reorder per-positive weights with it)."""
    values = ranks.positives
    if values.numel() < 2 or not bool((values[1:] > values[:-1]).any()):
        return ranks, None
    order = torch.argsort(values, descending=True) if ranks.ascending is None else ranks.ascending.flip(0)
    return PositiveRanks(values[order], ranks.below[order], ranks.equal[order], ranks.n_negative, None), order


def tie_ends(values: torch.Tensor) -> torch.Tensor:
    """The index of the last element of each run of equal values in a sorted 1-D tensor (int64, ascending)."""
    last = torch.ones(values.numel(), dtype=torch.bool, device=values.device)
    last[:-1] = values[1:] != values[:-1]
    return torch.nonzero(last).flatten()


def curve_from_ranks(
    ranks: PositiveRanks, weights: torch.Tensor | None = None, fpr_limit: float | None = None
) -> RankCurve:
    """The exact curve (every corner, tied scores merged) from the positives' ranks among the negatives.

    At each distinct positive score ``v`` the curve has two corners: just above ``v`` (FPR from the
    negatives ``> v``, ``y`` from the positives ``> v``) and at ``v`` (``≥ v``). Between the corners of
    neighbouring positive scores only negatives pass the threshold, so the curve is horizontal there,
    and its trapezoidal area is the Mann-Whitney AUROC (ROC), or ``fpr_limit`` × the AUPRO (PRO).

    Args:
        ranks: from :func:`rank_positives`, the positives in any order (see also :func:`ranks_descending`).
        weights: ``P`` float64 weight of each positive, in the order of ``ranks.positives``
            (PRO: :func:`~anomalib_lite.metrics.aupro.region_weights`); ``None`` = ``1 / P`` each (ROC).
        fpr_limit: cut the curve at this FPR, with a point linearly interpolated there (PRO: 0.3).
    Returns:
        :class:`RankCurve` from (0, 0) to (1, Σ weights), or to the point at ``fpr_limit``.
    """
    n_negative, n_positive = ranks.n_negative, ranks.positives.numel()
    ranks, order = ranks_descending(ranks)
    values, below, equal = ranks.positives, ranks.below, ranks.equal
    if weights is not None and order is not None:
        weights = weights[order]
    ends = tie_ends(values)
    # ROC: from integer counts, so that the area is the exact AUROC up to float64 rounding.
    y_at = (ends + 1).double() / n_positive if weights is None else torch.cumsum(weights.double(), 0)[ends]
    y_above = torch.cat([y_at.new_zeros(1), y_at[:-1]])
    fpr_at = (n_negative - below[ends]).double() / n_negative
    fpr_above = (n_negative - below[ends] - equal[ends]).double() / n_negative
    value = values[ends].float()
    just_above = torch.nextafter(value, torch.full_like(value, float("inf")))
    zero, one = fpr_at.new_zeros(1), fpr_at.new_ones(1)
    total = y_at[-1:] if n_positive else zero
    fpr = torch.cat([zero, torch.stack([fpr_above, fpr_at], 1).flatten(), one])
    y = torch.cat([zero, torch.stack([y_above, y_at], 1).flatten(), total])
    first, last = value.new_full((1,), float("inf")), value.new_full((1,), -float("inf"))
    thresholds = torch.cat([first, torch.stack([just_above, value], 1).flatten(), last])
    keep = torch.ones_like(fpr, dtype=torch.bool)
    keep[1:] = (fpr[1:] != fpr[:-1]) | (y[1:] != y[:-1])  # a corner shared by two ties, or an empty step
    curve = RankCurve(fpr[keep], y[keep], thresholds[keep])
    return curve if fpr_limit is None else cut_curve(curve, fpr_limit)


def cut_curve(curve: RankCurve, fpr_limit: float) -> RankCurve:
    """The part of ``curve`` with FPR ≤ ``fpr_limit``, ended by a point linearly interpolated at the limit
    (threshold NaN) when the curve goes beyond it."""
    limit = torch.tensor([fpr_limit], dtype=curve.fpr.dtype, device=curve.fpr.device)
    inside = int(torch.searchsorted(curve.fpr, limit, right=True))
    if inside == curve.fpr.numel() or curve.fpr[inside - 1] == fpr_limit:
        return RankCurve(curve.fpr[:inside], curve.y[:inside], curve.thresholds[:inside])
    x0, x1 = curve.fpr[inside - 1], curve.fpr[inside]
    y0, y1 = curve.y[inside - 1], curve.y[inside]
    y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
    return RankCurve(
        torch.cat([curve.fpr[:inside], limit]),
        torch.cat([curve.y[:inside], y_limit[None]]),
        torch.cat([curve.thresholds[:inside], curve.thresholds.new_full((1,), float("nan"))]),
    )

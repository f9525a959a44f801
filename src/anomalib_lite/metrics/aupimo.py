"""AUPIMO, exact: the area under each anomalous image's per-image overlap (PIMO) curve.

Bertoldo et al. 2024, "AUPIMO: Redefining Visual Anomaly Detection Benchmarks with High Speed and Low Tolerance"
(reference implementation: anomalib's ``anomalib.metrics.pimo``). For a threshold ``t`` (a pixel is predicted
anomalous when its score is ``≥ t``):

- the shared FPR is the share of the normal images' pixels ``≥ t`` (ref-code: the mean of the normal images'
  per-image FPRs, the same number since every map has ``H×W`` pixels);
- each anomalous image ``i``'s TPR is the share of its own anomalous pixels ``≥ t``;
- ``AUPIMO_i = ∫ TPR_i d(log FPR) / log(U / L)`` over the shared FPR in ``[L, U] = [1e-5, 1e-4]`` (paper), in
  [0, 1]; the metric is its mean over the anomalous images.

Exact, where the reference samples ``num_thresholds`` (300 000) evenly spaced thresholds and integrates between
the sampled points nearest the bounds: here the curve has a corner at every distinct score (as the ROC and PRO
curves of :mod:`~anomalib_lite.metrics.ranks`). Between the corners just above and at a normal score ``w`` the
shared FPR rises from ``F(> w)`` to ``F(≥ w)`` while image ``i``'s TPR rises from ``T_i(> w)`` to ``T_i(≥ w)``
(its anomalous pixels tied with ``w``); between ``w`` and the next higher normal score only TPR rises (a
vertical step, no area). Each rising piece is linear in the FPR (ROC convention for tied scores: the ties
enter in random order; choice), and its area on the log axis is integrated in closed form, ``∫ T(z) dz / z``
clipped to ``[L, U]``. With continuous scores the pieces are one normal pixel wide and this is the limit of the
reference's trapezoids as its thresholds grow dense; with ties it stays defined (constant maps give
``(U − L) / log(U / L)``, chance level, where the reference refuses them).

Computed per anomalous pixel, not per threshold: a pixel of score ``v`` counts in its image's TPR wherever the
shared FPR is at least ``F(≥ v)`` (fully) and, within its tie group's span ``[F(> v), F(≥ v)]``, in proportion,
so ``AUPIMO_i = Σ_v area(v) / (P_i log(U / L))`` over image ``i``'s ``P_i`` anomalous pixels, with
``area(v) = log(U / clamp(F(≥ v), L, U))`` plus the tie group's part. ``F`` needs only the normal pixels at or
above the score where the shared FPR reaches ``U`` (about ``U ×`` the normal pixels): one comparison pass over the
normal maps gathers them (at or above a threshold guessed from a strided sample, exact whatever the guess), and
each anomalous pixel's ``F`` is a binary search among their distinct scores. Memory and time grow with the
anomalous pixels, not with images × thresholds.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from anomalib_lite.metrics.profiling import phase

FPR_BOUNDS = (1e-5, 1e-4)  # paper: AUPIMO's integration range of the shared FPR
_SAMPLE = 1 << 20  # normal pixels in the strided sample that guesses the selection threshold
NUMPY_ON_CPU = True  # CPU boolean scans through NumPy (faster there); False: torch's, the code CUDA runs


@dataclass
class Aupimo:
    """Per-image AUPIMO.

    Attributes:
        values: ``A`` float64 AUPIMO of each anomalous image, in [0, 1].
        images: ``A`` int64 indices of those images in the input (images with an anomalous pixel).
        n_normal_images: the normal images whose pixels make the shared FPR.
        fpr_bounds: the integration range ``(L, U)`` of the shared FPR.
    """

    values: torch.Tensor
    images: torch.Tensor
    n_normal_images: int
    fpr_bounds: tuple[float, float]

    @property
    def mean(self) -> float:
        """The mean over the anomalous images: the AUPIMO a table reports."""
        return float(self.values.mean())


def aupimo(
    maps: torch.Tensor,
    masks: torch.Tensor,
    normal: torch.Tensor | None = None,
    fpr_bounds: tuple[float, float] = FPR_BOUNDS,
) -> Aupimo | None:
    """Exact AUPIMO of every anomalous image (module docstring).

    Args:
        maps: ``N×H×W`` finite anomaly maps (compared as float32), any device.
        masks: ``N×H×W`` ground truth (bool or {0, 1}).
        normal: ``N`` bool, the images whose pixels make the shared FPR; ``None``: the images whose mask is
            empty (ref-code). Images neither normal nor with an anomalous pixel take no part.
        fpr_bounds: ``(L, U)`` with ``0 < L < U <= 1``.
    Returns:
        :class:`Aupimo`, or ``None`` when there is no normal image or no anomalous pixel (undefined).

    Raises:
        ValueError: shapes differ, the bounds are not ``0 < L < U <= 1``, or a ``normal`` image has an
            anomalous pixel.
    """
    low, high = fpr_bounds
    if not 0 < low < high <= 1:
        raise ValueError(f"AUPIMO FPR bounds {fpr_bounds} must satisfy 0 < lower < upper <= 1")
    if maps.shape != masks.shape or maps.dim() != 3:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} must be the same N×H×W")
    flat = maps.reshape(maps.shape[0], -1).float()
    with phase("AUPIMO anomalous pixels"):
        values, owners = _anomalous_pixels(flat, masks.reshape(flat.shape).to(flat.device))
        positives = torch.bincount(owners, minlength=flat.shape[0])  # anomalous pixels per image
    anomalous = positives > 0
    normal = ~anomalous if normal is None else normal.to(flat.device).bool().reshape(-1)
    if bool((normal & anomalous).any()):
        raise ValueError(f"{int((normal & anomalous).sum())} image(s) given as normal have anomalous pixels")
    if not bool(normal.any()) or not bool(anomalous.any()):
        return None
    n_normal = int(normal.sum()) * flat.shape[1]
    k = _rank_reaching(high, n_normal)
    with phase("AUPIMO normal pixels"):
        distinct, at_or_above = _top_normal_scores(flat, normal, k)
    with phase("AUPIMO integrals"):
        keep = values >= distinct[0]  # lower scores count only where the shared FPR is past U
        values, owners = values[keep], owners[keep]
        # Normal pixels ≥ and > each anomalous score: the FPR span of its tie group with the normal scores.
        zero = at_or_above.new_zeros(1)
        counts = torch.cat([at_or_above, zero])
        fpr_b = counts[torch.searchsorted(distinct, values, side="left")].double() / n_normal
        fpr_a = counts[torch.searchsorted(distinct, values, side="right")].double() / n_normal
        area = _pixel_areas(fpr_a, fpr_b, low, high)
        sums = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device).index_add_(0, owners, area)
    per_image = sums[anomalous] / positives[anomalous].double() / math.log(high / low)
    return Aupimo(per_image, torch.nonzero(anomalous).flatten(), int(normal.sum()), (low, high))


def defined_mean(values: torch.Tensor) -> float | None:
    """The mean of the entries of ``values`` that are not NaN (images with an AUPIMO); ``None`` when none is."""
    defined = values[~values.isnan()]
    return float(defined.mean()) if defined.numel() else None


def _rank_reaching(rate: float, n: int) -> int:
    """The smallest ``k`` in [1, n] with ``k / n >= rate`` (float64, as the FPR axis)."""
    k = min(max(math.ceil(rate * n), 1), n)
    while k > 1 and (k - 1) / n >= rate:
        k -= 1
    while k < n and k / n < rate:
        k += 1
    return k


def _anomalous_pixels(flat: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The scores of the anomalous pixels of ``flat`` (``N×D``) and the image of each (int64), in row order;
    on CPU through NumPy (its boolean scans are faster there)."""
    if flat.device.type == "cpu" and NUMPY_ON_CPU:
        where = torch.from_numpy(np.flatnonzero(truth.numpy()))
    else:
        where = torch.nonzero(truth.reshape(-1).bool()).flatten()
    return flat.reshape(-1)[where], where // flat.shape[1]


def _top_normal_scores(flat: torch.Tensor, normal: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct scores of the normal images (rows ``normal`` of ``flat``) from the highest down to the
    ``k``-th largest (ascending), and how many normal pixels are at or above each.

    Only the scores ``≥ c`` are gathered, ``c`` the ``k'``-th largest score of a strided sample of the normal
    images (``k'`` scaled from ``k`` with a margin); if fewer than ``k`` normal scores are ``≥ c``, a lower ``c``
    is tried (at last every score).
    """
    rows = torch.nonzero(normal).flatten()
    n = rows.numel() * flat.shape[1]
    step = max(1, n // _SAMPLE)
    sample = flat[rows, ::step].reshape(-1)
    wanted = 2 * math.ceil(k * sample.numel() / n) + 64
    while True:
        floor = -math.inf if wanted >= sample.numel() else float(torch.topk(sample, wanted, sorted=False).values.min())
        chosen = _scores_at_or_above(flat, normal, floor)
        if chosen.numel() >= k:
            break
        wanted *= 8
    distinct, counts = torch.unique(chosen, return_counts=True)  # ascending
    at_or_above = counts.flip(0).cumsum(0).flip(0)
    first = int((at_or_above >= k).sum()) - 1  # the k-th largest: the highest score with ≥ k at or above it
    return distinct[first:], at_or_above[first:]


def _scores_at_or_above(flat: torch.Tensor, rows: torch.Tensor, floor: float) -> torch.Tensor:
    """The scores ``≥ floor`` of the rows ``rows`` (``N`` bool) of ``flat``, in row order; on CPU through NumPy,
    in one block of rows per thread (its comparisons and boolean selection release the GIL)."""
    if flat.device.type == "cpu" and NUMPY_ON_CPU:

        def select(scores: np.ndarray, wanted: np.ndarray) -> np.ndarray:
            chosen = scores >= floor
            chosen &= wanted[:, None]
            return scores[chosen]

        n_blocks = torch.get_num_threads()
        blocks = np.array_split(flat.numpy(), n_blocks), np.array_split(rows.numpy(), n_blocks)
        with ThreadPoolExecutor(n_blocks) as pool:
            return torch.from_numpy(np.concatenate(list(pool.map(select, *blocks))))
    return flat[(flat >= floor) & rows[:, None]]


def _pixel_areas(fpr_a: torch.Tensor, fpr_b: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Each anomalous pixel's part of ``∫ TPR d(log FPR)`` over ``[low, high]`` (times the image's anomalous
    pixel count): it counts fully from ``F_b`` (the normal pixels ``≥`` its score) up, and within its tie
    group's span ``[F_a, F_b]`` (``F_a``: the normal pixels ``>`` it) as the share ``(z − F_a) / (F_b − F_a)``
    (ties entering in random order); ``F_a = F_b`` when no normal pixel ties with it."""
    z1, z2 = fpr_a.clamp(low, high), fpr_b.clamp(low, high)
    full = torch.log(high / z2)
    # ∫ (z − F_a) / (F_b − F_a) dz / z over [z1, z2] = (z2 − z1 − F_a log(z2 / z1)) / (F_b − F_a).
    span = fpr_b - fpr_a
    tied = (z2 - z1 - fpr_a * torch.log(z2 / z1)) / torch.where(span > 0, span, torch.ones_like(span))
    return full + torch.where(span > 0, tied, torch.zeros_like(span))

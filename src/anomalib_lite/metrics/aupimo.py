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

Only the normal pixels at or above the score where the shared FPR reaches ``U`` (about ``U ×`` the normal pixels)
and the anomalous pixels at or above it matter: they are found by one comparison pass over the maps (a
threshold guessed from a strided sample of the normal maps, exact whatever the guess), and every image's
counts at the shared thresholds come from one ``bincount``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from anomalib_lite.metrics.profiling import phase

FPR_BOUNDS = (1e-5, 1e-4)  # paper: AUPIMO's integration range of the shared FPR
_SAMPLE = 1 << 20  # normal pixels in the strided sample that guesses the selection threshold


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
    truth = masks.reshape(masks.shape[0], -1).to(flat.device).bool()
    positives = truth.sum(1)  # anomalous pixels per image
    normal = positives == 0 if normal is None else normal.to(flat.device).bool().reshape(-1)
    if bool((normal & (positives > 0)).any()):
        raise ValueError(f"{int((normal & (positives > 0)).sum())} image(s) given as normal have anomalous pixels")
    anomalous = positives > 0
    if not bool(normal.any()) or not bool(anomalous.any()):
        return None
    n_normal = int(normal.sum()) * flat.shape[1]
    k = _rank_reaching(high, n_normal)
    with phase("AUPIMO selection"):
        normal_values, values, owners = _pixels_at_or_above_kth(flat, truth, normal, k)
    with phase("AUPIMO integrals"):
        # Distinct normal scores from the highest down to w_J, where the shared FPR first reaches U.
        distinct, counts = torch.unique(normal_values, return_counts=True)  # ascending
        at_or_above = counts.flip(0).cumsum(0).flip(0)  # normal pixels ≥ each distinct score
        first = int((at_or_above >= k).sum()) - 1  # w_J: the highest score with ≥ k normal pixels at or above
        distinct, counts, at_or_above = distinct[first:], counts[first:], at_or_above[first:]
        keep = values >= distinct[0]
        values, owners = values[keep], owners[keep]
        index = torch.cumsum(anomalous, 0) - 1  # image → row of the anomalous images
        rows = index[owners]
        n_rows, n_levels = int(anomalous.sum()), distinct.numel()
        # Bucket m: a score equal to distinct[m] (even slot), or between distinct[m] and distinct[m + 1] (odd).
        level = torch.searchsorted(distinct, values, right=True) - 1
        slot = 2 * level + (values != distinct[level]).long()
        histogram = torch.bincount(rows * 2 * n_levels + slot, minlength=n_rows * 2 * n_levels)
        histogram = histogram.reshape(n_rows, n_levels, 2)
        equal, between = histogram[..., 0], histogram[..., 1]
        # Anomalous pixels of each image > distinct[m]: the buckets above m, and those strictly between.
        above = (between.flip(1).cumsum(1) + equal.flip(1).cumsum(1)).flip(1) - equal
        fpr_at = at_or_above.double() / n_normal
        fpr_above = (at_or_above - counts).double() / n_normal
        p = positives[anomalous].double()[:, None]
        areas = _log_integral(fpr_above, fpr_at, above.double() / p, (above + equal).double() / p, low, high)
    values = areas.sum(1) / math.log(high / low)
    return Aupimo(values, torch.nonzero(anomalous).flatten(), int(normal.sum()), (low, high))


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


def _pixels_at_or_above_kth(
    flat: torch.Tensor, truth: torch.Tensor, normal: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The normal images' scores ``≥ c`` and the anomalous pixels' scores ``≥ c`` with their image indices, for
    some ``c`` at or below the ``k``-th largest normal score (so that every score at or above it is kept).

    ``c`` is the ``k'``-th largest score of a strided sample of the normal images (``k'`` scaled from ``k`` with a
    margin); if fewer than ``k`` normal scores are ``≥ c``, a lower one is tried (at last the lowest score).
    """
    rows = torch.nonzero(normal).flatten()
    step = max(1, rows.numel() * flat.shape[1] // _SAMPLE)
    sample = flat[rows, ::step].reshape(-1)
    wanted = 2 * math.ceil(k * sample.numel() / (rows.numel() * flat.shape[1])) + 64
    while True:
        floor = -math.inf if wanted >= sample.numel() else float(torch.topk(sample, wanted, sorted=False).values.min())
        chosen = flat >= floor
        normal_chosen = chosen & normal[:, None]
        if int(normal_chosen.sum()) >= k:
            break
        wanted *= 8
    normal_values = flat[normal_chosen]
    del normal_chosen
    chosen &= truth
    owners = torch.repeat_interleave(torch.arange(flat.shape[0], device=flat.device), chosen.sum(1))
    return normal_values, flat[chosen], owners


def _log_integral(
    fpr_a: torch.Tensor, fpr_b: torch.Tensor, tpr_a: torch.Tensor, tpr_b: torch.Tensor, low: float, high: float
) -> torch.Tensor:
    """``∫ T(z) dz / z`` over ``[F_a, F_b] ∩ [low, high]`` of each piece ``T`` linear from ``(F_a, T_a)`` to
    ``(F_b, T_b)``; ``fpr_*``: ``M`` (shared), ``tpr_*``: ``A×M``; returns ``A×M`` float64 areas."""
    z1, z2 = fpr_a.clamp(low, high), fpr_b.clamp(low, high)
    slope = (tpr_b - tpr_a) / (fpr_b - fpr_a)
    at_z1 = tpr_a + slope * (z1 - fpr_a)
    log_ratio = torch.log(z2 / z1)
    # ∫ (T(z1) + s (z − z1)) / z dz = T(z1) log(z2/z1) + s (z2 − z1 − z1 log(z2/z1)); empty pieces give 0.
    return at_z1 * log_ratio + slope * (z2 - z1 - z1 * log_ratio)

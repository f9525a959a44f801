"""Do two runs differ beyond chance? DeLong's paired test of image AUROCs, Welch's t-test over seeds.

DeLong's test: do two image AUROCs on the same test images differ beyond chance?

DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated receiver
operating characteristic curves: a nonparametric approach", Biometrics 44(3). For ``m`` anomalous
scores ``x`` and ``n`` normal scores ``y`` of one model, with ψ(a, b) = 1 if a > b, ½ if a = b, else 0:

- the structural components are ``V10_i = mean_j ψ(x_i, y_j)`` (one per anomalous image) and
  ``V01_j = mean_i ψ(x_i, y_j)`` (one per normal image); the AUROC is the mean of either;
- for two models on the same images, ``S10`` and ``S01`` are the 2×2 sample covariance matrices
  (denominator ``m − 1``, ``n − 1``) of their components, and ``S = S10 / m + S01 / n`` estimates the
  covariance of the two AUROCs;
- ``z = (A1 − A2) / sqrt(S11 + S22 − 2 S12)``, two-sided p-value from the standard normal.

The components come from mid-ranks (Sun & Xu 2014's fast form): ``V10_i = (R_i − T_i) / n`` with ``R_i``
the mid-rank of ``x_i`` among all scores and ``T_i`` its mid-rank among the anomalous ones.

Welch's t-test compares a metric's mean over seeds between two groups of runs (for the pixel metrics,
where no per-image paired test applies); its p-value comes from Student's t via the incomplete beta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DeLongResult:
    """Two AUROCs on the same images, their covariance, and the paired test.

    Attributes:
        auroc: the two AUROCs. covariance: their 2×2 covariance matrix.
        z: the statistic. p_value: two-sided. Both ``nan`` (undefined) when the difference has zero variance
            (e.g. identical scores, or two perfect separations): no test can be made.
    """

    auroc: tuple[float, float]
    covariance: np.ndarray
    z: float
    p_value: float

    @property
    def difference(self) -> float:
        """AUROC of the first model minus that of the second."""
        return self.auroc[0] - self.auroc[1]


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties sharing the mean of their ranks (``k×N``: row by row)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        return np.stack([midranks(row) for row in values])
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks


def structural_components(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's components of each model's scores.

    Args:
        scores: ``k×N`` scores of ``k`` models on the same ``N`` images. labels: ``N`` in {0, 1}.
    Returns:
        ``V10`` (``k×m``, one per anomalous image) and ``V01`` (``k×n``, one per normal image).
    Raises:
        ValueError: the labels lack a class, or shapes disagree.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    labels = np.asarray(labels).astype(bool)
    if scores.shape[1] != labels.shape[0]:
        raise ValueError(f"{scores.shape[1]} scores per model but {labels.shape[0]} labels")
    m, n = int(labels.sum()), int((~labels).sum())
    if m == 0 or n == 0:
        raise ValueError(f"DeLong's test needs anomalous and normal images; got {m} anomalous, {n} normal")
    positive, negative = scores[:, labels], scores[:, ~labels]
    everything = midranks(np.concatenate([positive, negative], axis=1))
    within_positive = midranks(positive)
    within_negative = midranks(negative)
    v10 = (everything[:, :m] - within_positive) / n
    v01 = 1.0 - (everything[:, m:] - within_negative) / m
    return v10, v01


def delong_test(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray) -> DeLongResult:
    """DeLong's paired test of two models' image AUROCs on the same images (``scores_*``: ``N``; labels ``N``).

    Raises:
        ValueError: as :func:`structural_components`; or fewer than two images of a class.
    """
    v10, v01 = structural_components(np.stack([np.asarray(scores_a), np.asarray(scores_b)]), labels)
    m, n = v10.shape[1], v01.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's variance needs two images of each class; got {m} anomalous, {n} normal")
    covariance = np.cov(v10) / m + np.cov(v01) / n
    auroc = v10.mean(axis=1)
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = float(auroc[0] - auroc[1])
    if variance <= 1e-15:  # no spread to test against: the test is undefined, whatever the difference
        z, p = math.nan, math.nan
    else:
        z = difference / math.sqrt(variance)
        p = math.erfc(abs(z) / math.sqrt(2))
    return DeLongResult((float(auroc[0]), float(auroc[1])), covariance, z, p)


@dataclass(frozen=True)
class WelchResult:
    """Welch's unequal-variance t-test of two groups' means (e.g. a metric over seeds).

    Attributes:
        difference: mean of the first group minus that of the second. t, df: the statistic and its
            Welch-Satterthwaite degrees of freedom. p_value: two-sided. All ``nan`` when undefined (no spread).
    """

    difference: float
    t: float
    df: float
    p_value: float


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny, c, d = 1e-300, 1.0, 0.0
    f = 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            term = 1.0
        elif i % 2 == 0:
            term = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            term = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + term * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + term / c
        c = c if abs(c) > tiny else tiny
        f = c * d if i == 0 else f * c * d
        if i > 0 and abs(1.0 - c * d) < 1e-14:
            break
    return front * (f - 1.0)


def student_t_two_sided(t: float, df: float) -> float:
    """Two-sided p-value of Student's t with ``df`` (real, > 0) degrees of freedom: P(|T| ≥ |t|)."""
    return _incomplete_beta(df / 2, 0.5, df / (df + t * t))


def welch_test(a: list[float], b: list[float]) -> WelchResult:
    """Welch's t-test of ``a`` against ``b`` (each ≥ 2 values). With no spread in either group the test is
    undefined: ``t``, ``df`` and ``p_value`` are ``nan``, whatever the difference.

    Raises:
        ValueError: a group has fewer than two values.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the seed spread needs two runs a side; got {len(a)} and {len(b)}")
    mean_a, mean_b = float(np.mean(a)), float(np.mean(b))
    var_a, var_b = float(np.var(a, ddof=1)) / len(a), float(np.var(b, ddof=1)) / len(b)
    difference = mean_a - mean_b
    if var_a + var_b == 0:
        return WelchResult(difference, math.nan, math.nan, math.nan)
    t = difference / math.sqrt(var_a + var_b)
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    return WelchResult(difference, t, df, student_t_two_sided(t, df))

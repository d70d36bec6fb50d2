"""The drift statistics Evidently 0.7 picks by default, computed on pre-sorted or pre-counted data.

Evidently's default choice (``evidently.legacy.calculations.stattests.registry._get_default_stattest``),
with ``n_reference`` the reference size after dropping NaN/inf and ``n_values`` the number of distinct
values across both windows:

=================  ===========================================  ==========================================
                   numerical column                             categorical column
=================  ===========================================  ==========================================
n_reference<=1000  n_values<=5: chi-square (>2 values) or       chi-square (>2 values) or Z-test (<=2)
                   Z-test (<=2); else two-sample K-S
n_reference>1000   n_values<=5: Jensen-Shannon; else            Jensen-Shannon
                   Wasserstein distance normed by reference std
=================  ===========================================  ==========================================

Thresholds and the comparison that flags drift are each method's defaults: K-S ``p <= 0.05``, chi-square
and Z ``p < 0.05``, Wasserstein and Jensen-Shannon ``score >= 0.1``.

The formulas are Evidently's (which call scipy); only the data handling is faster: Wasserstein takes
both samples already sorted (the reference once, in a
:class:`~mlops_assets.monitoring.drift.ReferenceProfile`) and merges them in linear time instead of
scipy's two argsorts, a mergesort and two ``searchsorted`` over the concatenation; the summands are the
same numbers, so the result is the same to the last bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats
from scipy.spatial import distance

SMALL_REFERENCE_ROWS = 1000  # reference sizes up to this use the p-value tests
LOW_CARDINALITY_VALUES = 5  # numerical columns with at most this many values are counted, not measured
BINARY_VALUES = 2  # at most this many values -> Z-test instead of chi-square


@dataclass(frozen=True)
class StatMethod:
    """One of Evidently's drift statistics: its name, display name, default threshold and direction."""

    name: str
    display_name: str
    default_threshold: float
    drift_when: Literal["p<", "p<=", "score>="]

    def is_drift(self, score: float, threshold: float | None = None) -> bool:
        limit = self.default_threshold if threshold is None else threshold
        if self.drift_when == "p<":
            return bool(score < limit)
        if self.drift_when == "p<=":
            return bool(score <= limit)
        return bool(score >= limit)


KS = StatMethod("ks", "K-S p_value", 0.05, "p<=")
CHISQUARE = StatMethod("chisquare", "chi-square p_value", 0.05, "p<")
Z = StatMethod("z", "Z-test p_value", 0.05, "p<")
WASSERSTEIN = StatMethod("wasserstein", "Wasserstein distance (normed)", 0.1, "score>=")
JENSENSHANNON = StatMethod("jensenshannon", "Jensen-Shannon distance", 0.1, "score>=")

METHODS: dict[str, StatMethod] = {m.name: m for m in (KS, CHISQUARE, Z, WASSERSTEIN, JENSENSHANNON)}
METHODS_BY_DISPLAY_NAME: dict[str, StatMethod] = {m.display_name: m for m in METHODS.values()}


def select_method(n_reference: int, n_values: int, numerical: bool) -> StatMethod:
    """Evidently's default statistic for a column (see the module docstring)."""
    if n_reference <= SMALL_REFERENCE_ROWS:
        if numerical and n_values > LOW_CARDINALITY_VALUES:
            return KS
        return CHISQUARE if n_values > BINARY_VALUES else Z
    if numerical and n_values > LOW_CARDINALITY_VALUES:
        return WASSERSTEIN
    return JENSENSHANNON


def wasserstein_distance_sorted(u_sorted: np.ndarray, v_sorted: np.ndarray) -> float:
    """``scipy.stats.wasserstein_distance(u, v)`` for two ascending, finite, non-empty samples.

    scipy argsorts both samples, mergesorts their concatenation and binary-searches every merged point
    in both samples to get the two empirical CDFs. Here the concatenation of two sorted runs is merged
    by one stable argsort (linear on two runs), and the CDFs come from counting, along the merged order,
    how many points came from each sample. At ties these counts differ from scipy's, but only where the
    gap to the next point is zero, so every non-zero summand, and the sum, are exactly scipy's.
    (Unsorted inputs give the right answer too, only more slowly.)
    """
    u = np.asarray(u_sorted, dtype=np.float64)
    v = np.asarray(v_sorted, dtype=np.float64)
    n, m = u.size, v.size
    if n == 0 or m == 0:
        raise ValueError("wasserstein_distance_sorted: both samples must be non-empty")
    both = np.concatenate((u, v))
    order = np.argsort(both, kind="stable")  # u before v at ties
    merged = both[order]
    # number of v points among merged[0..k], k < n + m - 1 (exact integers in float64)
    v_count = np.cumsum(order[:-1] >= n, dtype=np.float64)
    cdf_gap = np.arange(1, n + m, dtype=np.float64)
    cdf_gap -= v_count  # number of u points among merged[0..k]
    cdf_gap /= n
    v_count /= m
    cdf_gap -= v_count
    np.abs(cdf_gap, out=cdf_gap)
    return float(np.vecdot(cdf_gap, np.diff(merged)))


def wasserstein_normed(u_sorted: np.ndarray, v_sorted: np.ndarray, reference_std: float) -> float:
    """Evidently's score: Wasserstein-1 distance divided by ``max(std(reference), 0.001)``."""
    return wasserstein_distance_sorted(u_sorted, v_sorted) / max(float(reference_std), 0.001)


def jensenshannon_counts(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) between the value shares of two aligned count vectors."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    return float(distance.jensenshannon(ref / ref.sum(), cur / cur.sum()))


def chisquare_pvalue(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Evidently's chi-square test: current counts against reference counts rescaled to the current size."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    k_norm = cur.sum() / ref.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(stats.chisquare(list(cur), [r * k_norm for r in ref])[1])


def z_test_pvalue(keys: Sequence[Any], reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Evidently's two-proportion Z-test on "is not the smallest value" (``keys`` ascending)."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if len(keys) <= 1:  # one value on both sides: identical distributions
        return 1.0
    n1, n2 = float(ref.sum()), float(cur.sum())
    p1 = (n1 - ref[0]) / n1
    p2 = (n2 - cur[0]) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def ks_pvalue(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sided two-sample Kolmogorov-Smirnov p-value (``scipy.stats.ks_2samp``, as Evidently)."""
    return float(stats.ks_2samp(reference, current)[1])

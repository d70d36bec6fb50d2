"""Calibrated drift: a verdict whose false-alarm rate is controlled on the reference's own history.

Evidently's default verdict compares a statistic with a fixed threshold (normed Wasserstein >= 0.1).
On market data that flags every 60-day window, even windows taken from inside the reference: prices are
autocorrelated and their volatility clusters, so any 60 consecutive days differ from the whole history
far more than independent draws would. A fixed threshold cannot know how large "normal" is for a feature.

Here "normal" is measured. For each feature:

1. **Null distribution.** ``n_draws`` windows of the current window's length (in dates) are drawn from
   the reference with a *moving-block bootstrap over whole dates*: blocks of ``block_days`` consecutive
   dates, every row of a drawn date kept (a panel of symbol x date keeps its cross-section), blocks
   concatenated until the window is full. Within a block the autocorrelation and the volatility regime
   are the real ones. The default block is the whole window (``block_days = window_days``, i.e. each draw
   is one contiguous stretch of history, the subsampling scheme of Politis & Romano): the platform's
   features are rolling statistics with look-backs up to 60 days, so a 60-day window of them is
   dependent along its whole length, and shorter blocks that splice distant periods together make draws
   look *more* like the reference than a real window does (a null that is too narrow gives false alarms).
   The rule of thumb ``n^(1/3)`` of Hall, Horowitz & Jing is for the variance of a mean of weakly
   dependent data; it is far too short here. The same blocks are used for every feature, so the
   dependence *between* features is kept too.
2. **Statistic.** Numerical columns: the Wasserstein-1 distance normed by the reference's standard
   deviation, the statistic Evidently picks for a numerical column of a large reference, so the two
   verdicts measure the same thing and differ only in how "too large" is decided. It is computed on
   the reference's ``n_bins``-quantile grid (each bin's mass at the reference's mean inside the bin):
   a window is then summarised by one count vector per feature, a null draw is a sum of per-date count
   vectors (differences of a cumulative sum), and 1,000 draws cost milliseconds while a 1M-row window
   costs one binary search per value. Because the null is computed with exactly the same statistic, the
   binning changes power only slightly and the level not at all. Categorical columns: the
   Jensen-Shannon distance of the category frequencies (Evidently's categorical statistic); categories
   the reference never saw share one "other" bin.
3. **p-value** ``(1 + #{null >= observed}) / (1 + n_draws)`` per feature, then the Benjamini-Hochberg
   step-up across features (``scipy.stats.false_discovery_control``): a feature is *significant* when
   its adjusted q-value is ``<= alpha``. Under no drift at all, the chance that any feature is flagged is
   at most ``alpha`` (BH controls the family-wise error under the global null, for independent or
   positively dependent p-values, as features of one market are).
4. **Dataset drift** when the share of significant features is ``>= threshold_share``
   (``monitoring.drift_share_threshold``).

Limits: a history of ``T`` dates holds about ``T / window_days`` independent windows, so p-values below
that resolution rest on the history's most extreme stretches. Over independent GARCH(1,1) panels the
dataset verdict's false-alarm rate after the reference stays within ``alpha``
(``mlops_assets_tests/monitoring/test_calibrated.py``), but a single series whose later years hold a
volatility regime its reference never saw is flagged more often: that is drift relative to what the
model was trained on, which is what the verdict is for.

Where the pieces live: this module takes the verdict (:func:`calibrated_drift`, :class:`CalibratedResult`);
:mod:`~mlops_assets.monitoring.calibrated_profile` holds the parameters, the reference binned per feature
and the null of each feature's statistic (:class:`CalibratedProfile`, :func:`build_profile`);
:mod:`~mlops_assets.monitoring.calibrated_cache` keeps profiles on disk. The null depends on the
reference, the window length and the parameters, never on the current window, so it is built once and
cached (``<cache_dir>/<key>.npz``, written to a temporary file and renamed) keyed by a fingerprint of the
reference data, the window length and the parameters. Checking a window then costs one pass over its values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from mlops_assets.errors import InvalidInput
from mlops_assets.monitoring.calibrated_profile import CalibratedProfile, as_polars, column_values, map_threads
from mlops_assets.monitoring.columns import Frame

PER_COLUMN_SCHEMA: dict[str, pl.DataType] = {
    "column": pl.String(),
    "column_type": pl.String(),
    "statistic": pl.String(),
    "score": pl.Float64(),
    "p_value": pl.Float64(),
    "q_value": pl.Float64(),
    "significant": pl.Boolean(),
    "null_p95": pl.Float64(),  # the 95th percentile of the null: what a "normal" window scores
    "n_reference": pl.Int64(),
    "n_current": pl.Int64(),
}


@dataclass(frozen=True)
class CalibratedResult:
    """Per-feature statistic, p-value, BH q-value and significance, and the dataset verdict."""

    per_column: pl.DataFrame
    share_drifted: float
    dataset_drift: bool
    threshold_share: float
    alpha: float
    n_draws: int
    window_days: int
    block_days: int
    n_reference: int
    n_current: int
    profile_from_cache: bool
    profile_key: str

    @property
    def drifted_columns(self) -> list[str]:
        return self.per_column.filter(pl.col("significant")).get_column("column").to_list()

    @property
    def n_columns(self) -> int:
        return self.per_column.height

    def to_dict(self) -> dict[str, Any]:
        return {"method": "calibrated", "share_drifted": self.share_drifted, "dataset_drift": self.dataset_drift,
                "threshold_share": self.threshold_share, "alpha": self.alpha, "n_draws": self.n_draws,
                "window_days": self.window_days, "block_days": self.block_days,
                "drifted_columns": self.drifted_columns, "n_reference": self.n_reference,
                "n_current": self.n_current, "profile_from_cache": self.profile_from_cache,
                "per_column": self.per_column.to_dicts()}


# --- the verdict ----------------------------------------------------------------------------------------

PARALLEL_ROWS = 100_000  # windows from this many rows check their features in threads


def window_length(current: pl.DataFrame, time_column: str | None, rows_per_date: float) -> int:
    """The current window's length in dates: its distinct dates, or its rows over the reference's rows per
    date when it has no time column (served requests)."""
    if time_column is not None and time_column in current.columns:
        return max(1, current.get_column(time_column).n_unique())
    return max(1, round(current.height / max(rows_per_date, 1e-9)))


def calibrated_drift(profile: CalibratedProfile, current: Frame, *, threshold_share: float = 0.5,
                     columns: Sequence[str] | None = None) -> CalibratedResult:
    """The calibrated verdict of ``current`` against a built profile (see the module docstring)."""
    if isinstance(threshold_share, bool) or not 0.0 < float(threshold_share) <= 1.0:
        raise InvalidInput("threshold_share", f"must be in (0, 1], got {threshold_share!r}")
    cur = as_polars(current, "current")
    names = list(columns) if columns is not None else list(profile.features)
    missing = [c for c in names if c not in cur.columns]
    if missing:
        raise InvalidInput(missing[0], "column not found in the current data")
    unprofiled = [c for c in names if c not in profile.features]
    if unprofiled:
        raise InvalidInput(unprofiled[0], "is not in the calibrated profile", "build the profile with it")
    def one(column: str) -> dict[str, Any]:
        feature = profile.features[column]
        counts = feature.counts_of(column_values(cur, column, feature.column_type == "numerical"))
        n_current = int(counts.sum())
        score = float(feature.scores(counts)[0]) if n_current else float("nan")
        return {"column": column, "column_type": feature.column_type, "statistic": feature.statistic,
                "score": score, "p_value": feature.p_value(score),
                "null_p95": float(np.quantile(feature.null, 0.95)) if len(feature.null) else float("nan"),
                "n_reference": feature.n_reference, "n_current": n_current}

    rows = map_threads(one, names) if cur.height >= PARALLEL_ROWS else [one(c) for c in names]
    p_values = np.array([r["p_value"] for r in rows])
    q_values = stats.false_discovery_control(p_values, method="bh") if len(rows) else p_values
    alpha = profile.params.alpha
    for row, q in zip(rows, q_values, strict=True):
        row["q_value"] = float(q)
        row["significant"] = bool(q <= alpha)
    per_column = pl.DataFrame(rows, schema=PER_COLUMN_SCHEMA, orient="row") if rows else pl.DataFrame(
        schema=PER_COLUMN_SCHEMA)
    n_significant = int(per_column.get_column("significant").sum())
    share = n_significant / max(1, per_column.height)
    return CalibratedResult(per_column=per_column, share_drifted=share, dataset_drift=bool(share >= threshold_share),
                            threshold_share=float(threshold_share), alpha=alpha, n_draws=profile.params.n_draws,
                            window_days=profile.window_days, block_days=profile.block_days,
                            n_reference=profile.n_reference_rows, n_current=cur.height,
                            profile_from_cache=profile.from_cache, profile_key=profile.key)

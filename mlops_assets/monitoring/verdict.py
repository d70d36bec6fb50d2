"""The one entry point for every drift decision: the configured verdict, and both verdicts side by side.

:func:`drift_verdict` gives the verdict of the configured method (``monitoring.drift_method``):

* ``"calibrated"`` (the default): :mod:`~mlops_assets.monitoring.calibrated`, a per-feature p-value against
  the reference's own history and a Benjamini-Hochberg step, so its false-alarm rate is controlled;
* ``"evidently"``: :func:`~mlops_assets.monitoring.drift.fast_drift`, Evidently's default preset verdict,
  exactly (a fixed threshold on each statistic).

With ``compare=True`` the other method runs too, so a report can show both. The drift report, the drift
sensor (through the report) and the compliance gate's drift share (:func:`candidate_drift_share`) all
decide through this function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from mlops_assets.errors import InvalidInput
from mlops_assets.monitoring.calibrated import CalibratedResult, calibrated_drift, window_length
from mlops_assets.monitoring.calibrated_cache import cached_profile
from mlops_assets.monitoring.calibrated_profile import CalibrationParams, as_polars
from mlops_assets.monitoring.columns import Frame, resolve_column_types
from mlops_assets.monitoring.drift import DriftResult, _window, fast_drift

DriftMethod = Literal["calibrated", "evidently"]
METHODS: tuple[str, ...] = ("calibrated", "evidently")


@dataclass(frozen=True)
class DriftVerdict:
    """The configured method's verdict (``share_drifted``, ``dataset_drift``, ``drifted_columns``) and the
    results of the methods that ran (``calibrated``, ``evidently``; None when not run)."""

    method: str
    share_drifted: float
    dataset_drift: bool
    drifted_columns: list[str]
    threshold_share: float
    n_reference: int
    n_current: int
    calibrated: CalibratedResult | None = None
    evidently: DriftResult | None = None

    def side_by_side(self) -> pl.DataFrame:
        """One row per feature: the calibrated columns (``cal_*``) beside Evidently's (``ev_*``)."""
        frames = []
        if self.calibrated is not None:
            frames.append(self.calibrated.per_column.select(
                "column", pl.col("statistic").alias("cal_statistic"), pl.col("score").alias("cal_score"),
                pl.col("p_value").alias("cal_p_value"), pl.col("q_value").alias("cal_q_value"),
                pl.col("significant").alias("cal_significant")))
        if self.evidently is not None:
            frames.append(self.evidently.per_column.select(
                "column", pl.col("method").alias("ev_method"), pl.col("score").alias("ev_score"),
                pl.col("threshold").alias("ev_threshold"), pl.col("drifted").alias("ev_drifted")))
        if not frames:
            return pl.DataFrame({"column": []}, schema={"column": pl.String})
        out = frames[0]
        for frame in frames[1:]:
            out = out.join(frame, on="column", how="full", coalesce=True, maintain_order="left")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "share_drifted": self.share_drifted, "dataset_drift": self.dataset_drift,
                "drifted_columns": self.drifted_columns, "threshold_share": self.threshold_share,
                "calibrated": None if self.calibrated is None else self.calibrated.to_dict(),
                "evidently": None if self.evidently is None else self.evidently.to_dict()}


def _method(method: str) -> str:
    if method not in METHODS:
        raise InvalidInput("method", f"must be one of {list(METHODS)}, got {method!r}")
    return method


def drift_verdict(reference: Frame, current: Frame, columns: Sequence[str] | None = None, *,
                  method: DriftMethod = "calibrated", categorical_columns: Sequence[str] | None = None,
                  threshold_share: float = 0.5, params: CalibrationParams | None = None,
                  cache_dir: Path | None = None, time_column: str | None = "date",
                  compare: bool = True) -> DriftVerdict:
    """The drift verdict of ``current`` against ``reference`` by ``method`` (plus the other when ``compare``).

    * ``columns``: the tested columns (None: every numerical/categorical column but ``time_column``);
      types are inferred from ``current`` as Evidently does unless ``categorical_columns`` is given;
    * ``threshold_share``: the dataset drifts when this share of the columns drift (``>=``);
    * ``params``, ``cache_dir``, ``time_column``: of the calibrated method (``time_column`` orders the
      reference into dates for the block resampling; the current window's length is its number of dates,
      or its rows over the reference's rows per date when it has no time column).
    """
    _method(method)
    params = params or CalibrationParams()
    if isinstance(threshold_share, bool) or not 0.0 < float(threshold_share) <= 1.0:
        raise InvalidInput("threshold_share", f"must be in (0, 1], got {threshold_share!r}")
    ref, cur = as_polars(reference, "reference"), as_polars(current, "current")
    if columns is None:
        columns = [c for c in cur.columns if c != time_column]
    types = resolve_column_types(cur.select(columns), columns, categorical_columns)
    names = list(types)
    calibrated = evidently = None
    if method == "calibrated" or compare:
        n_dates = _reference_dates(ref, time_column)
        length = window_length(cur, time_column, ref.height / max(1, n_dates))
        profile = cached_profile(ref.select(([time_column] if time_column else []) + names), length, types,
                                 params=params, cache_dir=cache_dir, time_column=time_column)
        calibrated = calibrated_drift(profile, cur, threshold_share=threshold_share, columns=names)
    if method == "evidently" or compare:
        categorical = [c for c, t in types.items() if t.value == "categorical"]
        evidently = fast_drift(ref.select(names), cur.select(names), names, categorical_columns=categorical,
                               threshold_share=threshold_share)
    chosen: Any = calibrated if method == "calibrated" else evidently
    return DriftVerdict(method=method, share_drifted=float(chosen.share_drifted),
                        dataset_drift=bool(chosen.dataset_drift), drifted_columns=list(chosen.drifted_columns),
                        threshold_share=float(threshold_share), n_reference=ref.height, n_current=cur.height,
                        calibrated=calibrated, evidently=evidently)


def _reference_dates(ref: pl.DataFrame, time_column: str | None) -> int:
    if time_column is None:
        return ref.height
    if time_column not in ref.columns:
        raise InvalidInput(f"reference.{time_column}", f"the reference data has no time column {time_column!r}",
                           "pass time_column=None when each row is one time step in order")
    return ref.get_column(time_column).n_unique()


def verdict_options(settings: Any) -> dict[str, Any]:
    """``drift_verdict`` keyword arguments from the platform settings (method, threshold, params, cache)."""
    m = settings.monitoring
    return {"method": m.drift_method, "threshold_share": m.drift_share_threshold,
            "params": CalibrationParams(alpha=m.drift_fdr_alpha, n_draws=m.drift_null_draws,
                                        block_days=m.drift_block_days),
            "cache_dir": settings.drift_profiles_dir}


def candidate_drift_share(train: pl.DataFrame, dataset: pl.DataFrame, features: list[str], settings: Any) -> float:
    """Share of the candidate's features drifted between its training rows and the latest
    ``monitoring.drift_window_days`` dates of ``dataset``, by the configured method (in [0, 1])."""
    window_days = settings.monitoring.drift_window_days
    dates = dataset["date"].unique().sort()
    current = dataset.filter(pl.col("date") >= dates[max(0, len(dates) - window_days)])
    columns = ["date", *features]
    verdict = drift_verdict(train.select(columns), current.select(columns), features, compare=False,
                            **verdict_options(settings))
    return verdict.share_drifted


def verdict_summary_row(verdict: DriftVerdict, reference_window: Any, current_window: Any) -> dict[str, Any]:
    """One warehouse row with both verdicts side by side (the configured one in ``share_drifted``)."""
    ref_start, ref_end = _window(reference_window, "reference_window")
    cur_start, cur_end = _window(current_window, "current_window")
    cal, ev = verdict.calibrated, verdict.evidently
    return {
        "reference_start": ref_start, "reference_end": ref_end, "current_start": cur_start, "current_end": cur_end,
        "n_reference": verdict.n_reference, "n_current": verdict.n_current,
        "drift_method": verdict.method, "share_drifted": verdict.share_drifted,
        "threshold_share": verdict.threshold_share, "dataset_drift": verdict.dataset_drift,
        "drifted_columns": ",".join(verdict.drifted_columns),
        "calibrated_share": None if cal is None else cal.share_drifted,
        "calibrated_drift": None if cal is None else cal.dataset_drift,
        "calibrated_columns": None if cal is None else ",".join(cal.drifted_columns),
        "calibrated_alpha": None if cal is None else cal.alpha,
        "evidently_share": None if ev is None else ev.share_drifted,
        "evidently_drift": None if ev is None else ev.dataset_drift,
        "evidently_columns": None if ev is None else ",".join(ev.drifted_columns),
    }

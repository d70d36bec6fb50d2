"""Fast, exact data and prediction drift: Evidently's default verdicts without Evidently's run time.

:func:`fast_drift` gives, per column, the same statistic, score, threshold and drift flag as
``Report([DataDriftPreset()]).run(current, reference)`` in Evidently 0.7, and the same dataset verdict
(share of drifted columns ``>= threshold_share``), on the full data (no sampling). It is fast because each
column is cleaned and sorted (or counted) once, the statistics work on sorted arrays and count tables,
and columns run in parallel threads (numpy releases the GIL). A :class:`ReferenceProfile` keeps the
prepared reference so that many current windows can be compared against it without redoing that work.

Column typing follows Evidently (see :mod:`mlops_assets.monitoring.columns`): types are inferred from the
*current* data unless ``categorical_columns`` is given. Prediction or probability columns are ordinary
columns; list them in ``prediction_columns`` to have them flagged ``kind="prediction"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import polars as pl

from mlops_assets.monitoring.columns import (
    ColumnSource,
    ColumnType,
    DriftInputError,
    Frame,
    require_columns,
    resolve_column_types,
)
from mlops_assets.monitoring.prepare import (
    PreparedColumn,
    aligned_counts,
    prepare_column,
    union_unique_count,
)
from mlops_assets.monitoring.stattests import (
    CHISQUARE,
    JENSENSHANNON,
    KS,
    LOW_CARDINALITY_VALUES,
    WASSERSTEIN,
    Z,
    StatMethod,
    chisquare_pvalue,
    jensenshannon_counts,
    ks_pvalue,
    select_method,
    wasserstein_normed,
    z_test_pvalue,
)

PER_COLUMN_SCHEMA: dict[str, pl.DataType] = {
    "column": pl.String(),
    "kind": pl.String(),  # "feature" | "prediction"
    "column_type": pl.String(),  # "numerical" | "categorical"
    "method": pl.String(),  # evidently stattest name: wasserstein, jensenshannon, ks, chisquare, z
    "score": pl.Float64(),
    "threshold": pl.Float64(),
    "drifted": pl.Boolean(),
    "n_reference": pl.Int64(),  # values left after dropping null/NaN/inf
    "n_current": pl.Int64(),
}


@dataclass(frozen=True)
class DriftResult:
    """Per-column drift verdicts and the dataset verdict.

    ``per_column`` has the columns of :data:`PER_COLUMN_SCHEMA`; ``n_reference``/``n_current`` are the
    row counts of the two windows.
    """

    per_column: pl.DataFrame
    share_drifted: float
    dataset_drift: bool
    n_reference: int
    n_current: int
    threshold_share: float = 0.5

    @property
    def n_columns(self) -> int:
        return self.per_column.height

    @property
    def n_drifted(self) -> int:
        return int(self.per_column.get_column("drifted").sum())

    @property
    def drifted_columns(self) -> list[str]:
        return self.per_column.filter(pl.col("drifted")).get_column("column").to_list()

    @property
    def prediction_drift(self) -> bool:
        """Whether any column flagged ``kind="prediction"`` drifted."""
        flagged = self.per_column.filter((pl.col("kind") == "prediction") & pl.col("drifted"))
        return flagged.height > 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able summary (for asset metadata, alerts and logs)."""
        return {
            "share_drifted": self.share_drifted,
            "dataset_drift": self.dataset_drift,
            "threshold_share": self.threshold_share,
            "n_columns": self.n_columns,
            "n_drifted": self.n_drifted,
            "drifted_columns": self.drifted_columns,
            "prediction_drift": self.prediction_drift,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "per_column": self.per_column.to_dicts(),
        }


@dataclass(frozen=True)
class ReferenceProfile:
    """A reference window prepared once (columns cleaned and sorted or counted) for repeated comparisons."""

    columns: dict[str, PreparedColumn] = field(repr=False)
    n_rows: int = 0

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)


def _n_jobs(n_jobs: int | None, n_tasks: int) -> int:
    if n_jobs is not None and n_jobs < 1:
        raise DriftInputError("n_jobs", f"must be at least 1, got {n_jobs}")
    wanted = n_jobs if n_jobs is not None else (os.cpu_count() or 1)
    return max(1, min(wanted, n_tasks))


def _parallel_map(func: Any, items: Sequence[Any], n_jobs: int | None) -> list[Any]:
    workers = _n_jobs(n_jobs, len(items))
    if workers == 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drift") as pool:
        return list(pool.map(func, items))


def prepare_reference(
    reference: Frame, columns: Sequence[str] | None = None, n_jobs: int | None = None
) -> ReferenceProfile:
    """Clean and sort (numeric) or count (other) each reference column once.

    ``columns=None`` prepares every column; pass the columns you will test to save time and memory.
    """
    source = ColumnSource(reference, "reference")
    names = list(columns) if columns is not None else source.columns
    require_columns(reference, names, "reference")
    prepared = _parallel_map(lambda c: prepare_column(source, c), names, n_jobs)
    return ReferenceProfile(columns=dict(zip(names, prepared, strict=True)), n_rows=len(source))


def column_drift(
    ref: PreparedColumn, cur: PreparedColumn, column_type: ColumnType
) -> tuple[StatMethod, float]:
    """Evidently's default statistic for one column and its score."""
    numerical = column_type == ColumnType.NUMERICAL
    if numerical and not (ref.is_numeric and cur.is_numeric):
        raise DriftInputError(
            ref.name, "is typed numerical but holds non-numeric values", "add it to categorical_columns"
        )
    n_values = union_unique_count(ref, cur, cap=LOW_CARDINALITY_VALUES)
    method = select_method(ref.n, n_values, numerical)
    if method is WASSERSTEIN:
        assert ref.sorted_values is not None and cur.sorted_values is not None and ref.std is not None
        return method, wasserstein_normed(ref.sorted_values, cur.sorted_values, ref.std)
    if method is KS:
        return method, ks_pvalue(ref.sorted_values, cur.sorted_values)  # type: ignore[arg-type]
    keys, ref_counts, cur_counts = aligned_counts(ref, cur)
    if method is JENSENSHANNON:
        return method, jensenshannon_counts(ref_counts, cur_counts)
    if method is CHISQUARE:
        return method, chisquare_pvalue(ref_counts, cur_counts)
    assert method is Z
    return method, z_test_pvalue(keys, ref_counts, cur_counts)


def fast_drift(
    reference: Frame | ReferenceProfile,
    current: Frame,
    columns: Sequence[str] | None = None,
    categorical_columns: Sequence[str] | None = None,
    threshold_share: float = 0.5,
    prediction_columns: Sequence[str] = (),
    n_jobs: int | None = None,
) -> DriftResult:
    """Evidently's default ``DataDriftPreset`` verdicts, computed exactly and fast.

    * ``reference``: the reference window (pandas or polars), or a :class:`ReferenceProfile` of it.
    * ``current``: the window to check; column types are inferred from it (like Evidently) unless
      ``categorical_columns`` is given (then it is the complete categorical list, see
      :func:`~mlops_assets.monitoring.columns.resolve_column_types`).
    * ``threshold_share``: the dataset drifts when the share of drifted columns is ``>=`` this
      (``DataDriftPreset(drift_share=...)``).
    * ``prediction_columns``: columns to flag ``kind="prediction"`` (model outputs or probabilities).
    * ``n_jobs``: threads (default: one per CPU).
    """
    if not 0.0 < threshold_share <= 1.0:
        raise DriftInputError("threshold_share", f"must be in (0, 1], got {threshold_share}")
    source = ColumnSource(current, "current")
    types = resolve_column_types(source, columns, categorical_columns)
    unknown_predictions = [c for c in prediction_columns if c not in types]
    if unknown_predictions:
        raise DriftInputError(
            "prediction_columns", f"{unknown_predictions} are not among the tested columns {list(types)}"
        )
    names = list(types)
    if isinstance(reference, ReferenceProfile):
        missing = [c for c in names if c not in reference.columns]
        if missing:
            raise DriftInputError(
                missing[0], "is not in the reference profile", "prepare_reference(..., columns=...) with it"
            )
        profile = reference
    else:
        profile = prepare_reference(reference, names, n_jobs)

    def one(column: str) -> dict[str, Any]:
        ref = profile.columns[column]
        cur = prepare_column(source, column)
        method, score = column_drift(ref, cur, types[column])
        return {
            "column": column,
            "kind": "prediction" if column in prediction_columns else "feature",
            "column_type": types[column].value,
            "method": method.name,
            "score": score,
            "threshold": method.default_threshold,
            "drifted": method.is_drift(score),
            "n_reference": ref.n,
            "n_current": cur.n,
        }

    rows = _parallel_map(one, names, n_jobs)
    per_column = pl.DataFrame(rows, schema=PER_COLUMN_SCHEMA, orient="row")
    n_drifted = int(per_column.get_column("drifted").sum())
    share = n_drifted / per_column.height
    return DriftResult(
        per_column=per_column,
        share_drifted=share,
        dataset_drift=bool(share >= threshold_share),
        n_reference=profile.n_rows,
        n_current=len(source),
        threshold_share=threshold_share,
    )


Window = tuple[date | datetime, date | datetime]


def _window(value: Window, name: str) -> tuple[date | datetime, date | datetime]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise DriftInputError(name, f"must be a (start, end) pair of dates, got {value!r}")
    start, end = value
    if not isinstance(start, date) or not isinstance(end, date):
        raise DriftInputError(name, f"must hold date or datetime values, got {value!r}")
    if start > end:
        raise DriftInputError(name, f"starts after it ends: {start} > {end}")
    return start, end


def summary_row(
    result: DriftResult,
    reference_window: Window,
    current_window: Window,
    model_version: str | None = None,
) -> dict[str, Any]:
    """One row for the warehouse's drift summary table (dates stay dates, lists stay lists)."""
    ref_start, ref_end = _window(reference_window, "reference_window")
    cur_start, cur_end = _window(current_window, "current_window")
    methods: Mapping[str, int] = dict(result.per_column.get_column("method").value_counts().iter_rows())
    return {
        "reference_start": ref_start,
        "reference_end": ref_end,
        "current_start": cur_start,
        "current_end": cur_end,
        "model_version": model_version,
        "n_reference": result.n_reference,
        "n_current": result.n_current,
        "n_columns": result.n_columns,
        "n_drifted": result.n_drifted,
        "share_drifted": result.share_drifted,
        "threshold_share": result.threshold_share,
        "dataset_drift": result.dataset_drift,
        "prediction_drift": result.prediction_drift,
        "drifted_columns": result.drifted_columns,
        "methods": ",".join(f"{k}:{methods[k]}" for k in sorted(methods)),
    }

"""One column of one window, cleaned like Evidently and sorted (numeric) or counted (other values).

Before a test Evidently replaces +-inf by NaN and drops NaN/null in each window's column; the helpers
here do the same once per column and keep what the statistics need: sorted values (numeric dtypes,
whatever the column's drift type) or a ``key``/``n`` value-count table (strings, booleans).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from mlops_assets.monitoring.columns import ColumnSource, DriftInputError


@dataclass(frozen=True)
class PreparedColumn:
    """One side (reference or current) of one column, cleaned like Evidently does.

    Numeric columns keep ``sorted_values`` (finite values, ascending); other columns keep ``counts``
    (a ``key``/``n`` table of non-null values). ``n`` is the number of values left after cleaning.
    """

    name: str
    n: int
    sorted_values: np.ndarray | None = None
    counts: pl.DataFrame | None = None
    std: float | None = None
    n_unique: int = 0

    @property
    def is_numeric(self) -> bool:
        return self.sorted_values is not None

    def value_counts(self) -> pl.DataFrame:
        """The ``key``/``n`` table of this column's values (computed from the sorted values if numeric)."""
        if self.counts is not None:
            return self.counts
        assert self.sorted_values is not None
        keys, counts = sorted_unique_counts(self.sorted_values)
        return pl.DataFrame({"key": keys, "n": counts})

    def unique_values(self) -> np.ndarray:
        assert self.sorted_values is not None
        return sorted_unique_counts(self.sorted_values)[0]


def sorted_unique_counts(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts of an ascending array, in O(n)."""
    if sorted_values.size == 0:
        return sorted_values, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    counts = np.diff(np.r_[starts, sorted_values.size]).astype(np.int64)
    return sorted_values[starts], counts


def prepare_column(source: ColumnSource, column: str) -> PreparedColumn:
    """Clean one column like Evidently (inf -> NaN, drop NaN/null) and sort or count it."""
    which = source.which
    values = source.values(column)
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "f":
            finite = np.isfinite(values)
            if not finite.all():
                values = values[finite]
        if values.dtype.kind not in "iuf":
            raise DriftInputError(column, f"unsupported numeric dtype {values.dtype} in the {which} data")
        ordered = np.sort(values)
        if ordered.size == 0:
            raise _empty(column, which)
        n_unique = int(np.count_nonzero(ordered[1:] != ordered[:-1]) + 1)
        return PreparedColumn(
            name=column,
            n=int(ordered.size),
            sorted_values=ordered,
            std=float(np.std(ordered)),
            n_unique=n_unique,
        )
    series = values.drop_nulls()
    if series.len() == 0:
        raise _empty(column, which)
    if series.dtype not in (pl.String, pl.Boolean):
        raise DriftInputError(
            column,
            f"unsupported dtype {series.dtype} in the {which} data",
            "use numbers, strings or booleans",
        )
    counts = series.rename("key").value_counts(name="n").with_columns(pl.col("n").cast(pl.Int64))
    return PreparedColumn(name=column, n=int(series.len()), counts=counts, n_unique=counts.height)


def _empty(column: str, which: str) -> DriftInputError:
    return DriftInputError(
        column,
        f"has no usable value in the {which} data (all null, NaN or infinite)",
        "drop the column or fix the upstream data",
    )


def aligned_counts(ref: PreparedColumn, cur: PreparedColumn) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """The union of both columns' values, ascending, with each side's count per value (0 if absent)."""
    left, right = ref.value_counts(), cur.value_counts()
    if left.schema["key"] != right.schema["key"]:
        if left.schema["key"].is_numeric() and right.schema["key"].is_numeric():
            left = left.with_columns(pl.col("key").cast(pl.Float64))
            right = right.with_columns(pl.col("key").cast(pl.Float64))
        else:
            raise DriftInputError(
                ref.name,
                f"reference values are {left.schema['key']} but current values are {right.schema['key']}",
                "give both windows the same column type",
            )
    joined = (
        left.join(right, on="key", how="full", coalesce=True, suffix="_cur")
        .with_columns(pl.col("n").fill_null(0), pl.col("n_cur").fill_null(0))
        .sort("key")
    )
    return (
        joined.get_column("key").to_list(),
        joined.get_column("n").to_numpy().astype(np.float64),
        joined.get_column("n_cur").to_numpy().astype(np.float64),
    )


def union_unique_count(ref: PreparedColumn, cur: PreparedColumn, cap: int) -> int:
    """Distinct values across both columns (``pd.concat([ref, cur]).nunique()``), exact up to ``cap``.

    Returns some number above ``cap`` as soon as either side alone has more than ``cap`` values, which is
    all the method selection needs to know.
    """
    if ref.n_unique > cap or cur.n_unique > cap:
        return max(ref.n_unique, cur.n_unique)
    if ref.is_numeric and cur.is_numeric:
        return int(np.union1d(ref.unique_values(), cur.unique_values()).size)
    return len(aligned_counts(ref, cur)[0])

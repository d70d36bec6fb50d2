"""Column typing for drift tests, replicating Evidently 0.7, and read access to pandas/polars columns.

Evidently's ``DataDriftPreset`` decides per column whether it is numerical or categorical from the
*current* dataset's pandas dtype (``evidently.core.datasets.infer_column_type``):

* ``float*``                           -> numerical
* ``int*`` (signed)                    -> categorical if it has at most 10 distinct values, else numerical
* ``object``/``string`` holding text   -> text if more than half of the non-null values are distinct,
                                          else categorical
* ``bool``, ``category``               -> categorical
* ``datetime*``                        -> datetime (not drift-tested)
* anything else (``uint*``, nullable extension ints, ...) -> unknown (not drift-tested)

A polars frame is judged by the pandas dtype that ``DataFrame.to_pandas()`` would give it (an integer
column with nulls becomes ``float64``, a boolean with nulls becomes ``object``, ...), so a polars frame
and its pandas conversion get the same types.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np
import pandas as pd
import polars as pl

from mlops_assets.errors import FieldError

INTEGER_CARDINALITY_LIMIT = 10  # evidently.core.datasets.INTEGER_CARDINALITY_LIMIT

Frame = pd.DataFrame | pl.DataFrame


class DriftInputError(FieldError):
    """An input to the drift monitor is missing or unusable; ``field`` names the argument or column."""


class ColumnType(str, Enum):
    """Evidently's column types, as far as drift detection cares."""

    NUMERICAL = "numerical"
    CATEGORICAL = "categorical"
    TEXT = "text"
    DATETIME = "datetime"
    UNKNOWN = "unknown"


def _text_or_categorical(n_unique: int, n_non_null: int) -> ColumnType:
    return ColumnType.TEXT if n_unique > n_non_null * 0.5 else ColumnType.CATEGORICAL


def infer_pandas_column_type(series: pd.Series) -> ColumnType:
    """Evidently's ``infer_column_type`` rules for one pandas column."""
    name = series.dtype.name
    if name.startswith("float"):
        return ColumnType.NUMERICAL
    if name.startswith("int"):
        small = series.nunique() <= INTEGER_CARDINALITY_LIMIT
        return ColumnType.CATEGORICAL if small else ColumnType.NUMERICAL
    if name in ("string", "str"):
        return _text_or_categorical(series.nunique(), series.count())
    if name == "object":
        values = series.dropna()
        if values.count() == 0:
            return ColumnType.UNKNOWN
        if isinstance(values.iloc[0], str) and isinstance(values.iloc[-1], str):
            return _text_or_categorical(series.nunique(), series.count())
        return ColumnType.UNKNOWN  # lists are Evidently's "list" type, not drift-tested either
    if name in ("bool", "category"):
        return ColumnType.CATEGORICAL
    if name.startswith("datetime"):
        return ColumnType.DATETIME
    return ColumnType.UNKNOWN


def infer_polars_column_type(series: pl.Series) -> ColumnType:
    """The type Evidently would infer for ``series.to_pandas()``, computed without converting."""
    dtype = series.dtype
    has_nulls = series.null_count() > 0
    if dtype.is_float():
        return ColumnType.NUMERICAL
    if dtype.is_integer():
        if has_nulls:  # to_pandas() turns it into float64 with NaN
            return ColumnType.NUMERICAL
        if dtype.is_unsigned_integer():  # uint* is not "int*" for Evidently
            return ColumnType.UNKNOWN
        small = series.n_unique() <= INTEGER_CARDINALITY_LIMIT
        return ColumnType.CATEGORICAL if small else ColumnType.NUMERICAL
    if dtype == pl.String:
        values = series.drop_nulls()
        if values.len() == 0:
            return ColumnType.UNKNOWN
        return _text_or_categorical(values.n_unique(), values.len())
    if isinstance(dtype, (pl.Categorical, pl.Enum)):
        return ColumnType.CATEGORICAL
    if dtype == pl.Boolean:
        return ColumnType.UNKNOWN if has_nulls else ColumnType.CATEGORICAL
    if dtype.is_temporal() and dtype != pl.Duration and dtype != pl.Time:
        return ColumnType.DATETIME
    return ColumnType.UNKNOWN


class ColumnSource:
    """Read access to the columns of a pandas or polars frame, converting each text column only once.

    Numeric columns come out as numpy arrays (no copy where possible); others as polars Series of
    strings or booleans. A pandas object column of strings is converted to polars once and both typed
    and counted from the conversion.
    """

    def __init__(self, frame: Frame, which: str) -> None:
        if not isinstance(frame, (pd.DataFrame, pl.DataFrame)):
            raise DriftInputError(which, f"must be a pandas or polars DataFrame, got {type(frame).__name__}")
        self.frame = frame
        self.which = which
        self._converted: dict[str, pl.Series | None] = {}

    @property
    def is_polars(self) -> bool:
        return isinstance(self.frame, pl.DataFrame)

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in self.frame.columns]

    def __len__(self) -> int:
        return len(self.frame)

    def _pandas_as_polars(self, column: str) -> pl.Series | None:
        if column not in self._converted:
            try:
                converted = pl.from_pandas(self.frame[column])
            except Exception:  # mixed object column: leave it to pandas rules, it is not testable anyway
                converted = None
            if converted is not None and isinstance(converted.dtype, (pl.Categorical, pl.Enum)):
                converted = converted.cast(pl.String)
            self._converted[column] = converted
        return self._converted[column]

    def column_type(self, column: str) -> ColumnType:
        """Evidently's type for ``column`` (see the module docstring)."""
        require_columns(self.frame, [column], self.which)
        if self.is_polars:
            return infer_polars_column_type(self.frame.get_column(column))
        series = self.frame[column]
        if series.dtype.name in ("object", "string", "str"):
            converted = self._pandas_as_polars(column)
            if converted is not None and converted.dtype in (pl.String, pl.Null):
                values = converted.drop_nulls()
                if values.len() == 0:
                    return ColumnType.UNKNOWN if series.dtype.name == "object" else ColumnType.CATEGORICAL
                return _text_or_categorical(values.n_unique(), values.len())
        return infer_pandas_column_type(series)

    def is_numeric(self, column: str) -> bool:
        if self.is_polars:
            return self.frame.schema[column].is_numeric()
        series = self.frame[column]
        return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)

    def values(self, column: str) -> np.ndarray | pl.Series:
        """Numeric columns as a numpy array (nulls as NaN); others as a polars Series."""
        if self.is_polars:
            series = self.frame.get_column(column)
            if series.dtype.is_numeric():
                if series.null_count() > 0:
                    return series.cast(pl.Float64).fill_null(np.nan).to_numpy()
                return series.to_numpy()
            if isinstance(series.dtype, (pl.Categorical, pl.Enum)):
                return series.cast(pl.String)
            return series
        if self.is_numeric(column):
            series = self.frame[column]
            if pd.api.types.is_extension_array_dtype(series.dtype):
                return series.to_numpy(dtype=np.float64, na_value=np.nan)
            return series.to_numpy()
        converted = self._pandas_as_polars(column)
        if converted is None:
            raise DriftInputError(
                column, f"mixes value types in the {self.which} data", "make it all strings or all numbers"
            )
        return converted


def infer_column_type(frame: Frame, column: str) -> ColumnType:
    """Evidently's type for ``column`` of a pandas or polars frame."""
    return ColumnSource(frame, "data").column_type(column)


def frame_columns(frame: Frame) -> list[str]:
    return [str(c) for c in frame.columns]


def require_columns(frame: Frame, columns: Sequence[str], which: str) -> None:
    """Raise a :class:`DriftInputError` naming the first column of ``columns`` missing from ``frame``."""
    present = set(frame_columns(frame))
    for column in columns:
        if column not in present:
            raise DriftInputError(
                column,
                f"column not found in the {which} data",
                f"available columns: {sorted(present)}",
            )


def resolve_column_types(
    current: Frame | ColumnSource,
    columns: Sequence[str] | None,
    categorical_columns: Sequence[str] | None,
) -> dict[str, ColumnType]:
    """Which columns are drift-tested and how, in Evidently's order.

    * ``categorical_columns=None``: types are inferred from ``current`` like Evidently does. With
      ``columns=None`` every numerical and categorical column is tested (numerical ones first, then
      categorical ones, each in frame order, as ``DataDriftPreset`` orders them); datetime and
      unknown columns are skipped. Listing a text, datetime or unknown column in ``columns`` is an error.
    * ``categorical_columns`` given: it is the complete list of categorical columns; every other tested
      column is numerical (the way ``DataDefinition(numerical_columns=..., categorical_columns=...)``
      behaves). With ``columns=None`` the tested columns are the inferred numerical/categorical ones
      plus ``categorical_columns``.
    Free-text columns are never tested: Evidently would train a text classifier for them, which is
    neither fast nor comparable; declare such a column categorical or leave it out.
    """
    source = current if isinstance(current, ColumnSource) else ColumnSource(current, "current")
    current = source.frame
    if columns is not None:
        if len(columns) == 0:
            raise DriftInputError("columns", "is empty", "pass None to test every usable column")
        if len(set(columns)) != len(columns):
            raise DriftInputError("columns", f"lists a column twice: {list(columns)}")
        require_columns(current, columns, "current")
    categorical = list(categorical_columns) if categorical_columns is not None else None
    if categorical is not None:
        require_columns(current, categorical, "current")
        if columns is not None:
            missing = [c for c in categorical if c not in columns]
            if missing:
                raise DriftInputError(
                    "categorical_columns", f"{missing} are not in columns", "add them to columns too"
                )

    if columns is None:
        inferred = {c: source.column_type(c) for c in source.columns}
        if categorical is not None:
            usable = [
                c
                for c, t in inferred.items()
                if c in categorical or t in (ColumnType.NUMERICAL, ColumnType.CATEGORICAL)
            ]
            return _explicit_types(source, usable, categorical)
        text = [c for c, t in inferred.items() if t == ColumnType.TEXT]
        if text:
            raise DriftInputError(
                text[0],
                "looks like free text (more than half of its values are distinct)",
                "list it in categorical_columns, or pass columns= without it",
            )
        numerical = {c: t for c, t in inferred.items() if t == ColumnType.NUMERICAL}
        cats = {c: t for c, t in inferred.items() if t == ColumnType.CATEGORICAL}
        if not numerical and not cats:
            raise DriftInputError("columns", "the current data has no numerical or categorical column")
        return {**numerical, **cats}

    if categorical is not None:
        return _explicit_types(source, list(columns), categorical)
    types: dict[str, ColumnType] = {}
    for column in columns:
        kind = source.column_type(column)
        if kind not in (ColumnType.NUMERICAL, ColumnType.CATEGORICAL):
            raise DriftInputError(
                column,
                f"Evidently would type this column as {kind.value}, which has no drift test here",
                "list it in categorical_columns to test its value distribution, or leave it out of columns",
            )
        types[column] = kind
    return types


def _explicit_types(
    source: ColumnSource, columns: list[str], categorical: list[str]
) -> dict[str, ColumnType]:
    types: dict[str, ColumnType] = {}
    for column in columns:
        if column in categorical:
            types[column] = ColumnType.CATEGORICAL
            continue
        if not source.is_numeric(column):
            raise DriftInputError(
                column,
                "is not numeric but is not listed in categorical_columns",
                "add it to categorical_columns",
            )
        types[column] = ColumnType.NUMERICAL
    return types

"""Point-in-time training datasets.

:func:`build_training_dataset` joins the feature views on (symbol, date), attaches the label from
the market data ``horizon`` trading days later (features at ``t``, label from ``t + h``), drops rows
whose label is unknown (the last ``h`` days of each symbol) or whose features are missing (the
warm-up), and splits **by date** into train / validation / test with ``gap_days`` trading days
dropped between consecutive splits, so no label of one split is computed from prices inside the
next. The fingerprint is a SHA-256 of the content (names, dtypes and values of every column), so
the same inputs always give the same fingerprint and any change of a value changes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal, NamedTuple

import numpy as np
import polars as pl

from mlops_assets.data.schema import ENTITY_KEY, TIME_KEY
from mlops_assets.features.compute import sort_market_data

from mlops_assets.errors import MessageInput

LABEL = "label"
FWD_RETURN = "fwd_return"
SPLIT = "split"
SPLITS: tuple[str, ...] = ("train", "validation", "test")
LabelKind = Literal["direction", "return"]


class DatasetError(MessageInput):
    """The inputs cannot make a dataset; the message names the argument or column."""
    subject = "dataset"


@dataclass(frozen=True)
class TrainingDataset:
    """``df``: symbol, date, features, categorical columns, label, fwd_return, split."""

    df: pl.DataFrame
    features: list[str]                       # numeric model inputs, in a stable order
    fingerprint: str
    split_dates: dict[str, tuple[date, date]]  # split -> (first date, last date)
    categorical: list[str] = field(default_factory=list)  # String columns kept for audits
    horizon: int = 1
    gap_days: int = 1
    label_kind: LabelKind = "direction"

    def split(self, name: str) -> pl.DataFrame:
        if name not in SPLITS:
            raise DatasetError(f"split: {name!r} is not one of {list(SPLITS)}")
        return self.df.filter(pl.col(SPLIT) == name)

    def metadata(self) -> dict[str, Any]:
        """Plain values for asset metadata and MLflow tags."""
        counts = dict(self.df.group_by(SPLIT).len().iter_rows())
        return {
            "rows": self.df.height,
            "fingerprint": self.fingerprint,
            "features": list(self.features),
            "categorical": list(self.categorical),
            "horizon": self.horizon,
            "gap_days": self.gap_days,
            "label": self.label_kind,
            "rows_per_split": {s: int(counts.get(s, 0)) for s in SPLITS},
            "split_dates": {s: [d.isoformat() for d in v] for s, v in self.split_dates.items()},
            "positive_rate": (
                float(self.df[LABEL].mean()) if self.label_kind == "direction" and self.df.height else None
            ),
        }


class SplitFrames(NamedTuple):
    train: pl.DataFrame
    validation: pl.DataFrame
    test: pl.DataFrame


def split_frames(df: pl.DataFrame) -> SplitFrames:
    """The train, validation and test rows of a dataset frame (the ``split`` column is kept)."""
    if SPLIT not in df.columns:
        raise DatasetError(f"df: no {SPLIT!r} column; build it with build_training_dataset")
    return SplitFrames(*(df.filter(pl.col(SPLIT) == s) for s in SPLITS))


def _same_keys(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """True when both frames have the same (symbol, date) rows in the same order."""
    return (
        a.height == b.height
        and a.get_column(ENTITY_KEY).equals(b.get_column(ENTITY_KEY))
        and a.get_column(TIME_KEY).equals(b.get_column(TIME_KEY))
    )


def join_views(view_frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Inner join of the view frames on (symbol, date); feature names must be unique.

    Views computed from the same market data share their rows and order: they are placed side by
    side without a join (several times faster on millions of rows).
    """
    if not view_frames:
        raise DatasetError("view_frames: pass at least one feature view frame")
    seen: set[str] = set()
    joined: pl.DataFrame | None = None
    for i, frame in enumerate(view_frames):
        missing = [c for c in (ENTITY_KEY, TIME_KEY) if c not in frame.columns]
        if missing:
            raise DatasetError(f"view_frames[{i}]: missing key column(s) {missing}")
        features = [c for c in frame.columns if c not in (ENTITY_KEY, TIME_KEY)]
        clash = sorted(seen.intersection(features))
        if clash:
            raise DatasetError(f"view_frames[{i}]: feature(s) {clash} already come from an earlier view")
        seen.update(features)
        if joined is None:
            joined = frame
        elif _same_keys(joined, frame):
            joined = joined.hstack(frame.select(features))
        else:
            joined = joined.join(frame, on=[ENTITY_KEY, TIME_KEY], how="inner")
    assert joined is not None
    return joined


def forward_labels(market_df: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """symbol, date, label (1 if close[t + h] > close[t] else 0, Int32), fwd_return (Float64);
    null on each symbol's last ``horizon`` rows. ``t + h`` counts the symbol's trading rows."""
    missing = [c for c in (ENTITY_KEY, TIME_KEY, "close") if c not in market_df.columns]
    if missing:
        raise DatasetError(f"market_df: missing column(s) {missing}")
    close = pl.col("close")
    future = close.shift(-horizon).over(ENTITY_KEY)  # the label is the only place the future is read
    return (
        sort_market_data(market_df.select(ENTITY_KEY, TIME_KEY, "close"))
        .lazy()
        .with_columns(future.alias("__future"))
        .select(
            ENTITY_KEY,
            TIME_KEY,
            (pl.col("__future") > close).cast(pl.Int32).alias(LABEL),
            (pl.col("__future") / close - 1.0).cast(pl.Float64).alias(FWD_RETURN),
        )
        .collect()
    )


def split_boundaries(
    dates: Sequence[date], val_frac: float, test_frac: float, gap_days: int
) -> dict[str, tuple[date, date]]:
    """First and last date of each split over the sorted distinct ``dates``, leaving ``gap_days``
    dates out between train and validation and between validation and test."""
    for name, frac in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not 0 < frac < 1:
            raise DatasetError(f"{name}: must be between 0 and 1, got {frac}")
    if val_frac + test_frac >= 1:
        raise DatasetError(f"val_frac + test_frac: must be below 1, got {val_frac + test_frac}")
    if gap_days < 0:
        raise DatasetError(f"gap_days: must be >= 0, got {gap_days}")
    n = len(dates)
    n_test = max(1, round(n * test_frac))
    n_val = max(1, round(n * val_frac))
    n_train = n - n_test - n_val - 2 * gap_days
    if n_train < 1:
        raise DatasetError(
            f"dates: only {n} usable dates for {n_val} validation + {n_test} test + 2 x {gap_days} gap "
            "dates and at least one training date; use more data or smaller fractions"
        )
    val_start = n_train + gap_days
    test_start = val_start + n_val + gap_days
    return {
        "train": (dates[0], dates[n_train - 1]),
        "validation": (dates[val_start], dates[val_start + n_val - 1]),
        "test": (dates[test_start], dates[n - 1]),
    }


def fingerprint_frame(df: pl.DataFrame) -> str:
    """SHA-256 over column names, dtypes, null masks and values (independent of chunking)."""
    digest = hashlib.sha256()
    digest.update(str(df.height).encode())
    for series in df.get_columns():
        digest.update(f"\x1e{series.name}\x1f{series.dtype}\x1f".encode())
        nulls = series.is_null()
        if nulls.any():
            digest.update(np.packbits(nulls.to_numpy()).tobytes())
        if series.dtype == pl.String or series.dtype == pl.Categorical or series.dtype == pl.Enum:
            text = series.cast(pl.String).fill_null("")
            digest.update(text.str.len_bytes().to_numpy().astype(np.uint32).tobytes())
            digest.update(text.str.join("").item().encode())
        else:
            values = series.to_physical().to_numpy()
            digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def build_training_dataset(
    view_frames: Sequence[pl.DataFrame],
    market_df: pl.DataFrame,
    horizon: int = 1,
    label: LabelKind = "direction",
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    gap_days: int | None = None,
) -> TrainingDataset:
    """Features at ``t`` with the label from ``t + horizon``, split by date (see module docstring).

    ``label="direction"``: ``label`` is Int32 1/0 (up/not up); ``label="return"``: ``label`` is the
    Float64 forward return. ``fwd_return`` is always there (for backtests). ``gap_days`` defaults to
    ``horizon``. Rows are sorted by (date, symbol).
    """
    if not isinstance(horizon, int) or horizon < 1:
        raise DatasetError(f"horizon: must be an integer >= 1, got {horizon!r}")
    if label not in ("direction", "return"):
        raise DatasetError(f"label: {label!r} is not 'direction' or 'return'")
    gap = horizon if gap_days is None else gap_days
    features_df = join_views(view_frames)
    feature_cols = [c for c in features_df.columns if c not in (ENTITY_KEY, TIME_KEY)]
    clash = sorted({LABEL, FWD_RETURN, SPLIT}.intersection(feature_cols))
    if clash:
        raise DatasetError(f"view_frames: feature name(s) {clash} are reserved for the dataset")
    schema = features_df.schema
    numeric = [c for c in feature_cols if schema[c].is_numeric()]
    categorical = [c for c in feature_cols if isinstance(schema[c], (pl.String, pl.Categorical, pl.Enum))]
    unsupported = sorted(set(feature_cols) - set(numeric) - set(categorical))
    if unsupported:
        raise DatasetError(f"view_frames: feature(s) {unsupported} are neither numeric nor String")

    complete = [pl.col(c).is_not_null() for c in feature_cols] + [pl.col(c).is_finite() for c in numeric]
    labels = forward_labels(market_df, horizon)
    if _same_keys(features_df, labels):
        labelled = features_df.hstack(labels.select(LABEL, FWD_RETURN)).lazy()
    else:
        labelled = features_df.lazy().join(labels.lazy(), on=[ENTITY_KEY, TIME_KEY], how="inner")
    usable = labelled.filter(pl.col(LABEL).is_not_null(), *complete)
    dates = usable.select(pl.col(TIME_KEY).unique().sort()).collect().get_column(TIME_KEY).to_list()
    if not dates:
        raise DatasetError(
            "dataset: no row has both a label and every feature; is the history longer than the warm-up?"
        )
    bounds = split_boundaries(dates, val_frac, test_frac, gap)
    day = pl.col(TIME_KEY)
    split = pl.lit(None, dtype=pl.String)
    for name in reversed(SPLITS):
        first, last = bounds[name]
        split = pl.when(day.is_between(first, last)).then(pl.lit(name)).otherwise(split)
    label_expr = pl.col(FWD_RETURN).alias(LABEL) if label == "return" else pl.col(LABEL)
    df = (  # one query: filter, split, cast and sort without materialising the intermediate frames
        usable.with_columns(split.alias(SPLIT), label_expr)
        .filter(pl.col(SPLIT).is_not_null())
        .select(
            ENTITY_KEY, TIME_KEY,
            *(pl.col(c).cast(pl.Float64) for c in numeric),
            *(pl.col(c).cast(pl.String) for c in categorical),
            LABEL, FWD_RETURN, SPLIT,
        )
        .sort(TIME_KEY, ENTITY_KEY)
        .collect()
    )
    return TrainingDataset(
        df=df,
        features=numeric,
        fingerprint=fingerprint_frame(df),
        split_dates=bounds,
        categorical=categorical,
        horizon=horizon,
        gap_days=gap,
        label_kind=label,
    )

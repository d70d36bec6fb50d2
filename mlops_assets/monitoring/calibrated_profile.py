"""The calibrated drift verdict's profile: the reference, binned per feature, and the null distribution of
each feature's statistic for windows of a given length (the method is described in
:mod:`~mlops_assets.monitoring.calibrated`).

* :class:`CalibrationParams`: how the null is drawn (draws, block length, bins, seed) and the verdict's alpha;
* :class:`FeatureNull`: one feature's bins, its statistic (binned normed Wasserstein or Jensen-Shannon)
  and its p-value against the null;
* :class:`CalibratedProfile` and :func:`build_profile`: the moving-block bootstrap over whole dates that
  draws the null of every feature, and :func:`fingerprint` / :func:`profile_key`, which identify a profile
  (the cache's key, :mod:`~mlops_assets.monitoring.calibrated_cache`);
* the input handling shared with the verdict (frames, date codes, category codes, worker threads).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from mlops_assets.errors import InvalidInput
from mlops_assets.monitoring.columns import ColumnType, Frame, resolve_column_types

PROFILE_FORMAT = 1  # bump when the statistic or the file layout changes (old cache files are ignored)
NUMERICAL_STATISTIC = "wasserstein_binned"
CATEGORICAL_STATISTIC = "jensenshannon"
OTHER_CATEGORY = "\x00other"


@dataclass(frozen=True)
class CalibrationParams:
    """How the null is drawn and the verdict taken (see :mod:`~mlops_assets.monitoring.calibrated`).

    * ``alpha``: false-discovery rate of the Benjamini-Hochberg step across features, in (0, 1);
    * ``n_draws``: null windows drawn per profile (the smallest p-value is ``1 / (n_draws + 1)``);
    * ``block_days``: dates per resampled block; None: the window length;
    * ``n_bins``: reference-quantile bins of the numerical statistic;
    * ``seed``: of the block draws (the profile is deterministic given the reference and the parameters).
    """

    alpha: float = 0.05
    n_draws: int = 1000
    block_days: int | None = None
    n_bins: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 1:
            raise InvalidInput("alpha", f"must be a number in (0, 1), got {self.alpha!r}",
                               "0.05 allows one falsely flagged window in twenty under no drift")
        if isinstance(self.n_draws, bool) or not isinstance(self.n_draws, int) or self.n_draws < 100:
            raise InvalidInput("n_draws", f"must be an integer >= 100, got {self.n_draws!r}",
                               "with fewer draws the smallest p-value cannot pass a Benjamini-Hochberg step")
        if self.block_days is not None and (isinstance(self.block_days, bool)
                                            or not isinstance(self.block_days, int) or self.block_days < 1):
            raise InvalidInput("block_days", f"must be a positive integer or None, got {self.block_days!r}",
                               "None uses the window length")
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or not 4 <= self.n_bins <= 1000:
            raise InvalidInput("n_bins", f"must be an integer in [4, 1000], got {self.n_bins!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InvalidInput("seed", f"must be an integer, got {self.seed!r}")

    def block_for(self, window_days: int) -> int:
        """The block length used for windows of ``window_days`` dates (never longer than the window)."""
        return max(1, min(self.block_days or window_days, window_days))

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "n_draws": self.n_draws, "block_days": self.block_days,
                "n_bins": self.n_bins, "seed": self.seed}


@dataclass(frozen=True)
class FeatureNull:
    """One feature's binning of the reference and the null distribution of its statistic."""

    column: str
    column_type: str  # "numerical" | "categorical"
    edges: np.ndarray  # numerical: interior bin edges (sorted); categorical: empty
    centres: np.ndarray  # numerical: the reference's mean inside each bin; categorical: empty
    categories: tuple[str, ...]  # categorical: the reference's categories (the "other" bin is last)
    ref_probs: np.ndarray  # the reference's share of values in each bin
    scale: float  # numerical: the reference's standard deviation (1.0 for a constant column)
    null: np.ndarray  # the statistic of each null draw, sorted
    n_reference: int

    @property
    def statistic(self) -> str:
        return NUMERICAL_STATISTIC if self.column_type == "numerical" else CATEGORICAL_STATISTIC

    def scores(self, counts: np.ndarray, against: np.ndarray | None = None) -> np.ndarray:
        """The statistic of each row of ``counts`` (bin counts, shape ``(n, n_bins)``) against the reference
        (or against the rows of ``against``, bin shares of the same shape)."""
        counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        totals = counts.sum(axis=1, keepdims=True)
        ref = self.ref_probs[None, :] if against is None else against
        with np.errstate(invalid="ignore", divide="ignore"):
            probs = counts / totals
        if self.column_type == "numerical":
            gaps = np.diff(self.centres)
            cdf_gap = np.abs(np.cumsum(probs, axis=1)[:, :-1] - np.cumsum(ref, axis=1)[:, :-1])
            return (cdf_gap * gaps).sum(axis=1) / self.scale
        mid = 0.5 * (probs + ref)
        with np.errstate(invalid="ignore", divide="ignore"):
            left = np.where(probs > 0, probs * np.log(probs / mid), 0.0).sum(axis=1)
            right = np.where(ref > 0, ref * np.log(ref / mid), 0.0).sum(axis=1)
        return np.sqrt(np.maximum(0.5 * (left + right), 0.0))

    def counts_of(self, values: np.ndarray | pl.Series) -> np.ndarray:
        """Bin counts of a window's values (nulls, NaN and inf dropped)."""
        if self.column_type == "numerical":
            arr = np.asarray(values, dtype=np.float64)
            arr = arr[np.isfinite(arr)]
            return np.bincount(np.searchsorted(self.edges, arr, side="right"), minlength=len(self.ref_probs))
        codes = _category_codes(values, self.categories)
        return np.bincount(codes[codes >= 0], minlength=len(self.ref_probs))

    def p_value(self, score: float) -> float:
        """``(1 + #{null >= score}) / (1 + n)``; a tie with a null draw counts against drift."""
        if not math.isfinite(score):
            return 1.0
        tolerance = 1e-12 * max(1.0, abs(score))
        n_at_least = len(self.null) - int(np.searchsorted(self.null, score - tolerance, side="left"))
        return (1 + n_at_least) / (1 + len(self.null))


@dataclass(frozen=True)
class CalibratedProfile:
    """The reference, binned, and the null of every feature for windows of ``window_days`` dates."""

    key: str
    fingerprint: str
    window_days: int
    block_days: int
    params: CalibrationParams
    features: dict[str, FeatureNull] = field(repr=False)
    n_reference_rows: int = 0
    n_reference_dates: int = 0
    build_seconds: float = 0.0
    from_cache: bool = False

    @property
    def rows_per_date(self) -> float:
        return self.n_reference_rows / max(1, self.n_reference_dates)


# --- input handling -------------------------------------------------------------------------------------


def map_threads(func: Any, items: list[Any]) -> list[Any]:
    """``[func(item) for item in items]`` in one thread per CPU (numpy releases the GIL in its loops)."""
    workers = min(len(items), os.cpu_count() or 1)
    if workers <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="calibrated") as pool:
        return list(pool.map(func, items))


def as_polars(frame: Frame, which: str) -> pl.DataFrame:
    if isinstance(frame, pl.DataFrame):
        return frame
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency of the drift package
        pd = None
    if pd is not None and isinstance(frame, pd.DataFrame):
        return pl.from_pandas(frame)
    raise InvalidInput(which, f"must be a pandas or polars DataFrame, got {type(frame).__name__}")


def _date_codes(df: pl.DataFrame, time_column: str | None, which: str) -> tuple[np.ndarray, int]:
    """Each row's date as 0..T-1 (in time order) and T; without a time column each row is its own date."""
    if time_column is None:
        return np.arange(df.height, dtype=np.int64), df.height
    if time_column not in df.columns:
        raise InvalidInput(f"{which}.{time_column}", f"the {which} data has no time column {time_column!r}",
                           "pass time_column=None when each row is one time step in order")
    col = df.get_column(time_column)
    if col.null_count():
        raise InvalidInput(f"{which}.{time_column}", f"has {col.null_count()} null values")
    codes = col.rank("dense").cast(pl.Int64).to_numpy() - 1
    return codes, int(codes.max()) + 1 if len(codes) else 0


def _category_codes(values: np.ndarray | pl.Series, categories: tuple[str, ...]) -> np.ndarray:
    """Index of each value in ``categories`` (the last one is "other" for unseen values); -1 for nulls."""
    series = values if isinstance(values, pl.Series) else pl.Series(values)
    series = series.cast(pl.String)
    known = {c: i for i, c in enumerate(categories[:-1])}
    mapping = pl.DataFrame({"value": list(known), "code": list(known.values())},
                           schema={"value": pl.String, "code": pl.Int64})
    joined = pl.DataFrame({"value": series}).join(mapping, on="value", how="left", maintain_order="left")
    codes = joined.get_column("code").fill_null(len(categories) - 1)
    codes = pl.select(pl.when(series.is_null()).then(-1).otherwise(codes)).to_series()
    return codes.to_numpy().astype(np.int64)


def column_values(df: pl.DataFrame, column: str, numerical: bool) -> np.ndarray | pl.Series:
    series = df.get_column(column)
    if numerical:
        if series.dtype == pl.Boolean:
            series = series.cast(pl.Float64)
        return series.cast(pl.Float64).fill_null(np.nan).to_numpy()
    return series


def fingerprint(reference: pl.DataFrame, columns: Sequence[str], time_column: str | None) -> str:
    """A digest of the reference's tested columns and time column (names, dtypes and every value)."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"polars={pl.__version__};rows={reference.height}".encode())
    for name in ([time_column] if time_column else []) + list(columns):
        series = reference.get_column(name)
        digest.update(f"|{name}:{series.dtype}|".encode())
        if series.dtype.is_numeric() or series.dtype.is_temporal() or series.dtype == pl.Boolean:
            physical = series.to_physical() if series.dtype.is_temporal() else series
            data = physical.cast(pl.Float64).fill_null(np.nan).to_numpy()
            digest.update(np.ascontiguousarray(data).tobytes())
        else:
            digest.update(series.cast(pl.String).fill_null("\x00null").hash(seed=0).to_numpy().tobytes())
    return digest.hexdigest()


# --- building the profile -------------------------------------------------------------------------------


def _block_starts(n_dates: int, window_days: int, block_days: int, n_draws: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Start dates and lengths of the blocks of every draw: shapes ``(n_draws, n_blocks)``, ``(n_blocks,)``."""
    n_blocks = math.ceil(window_days / block_days)
    lengths = np.full(n_blocks, block_days, dtype=np.int64)
    lengths[-1] = window_days - block_days * (n_blocks - 1)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_dates - block_days + 1, size=(n_draws, n_blocks))
    return starts, lengths


def _draw_counts(per_date: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Bin counts of every null draw from per-date bin counts ``(T, K)``: sums over the drawn blocks."""
    cumulative = np.vstack([np.zeros((1, per_date.shape[1]), dtype=np.int64), np.cumsum(per_date, axis=0)])
    out = np.zeros((starts.shape[0], per_date.shape[1]), dtype=np.int64)
    for j, length in enumerate(lengths):
        out += cumulative[starts[:, j] + length] - cumulative[starts[:, j]]
    return out


def _numerical_binning(finite: np.ndarray, n_bins: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
    """Edges, in-bin means, bin shares, std and each value's bin, of the reference's finite values."""
    if finite.size == 0:
        raise InvalidInput("reference", "a numerical column has no finite value in the reference")
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    bins = np.searchsorted(edges, finite, side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    sums = np.bincount(bins, weights=finite, minlength=len(edges) + 1)
    bounds = np.concatenate([[finite.min()], edges, [finite.max()]])
    with np.errstate(invalid="ignore", divide="ignore"):
        centres = np.where(counts > 0, sums / np.maximum(counts, 1), 0.5 * (bounds[:-1] + bounds[1:]))
    centres = np.maximum.accumulate(centres)
    std = float(finite.std())
    return edges, centres, counts / counts.sum(), std if std > 0 else 1.0, bins


def _feature_null(column: str, column_type: ColumnType, values: np.ndarray | pl.Series, dates: np.ndarray,
                  n_dates: int, starts: np.ndarray, lengths: np.ndarray, n_bins: int) -> FeatureNull:
    if column_type == ColumnType.NUMERICAL:
        arr = np.asarray(values, dtype=np.float64)
        keep = np.isfinite(arr)
        edges, centres, ref_probs, scale, bins = _numerical_binning(arr[keep], n_bins)
        categories: tuple[str, ...] = ()
        n_valid = int(keep.sum())
        row_dates = dates[keep]
    else:
        series = values.cast(pl.String) if isinstance(values, pl.Series) else pl.Series(values).cast(pl.String)
        seen = sorted(series.drop_nulls().unique().to_list())
        if not seen:
            raise InvalidInput(column, "has no non-null value in the reference")
        categories = (*seen, OTHER_CATEGORY)
        codes = _category_codes(series, categories)
        keep = codes >= 0
        bins, row_dates, n_valid = codes[keep], dates[keep], int(keep.sum())
        edges = centres = np.empty(0)
        scale = 1.0
        ref_probs = np.bincount(bins, minlength=len(categories)) / max(1, n_valid)
    k = len(ref_probs)
    per_date = np.bincount(row_dates * k + bins, minlength=n_dates * k).reshape(n_dates, k)
    null_feature = FeatureNull(column, column_type.value, edges, centres, categories, ref_probs, scale,
                               np.empty(0), n_valid)
    # each draw is compared with the reference *without* the drawn dates: the current window is new
    # data, not part of the reference, and comparing a draw with a reference that contains it would
    # make the null too narrow
    draws = _draw_counts(per_date, starts, lengths)
    rest = np.maximum(per_date.sum(axis=0)[None, :] - draws, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rest_probs = rest / rest.sum(axis=1, keepdims=True)
    scores = null_feature.scores(draws, rest_probs)
    null = np.sort(scores[np.isfinite(scores)])
    return FeatureNull(column, column_type.value, edges, centres, categories, ref_probs, scale, null, n_valid)


def profile_key(fingerprint_: str, window_days: int, params: CalibrationParams,
                types: dict[str, ColumnType]) -> str:
    spec = {"format": PROFILE_FORMAT, "fingerprint": fingerprint_, "window_days": window_days,
            "block_days": params.block_for(window_days), "params": params.to_dict(),
            "columns": {c: t.value for c, t in types.items()}}
    return hashlib.blake2b(json.dumps(spec, sort_keys=True).encode(), digest_size=16).hexdigest()


def build_profile(reference: Frame, window_days: int, columns: Sequence[str] | None = None, *,
                  categorical_columns: Sequence[str] | None = None, params: CalibrationParams | None = None,
                  time_column: str | None = "date", types: dict[str, ColumnType] | None = None,
                  fingerprint_: str | None = None) -> CalibratedProfile:
    """Bin the reference and draw the null of every tested column for windows of ``window_days`` dates."""
    params = params or CalibrationParams()
    started = time.perf_counter()
    ref = as_polars(reference, "reference")
    if isinstance(window_days, bool) or not isinstance(window_days, int) or window_days < 1:
        raise InvalidInput("window_days", f"must be a positive integer, got {window_days!r}")
    if types is None:
        feature_columns = [c for c in ref.columns if c != time_column] if columns is None else columns
        types = resolve_column_types(ref.select(feature_columns), feature_columns, categorical_columns)
    dates, n_dates = _date_codes(ref, time_column, "reference")
    if n_dates < window_days:
        raise InvalidInput("reference", f"covers {n_dates} dates, fewer than the window's {window_days}",
                           "use a longer reference or a shorter window (monitoring.drift_window_days)")
    block = params.block_for(window_days)
    starts, lengths = _block_starts(n_dates, window_days, block, params.n_draws, params.seed)
    fp = fingerprint_ or fingerprint(ref, list(types), time_column)
    def one(item: tuple[str, ColumnType]) -> FeatureNull:
        column, kind = item
        return _feature_null(column, kind, column_values(ref, column, kind == ColumnType.NUMERICAL), dates,
                             n_dates, starts, lengths, params.n_bins)

    features = dict(zip(types, map_threads(one, list(types.items())), strict=True))
    return CalibratedProfile(key=profile_key(fp, window_days, params, types), fingerprint=fp,
                             window_days=window_days, block_days=block, params=params, features=features,
                             n_reference_rows=ref.height, n_reference_dates=n_dates,
                             build_seconds=time.perf_counter() - started)



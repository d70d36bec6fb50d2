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

The null depends on the reference, the window length and the parameters, never on the current window,
so it is built once into a :class:`CalibratedProfile` and cached on disk (``<cache_dir>/<key>.npz``,
written to a temporary file and renamed) keyed by a fingerprint of the reference data, the window
length and the parameters. Checking a window then costs one pass over its values.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from mlops_assets.errors import InvalidInput
from mlops_assets.monitoring.columns import ColumnType, Frame, resolve_column_types

PROFILE_FORMAT = 1  # bump when the statistic or the file layout changes (old cache files are ignored)
NUMERICAL_STATISTIC = "wasserstein_binned"
CATEGORICAL_STATISTIC = "jensenshannon"
OTHER_CATEGORY = "\x00other"

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
class CalibrationParams:
    """How the null is drawn and the verdict taken (see the module docstring).

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


# --- input handling -------------------------------------------------------------------------------------

PARALLEL_ROWS = 100_000  # windows from this many rows check their features in threads


def _threads(func: Any, items: list[Any]) -> list[Any]:
    """``[func(item) for item in items]`` in one thread per CPU (numpy releases the GIL in its loops)."""
    workers = min(len(items), os.cpu_count() or 1)
    if workers <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="calibrated") as pool:
        return list(pool.map(func, items))



def _as_polars(frame: Frame, which: str) -> pl.DataFrame:
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


def _column_values(df: pl.DataFrame, column: str, numerical: bool) -> np.ndarray | pl.Series:
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
    ref = _as_polars(reference, "reference")
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
        return _feature_null(column, kind, _column_values(ref, column, kind == ColumnType.NUMERICAL), dates,
                             n_dates, starts, lengths, params.n_bins)

    features = dict(zip(types, _threads(one, list(types.items())), strict=True))
    return CalibratedProfile(key=profile_key(fp, window_days, params, types), fingerprint=fp,
                             window_days=window_days, block_days=block, params=params, features=features,
                             n_reference_rows=ref.height, n_reference_dates=n_dates,
                             build_seconds=time.perf_counter() - started)


# --- the cache ------------------------------------------------------------------------------------------


def save_profile(profile: CalibratedProfile, cache_dir: Path) -> Path:
    """Write ``<cache_dir>/<key>.npz`` atomically (a temporary file in the same folder, then a rename)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta = {"format": PROFILE_FORMAT, "key": profile.key, "fingerprint": profile.fingerprint,
            "window_days": profile.window_days, "block_days": profile.block_days,
            "params": profile.params.to_dict(), "n_reference_rows": profile.n_reference_rows,
            "n_reference_dates": profile.n_reference_dates, "build_seconds": profile.build_seconds,
            "features": [{"column": f.column, "column_type": f.column_type, "categories": list(f.categories),
                          "scale": f.scale, "n_reference": f.n_reference} for f in profile.features.values()]}
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    for i, f in enumerate(profile.features.values()):
        arrays[f"edges_{i}"], arrays[f"centres_{i}"] = f.edges, f.centres
        arrays[f"ref_probs_{i}"], arrays[f"null_{i}"] = f.ref_probs, f.null
    target = cache_dir / f"{profile.key}.npz"
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{profile.key}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_profile(path: Path) -> CalibratedProfile | None:
    """The profile stored at ``path``, or None when it is missing, unreadable or of another format."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != PROFILE_FORMAT:
                return None
            features = {}
            for i, f in enumerate(meta["features"]):
                features[f["column"]] = FeatureNull(
                    f["column"], f["column_type"], data[f"edges_{i}"], data[f"centres_{i}"],
                    tuple(f["categories"]), data[f"ref_probs_{i}"], float(f["scale"]), data[f"null_{i}"],
                    int(f["n_reference"]))
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    return CalibratedProfile(key=meta["key"], fingerprint=meta["fingerprint"], window_days=meta["window_days"],
                             block_days=meta["block_days"], params=CalibrationParams(**meta["params"]),
                             features=features, n_reference_rows=meta["n_reference_rows"],
                             n_reference_dates=meta["n_reference_dates"], build_seconds=meta["build_seconds"],
                             from_cache=True)


def cached_profile(reference: Frame, window_days: int, types: dict[str, ColumnType], *,
                   params: CalibrationParams, cache_dir: Path | None, time_column: str | None = "date"
                   ) -> CalibratedProfile:
    """The profile for this reference, window length and parameters: from ``cache_dir`` when it is there,
    else built (and stored there). ``cache_dir=None`` always builds."""
    ref = _as_polars(reference, "reference")
    fp = fingerprint(ref, list(types), time_column)
    key = profile_key(fp, window_days, params, types)
    if cache_dir is not None:
        found = load_profile(Path(cache_dir) / f"{key}.npz")
        if found is not None and found.key == key:
            return found
    profile = build_profile(ref, window_days, params=params, time_column=time_column, types=types,
                            fingerprint_=fp)
    if cache_dir is not None:
        save_profile(profile, Path(cache_dir))
    return profile


# --- the verdict ----------------------------------------------------------------------------------------


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
    cur = _as_polars(current, "current")
    names = list(columns) if columns is not None else list(profile.features)
    missing = [c for c in names if c not in cur.columns]
    if missing:
        raise InvalidInput(missing[0], "column not found in the current data")
    unprofiled = [c for c in names if c not in profile.features]
    if unprofiled:
        raise InvalidInput(unprofiled[0], "is not in the calibrated profile", "build the profile with it")
    def one(column: str) -> dict[str, Any]:
        feature = profile.features[column]
        counts = feature.counts_of(_column_values(cur, column, feature.column_type == "numerical"))
        n_current = int(counts.sum())
        score = float(feature.scores(counts)[0]) if n_current else float("nan")
        return {"column": column, "column_type": feature.column_type, "statistic": feature.statistic,
                "score": score, "p_value": feature.p_value(score),
                "null_p95": float(np.quantile(feature.null, 0.95)) if len(feature.null) else float("nan"),
                "n_reference": feature.n_reference, "n_current": n_current}

    rows = _threads(one, names) if cur.height >= PARALLEL_ROWS else [one(c) for c in names]
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

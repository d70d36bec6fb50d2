"""Feature statistics, correlations and small PNG plots for the Dagster UI.

:func:`feature_statistics` gives one row per feature: count, missing ratio, mean, median, std, min,
max, percentiles and a histogram (JSON), computed with numpy on the finite values (NaN and
infinities count as missing); on large frames the percentiles come from a seeded sample (see
there). A String feature (the regime label) gets its count, missing ratio, number of distinct
values and value counts as its histogram.

The plots are matplotlib (Agg) PNGs kept well under 100 KB so that they can be embedded as markdown
images in asset metadata.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import polars as pl

from mlops_assets.errors import MessageInput

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p01", 0.01), ("p05", 0.05), ("p25", 0.25), ("p75", 0.75), ("p95", 0.95), ("p99", 0.99),
)
NUMERIC_STATS: tuple[str, ...] = ("mean", "median", "std", "min", "max", *(name for name, _ in PERCENTILES))
STATISTICS_SCHEMA: dict[str, pl.DataType] = {
    "feature": pl.String(),
    "dtype": pl.String(),
    "count": pl.Int64(),
    "missing": pl.Int64(),
    "missing_ratio": pl.Float64(),
    **{name: pl.Float64() for name in NUMERIC_STATS},
    "n_unique": pl.Int64(),        # String features only
    "quantile_rows": pl.Int64(),   # values the median and percentiles were computed on
    "histogram": pl.String(),  # JSON: {"edges": [...], "counts": [...]} or {"values": [...], "counts": [...]}
}
PARALLEL_MIN_VALUES = 1_000_000  # below this many values threads cost more than they save


class StatisticsError(MessageInput):
    """A statistics request names a column that is not there; the message lists the columns."""
    subject = "statistics"


def _check(df: pl.DataFrame, features: Sequence[str]) -> None:
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise StatisticsError(f"features: {missing} not in the frame; it has {df.columns}")


def _valid(name: str) -> pl.Expr:  # used by the correlations
    """The feature with NaN and +-inf turned into null."""
    col = pl.col(name)
    return pl.when(col.is_finite()).then(col).otherwise(None)


def histogram(values: np.ndarray, bins: int = 20) -> dict[str, list[float] | list[int]]:
    """Equal-width histogram of finite values over [min, max] (``numpy.histogram``)."""
    if values.size == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(values, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _finite_values(series: pl.Series) -> np.ndarray:
    values = series.cast(pl.Float64).to_numpy()
    return values[np.isfinite(values)]


def _numeric_stats(
    values: np.ndarray, bins: int, max_exact_rows: int, rng: np.random.Generator
) -> dict[str, object]:
    """Moments, extremes and histogram over all values; quantiles over all values up to
    ``max_exact_rows``, above that over a seeded uniform sample of that many values."""
    n = values.size
    if n == 0:
        return {"count": 0, "histogram": json.dumps(histogram(values, bins)), "quantile_rows": 0}
    basis = values if n <= max_exact_rows else values[rng.choice(n, size=max_exact_rows, replace=False)]
    levels = [0.5, *(q for _, q in PERCENTILES)]
    quantiles = np.quantile(basis, levels)
    return {
        "count": n,
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if n > 1 else None,
        "min": float(values.min()),
        "max": float(values.max()),
        "median": float(quantiles[0]),
        **{name: float(v) for (name, _), v in zip(PERCENTILES, quantiles[1:], strict=True)},
        "histogram": json.dumps(histogram(values, bins)),
        "quantile_rows": int(basis.size),
    }


def feature_statistics(
    df: pl.DataFrame,
    features: Sequence[str],
    bins: int = 20,
    max_exact_rows: int = 1_000_000,
    seed: int = 0,
) -> pl.DataFrame:
    """One row per feature with the columns of :data:`STATISTICS_SCHEMA`.

    Count, missing, mean, std, min, max and the histogram use every row. The median and the
    percentiles are exact up to ``max_exact_rows`` finite values; above, they come from a seeded
    uniform sample of that many (``quantile_rows`` says how many were used).
    """
    _check(df, features)
    height = df.height
    numeric = [f for f in features if df.schema[f].is_numeric()]
    # one independent seeded stream per numeric feature, so the result does not depend on the order
    # the threads finish in; numpy releases the GIL in the heavy parts (to_numpy, isfinite, moments,
    # histogram, quantiles), so two features at a time take about half the wall time on two cores
    streams = dict(zip(numeric, np.random.SeedSequence(seed).spawn(len(numeric)), strict=True))

    def numeric_stats(f: str) -> dict[str, object]:
        values = _finite_values(df.get_column(f))
        return _numeric_stats(values, bins, max_exact_rows, np.random.default_rng(streams[f]))

    workers = min(len(numeric), os.cpu_count() or 1, 4)
    if workers > 1 and height * len(numeric) >= PARALLEL_MIN_VALUES:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="feature-stats") as pool:
            numeric_results = dict(zip(numeric, pool.map(numeric_stats, numeric), strict=True))
    else:
        numeric_results = {f: numeric_stats(f) for f in numeric}
    out = []
    for f in features:
        series = df.get_column(f)
        if f in numeric_results:
            stats = {**numeric_results[f], "n_unique": None}
        else:
            counts = series.drop_nulls().cast(pl.String).value_counts(sort=True, name="n")
            stats = {
                "count": height - series.null_count(),
                "n_unique": counts.height,
                "histogram": json.dumps({"values": counts[f].to_list(), "counts": counts["n"].to_list()}),
            }
        count = int(stats.get("count") or 0)
        out.append({
            "feature": f,
            "dtype": str(series.dtype),
            "count": count,
            "missing": height - count,
            "missing_ratio": (height - count) / height if height else None,
            **{name: stats.get(name) for name in NUMERIC_STATS},
            "n_unique": stats.get("n_unique"),
            "quantile_rows": stats.get("quantile_rows"),
            "histogram": stats.get("histogram"),
        })
    return pl.DataFrame(out, schema=STATISTICS_SCHEMA)


def feature_correlations(
    df: pl.DataFrame,
    features: Sequence[str],
    method: Literal["pearson", "spearman"] = "pearson",
    max_rows: int | None = 1_000_000,
    seed: int = 0,
) -> pl.DataFrame:
    """Correlation matrix of the numeric ``features`` over rows where all are finite.

    Wide: a ``feature`` column, then one Float64 column per feature. A frame of more than
    ``max_rows`` rows is first sampled (seeded, uniform, without replacement) to that many rows.
    """
    _check(df, features)
    numeric = [f for f in features if df.schema[f].is_numeric()]
    source = df.select(numeric)
    if max_rows is not None and source.height > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(source.height, size=max_rows, replace=False))
        source = source[rows]
    complete = source.select([_valid(f).cast(pl.Float64).alias(f) for f in numeric]).drop_nulls()
    if method == "spearman":
        complete = complete.select([pl.col(f).rank("average") for f in numeric])
    elif method != "pearson":
        raise StatisticsError(f"method: {method!r} is not 'pearson' or 'spearman'")
    if complete.height < 2:
        matrix = np.full((len(numeric), len(numeric)), np.nan)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            matrix = np.atleast_2d(np.corrcoef(complete.to_numpy(), rowvar=False))
    return pl.DataFrame({"feature": numeric, **{f: matrix[:, i] for i, f in enumerate(numeric)}})


def correlation_pairs(corr: pl.DataFrame, feature: str | None = None, min_abs: float = 0.0) -> list[dict]:
    """The distinct pairs of a :func:`feature_correlations` matrix, strongest ``|r|`` first (only those with
    ``feature`` when given; undefined correlations left out): ``[{"a", "b", "r"}]``.

    ``NotFound`` naming ``feature`` when the matrix has no such feature."""
    from mlops_assets.errors import NotFound

    names = corr["feature"].to_list()
    if feature is not None and feature not in names:
        raise NotFound("feature", f"{feature!r} is not in the correlation matrix", hint=f"it has {names}")
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if feature is not None and feature not in (a, b):
                continue
            r = corr[b][i]
            if r is not None and math.isfinite(r) and abs(r) >= min_abs:
                pairs.append({"a": a, "b": b, "r": float(r)})
    return sorted(pairs, key=lambda p: (-abs(p["r"]), p["a"], p["b"]))


# -- plots -----------------------------------------------------------------------------------------

def _png(fig, tight: bool = True) -> bytes:  # noqa: ANN001 - a matplotlib Figure
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _draw_histogram(ax, stats_row: dict, title: str) -> None:  # noqa: ANN001
    hist = json.loads(stats_row["histogram"] or "{}")
    if hist.get("edges"):
        edges = np.asarray(hist["edges"])
        ax.stairs(hist["counts"], edges, fill=True, color="#4C72B0")  # one artist, not one per bar
    elif hist.get("values"):
        ax.bar([str(v) for v in hist["values"]], hist["counts"], color="#55A868")
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)


def histogram_png(stats: pl.DataFrame, feature: str) -> bytes:
    """A small PNG histogram of one feature, from the ``histogram`` column of the statistics."""
    row = stats.filter(pl.col("feature") == feature)
    if row.is_empty():
        known = stats["feature"].to_list()
        raise StatisticsError(f"feature: {feature!r} not in the statistics; it has {known}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.2, 2.2))
    _draw_histogram(ax, row.row(0, named=True), feature)
    return _png(fig)


def histograms_png(stats: pl.DataFrame, columns: int = 4) -> bytes:
    """All features' histograms as small multiples in one PNG."""
    plt = _pyplot()
    n = max(stats.height, 1)
    nrows = -(-n // columns)
    fig, axes = plt.subplots(nrows, columns, figsize=(2.2 * columns, 1.6 * nrows), squeeze=False)
    for ax, row in zip(axes.flat, stats.iter_rows(named=True), strict=False):
        _draw_histogram(ax, row, row["feature"])
    for ax in list(axes.flat)[stats.height:]:
        ax.axis("off")
    # a fixed grid: tight_layout and a tight bounding box measure every tick label (~1 s for 12 panels)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.5 / (1.6 * nrows), top=1 - 0.35 / (1.6 * nrows),
                        wspace=0.45, hspace=0.75)
    return _png(fig, tight=False)


def correlation_png(corr: pl.DataFrame) -> bytes:
    """A small PNG heat map of a :func:`feature_correlations` matrix."""
    plt = _pyplot()
    names = corr["feature"].to_list()
    matrix = corr.select(names).to_numpy() if names else np.zeros((0, 0))
    size = 1.2 + 0.35 * len(names)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    return _png(fig)

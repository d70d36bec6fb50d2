"""Feature statistics and correlations against numpy/scipy, and the PNG plots."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from scipy import stats as scipy_stats

from mlops_assets.features import statistics as statistics_module
from mlops_assets.features.statistics import (
    STATISTICS_SCHEMA,
    StatisticsError,
    correlation_png,
    feature_correlations,
    feature_statistics,
    histogram_png,
    histograms_png,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    n = 2_000
    a = rng.normal(1.0, 2.0, n)
    b = 0.5 * a + rng.normal(0, 1, n)
    c = rng.exponential(1.0, n)
    a_with_gaps = a.copy()
    a_with_gaps[:50] = np.nan                   # NaN counts as missing
    df = pl.DataFrame({"a": a_with_gaps, "b": b, "c": c})
    df = df.with_columns(
        pl.when(pl.int_range(pl.len()) % 10 == 0).then(None).otherwise(pl.col("c")).alias("c"),  # nulls
        pl.Series("regime", rng.choice(["low", "mid", "high"], n, p=[0.5, 0.3, 0.2])),
    )
    return df.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise(pl.col("regime")).alias("regime"))


def test_numeric_statistics_match_numpy(frame: pl.DataFrame) -> None:
    stats = feature_statistics(frame, ["a", "b", "c", "regime"])
    assert dict(stats.schema) == STATISTICS_SCHEMA
    assert stats["feature"].to_list() == ["a", "b", "c", "regime"]
    for name in ("a", "b", "c"):
        raw = frame[name].cast(pl.Float64).to_numpy()
        values = raw[np.isfinite(raw)]
        row = stats.filter(pl.col("feature") == name).row(0, named=True)
        assert row["count"] == values.size
        assert row["missing"] == frame.height - values.size
        assert row["missing_ratio"] == pytest.approx((frame.height - values.size) / frame.height)
        assert row["mean"] == pytest.approx(values.mean())
        assert row["std"] == pytest.approx(values.std(ddof=1))
        assert row["median"] == pytest.approx(np.median(values))
        assert row["min"] == pytest.approx(values.min()) and row["max"] == pytest.approx(values.max())
        for key, q in (("p01", 0.01), ("p05", 0.05), ("p25", 0.25), ("p75", 0.75), ("p95", 0.95), ("p99", 0.99)):
            assert row[key] == pytest.approx(np.quantile(values, q)), key
        hist = json.loads(row["histogram"])
        counts, edges = np.histogram(values, bins=20)
        assert hist["counts"] == counts.tolist()
        assert np.allclose(hist["edges"], edges)
        assert sum(hist["counts"]) == row["count"]
    assert stats.filter(pl.col("feature") == "a")["missing"].item() == 50
    assert stats.filter(pl.col("feature") == "c")["missing"].item() == 200


def test_categorical_feature_gets_value_counts(frame: pl.DataFrame) -> None:
    row = feature_statistics(frame, ["regime"]).row(0, named=True)
    assert row["count"] == frame.height - 1 and row["missing"] == 1
    assert row["mean"] is None and row["n_unique"] == 3
    hist = json.loads(row["histogram"])
    expected = frame["regime"].drop_nulls().value_counts(sort=True)
    assert hist["values"] == expected["regime"].to_list()
    assert hist["counts"] == expected["count"].to_list()


def test_unknown_feature_is_named(frame: pl.DataFrame) -> None:
    with pytest.raises(StatisticsError, match="nope"):
        feature_statistics(frame, ["a", "nope"])


def test_correlations_match_numpy_and_scipy(frame: pl.DataFrame) -> None:
    corr = feature_correlations(frame, ["a", "b", "c", "regime"])
    assert corr["feature"].to_list() == ["a", "b", "c"]  # the String feature is left out
    complete = frame.select("a", "b", "c").drop_nulls().filter(pl.col("a").is_not_nan()).to_numpy()
    assert np.allclose(corr.select("a", "b", "c").to_numpy(), np.corrcoef(complete, rowvar=False))
    spearman = feature_correlations(frame, ["a", "b", "c"], method="spearman")
    assert np.allclose(spearman.select("a", "b", "c").to_numpy(), scipy_stats.spearmanr(complete).statistic)
    sampled = feature_correlations(frame, ["a", "b"], max_rows=500, seed=1)
    assert abs(sampled["b"][0] - corr["b"][0]) < 0.1


def test_pngs_are_small_images(frame: pl.DataFrame) -> None:
    stats = feature_statistics(frame, ["a", "b", "c", "regime"])
    images = [
        histogram_png(stats, "a"),
        histogram_png(stats, "regime"),
        histograms_png(stats),
        correlation_png(feature_correlations(frame, ["a", "b", "c"])),
    ]
    for image in images:
        assert image.startswith(PNG_MAGIC)
        assert 1_000 < len(image) < 100_000
    with pytest.raises(StatisticsError, match="zzz"):
        histogram_png(stats, "zzz")


def test_all_missing_and_constant_features() -> None:
    df = pl.DataFrame({"empty": [None, float("nan"), float("inf")], "flat": [2.0, 2.0, 2.0]})
    stats = feature_statistics(df, ["empty", "flat"])
    empty, flat = stats.row(0, named=True), stats.row(1, named=True)
    assert empty["count"] == 0 and empty["missing_ratio"] == 1.0 and empty["mean"] is None
    assert json.loads(empty["histogram"]) == {"edges": [], "counts": []}
    assert flat["std"] == 0.0 and flat["p01"] == flat["p99"] == 2.0
    assert sum(json.loads(flat["histogram"])["counts"]) == 3


def test_percentiles_from_a_sample_above_the_exact_limit() -> None:
    values = np.random.default_rng(5).normal(size=50_000)
    df = pl.DataFrame({"x": values})
    exact = feature_statistics(df, ["x"]).row(0, named=True)
    sampled = feature_statistics(df, ["x"], max_exact_rows=10_000, seed=1).row(0, named=True)
    assert exact["quantile_rows"] == 50_000 and sampled["quantile_rows"] == 10_000
    for key in ("count", "mean", "std", "min", "max", "histogram"):
        assert sampled[key] == exact[key], key  # these always use every row
    for key in ("median", "p05", "p95"):
        assert sampled[key] == pytest.approx(exact[key], abs=0.05)
    assert sampled["median"] != exact["median"]


def test_threaded_statistics_equal_the_serial_ones(frame: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    features = ["a", "b", "c", "regime"]
    monkeypatch.setattr(statistics_module, "PARALLEL_MIN_VALUES", 10**12)
    serial = feature_statistics(frame, features, max_exact_rows=500, seed=3)
    monkeypatch.setattr(statistics_module, "PARALLEL_MIN_VALUES", 0)
    threaded = feature_statistics(frame, features, max_exact_rows=500, seed=3)
    assert threaded.equals(serial)
    assert serial["quantile_rows"].to_list()[:3] == [500, 500, 500]

"""compute_view: the fast whole-column path equals the per-symbol path, symbols never leak into each
other, missing inputs are skipped with a note, and bad market data fails with a named column."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from mlops_assets.data.synthetic import generate_market_data
from mlops_assets.features.compute import (
    POSITION,
    FeatureComputeError,
    ViewResult,
    available_columns,
    compute_view,
    compute_views,
    position_in_entity,
    sort_market_data,
    view_frames,
)
from mlops_assets.features.views import (
    FEATURE_VIEWS,
    PRICE_RETURNS,
    REGIME_COLUMN,
    TECHNICAL_INDICATORS,
    VOLATILITY_REGIME,
    FeatureDef,
    FeatureView,
)


@pytest.fixture(scope="module")
def market() -> pl.DataFrame:
    """Four symbols with different lengths and price scales 1,000x apart (cross-symbol leaks show)."""
    df = generate_market_data(n_symbols=4, n_days=260, seed=11)
    symbols = sorted(df["symbol"].unique().to_list())
    scale = pl.when(pl.col("symbol") == symbols[1]).then(1000.0).otherwise(1.0)
    df = df.with_columns([(pl.col(c) * scale).alias(c) for c in ("open", "high", "low", "close")])
    df = df.with_columns(pl.int_range(pl.len()).over("symbol").alias("_i"))
    df = df.filter((pl.col("symbol") != symbols[2]) | (pl.col("_i") >= 90)).drop("_i")
    return df.filter((pl.col("symbol") != symbols[3]) | (pl.col("date") < date(2020, 6, 1)))


def _assert_frames_close(a: pl.DataFrame, b: pl.DataFrame) -> None:
    assert a.columns == b.columns and a.schema == b.schema
    for c in a.columns:
        if a[c].dtype == pl.Float64:
            x, y = a[c].to_numpy(), b[c].to_numpy()
            assert np.array_equal(np.isnan(x), np.isnan(y)), c
            np.testing.assert_allclose(x, y, rtol=1e-8, atol=1e-12, equal_nan=True, err_msg=c)
        else:
            assert a[c].to_list() == b[c].to_list(), c


@pytest.mark.parametrize("view", FEATURE_VIEWS, ids=lambda v: v.name)
def test_fast_path_equals_per_symbol_path(market: pl.DataFrame, view: FeatureView) -> None:
    """Every declared ``lookback`` is right: whole-column evaluation == ``.over("symbol")``."""
    fast = compute_view(view, market).df
    slow = compute_view(view, market, fast=False).df
    _assert_frames_close(fast, slow)


@pytest.mark.parametrize("view", FEATURE_VIEWS, ids=lambda v: v.name)
def test_symbols_are_independent(market: pl.DataFrame, view: FeatureView) -> None:
    """A symbol's features are the same computed alone or next to the others."""
    together = compute_view(view, market).df
    for symbol in market["symbol"].unique().to_list():
        alone = compute_view(view, market.filter(pl.col("symbol") == symbol)).df
        _assert_frames_close(together.filter(pl.col("symbol") == symbol), alone)


def test_a_wrong_lookback_is_caught_by_the_comparison(market: pl.DataFrame) -> None:
    """The equality check above can fail: a 20-day mean declared with lookback 5 leaks across symbols."""
    wrong = FeatureView(name="wrong", version="1.0.0", owner="team:x", description="d", features=(
        FeatureDef("ma", pl.col("close").rolling_mean(20, min_samples=20), "mean", lookback=5),))
    fast = compute_view(wrong, market).df["ma"]
    slow = compute_view(wrong, market, fast=False).df["ma"]
    assert fast.null_count() < slow.null_count()


def test_warm_up_rows_are_null_exactly_for_lookback(market: pl.DataFrame) -> None:
    df = compute_view(PRICE_RETURNS, market).df.with_columns(i=pl.int_range(pl.len()).over("symbol"))
    for f in PRICE_RETURNS.features:
        assert f.lookback is not None
        nulls = df.filter(pl.col(f.name).is_null())["i"]
        assert nulls.max() == f.lookback - 1 and nulls.len() == f.lookback * df["symbol"].n_unique()


def test_output_shape_order_and_sorting(market: pl.DataFrame) -> None:
    shuffled = market.sample(fraction=1.0, shuffle=True, seed=1)
    result = compute_view(TECHNICAL_INDICATORS, shuffled)
    assert isinstance(result, ViewResult)
    assert result.df.columns == ["symbol", "date", *TECHNICAL_INDICATORS.feature_names]
    assert result.df.height == market.height
    assert result.df.equals(result.df.sort("symbol", "date"))
    assert result.df.equals(compute_view(TECHNICAL_INDICATORS, market.sort("symbol", "date")).df)
    assert result.table == "fv_technical_indicators_v1"
    assert result.features == TECHNICAL_INDICATORS.feature_names
    meta = result.metadata()
    assert meta["rows"] == market.height and meta["symbols"] == 4 and meta["skipped"] == []


def test_missing_volume_is_skipped_with_a_note(market: pl.DataFrame) -> None:
    result = compute_view(TECHNICAL_INDICATORS, market.drop("volume"))
    assert "volume_z_20" not in result.df.columns
    assert [name for name, _ in result.skipped] == ["volume_z_20"]
    assert "volume" in result.skipped[0][1] and "raw_market_data" in result.skipped[0][1]
    assert result.df.columns == ["symbol", "date", "rsi_14", "ma_dist_20", "ma_dist_50"]
    # an all-null optional column (what the local loader leaves) counts as missing too
    nulls = market.with_columns(pl.lit(None, dtype=pl.Float64).alias("volume"))
    assert [n for n, _ in compute_view(TECHNICAL_INDICATORS, nulls).skipped] == ["volume_z_20"]


def test_close_only_source_skips_range_and_keeps_the_rest(market: pl.DataFrame) -> None:
    close_only = market.select("symbol", "date", "close")
    results = compute_views(FEATURE_VIEWS, close_only)
    assert results["price_returns"].skipped == []
    vol = results["volatility_regime"]
    assert [n for n, _ in vol.skipped] == ["range_20d"]
    assert vol.df.columns == ["symbol", "date", "vol_20d", "vol_ratio_20_60", REGIME_COLUMN]


def test_a_feature_reading_a_skipped_feature_is_skipped_too(market: pl.DataFrame) -> None:
    view = FeatureView(name="chain", version="1.0.0", owner="team:x", description="d", features=(
        FeatureDef("lv", pl.col("volume").log1p(), "log volume", lookback=0),
        FeatureDef("lv_ma", pl.col("lv").rolling_mean(5, min_samples=5), "mean of lv", lookback=4),
        FeatureDef("c2", pl.col("close") * 2, "double close", lookback=0),
    ))
    result = compute_view(view, market.drop("volume"))
    assert result.df.columns == ["symbol", "date", "c2"]
    assert [name for name, _ in result.skipped] == ["lv", "lv_ma"]
    assert "['volume']" in result.skipped[1][1]
    full = compute_view(view, market).df
    _assert_frames_close(full, compute_view(view, market, fast=False).df)


def test_compute_views_matches_compute_view(market: pl.DataFrame) -> None:
    results = compute_views(FEATURE_VIEWS, market)
    assert list(results) == [v.name for v in FEATURE_VIEWS]
    for view in FEATURE_VIEWS:
        assert results[view.name].df.equals(compute_view(view, market).df)
        assert POSITION not in results[view.name].df.columns
    assert [f.height for f in view_frames(results)] == [market.height] * 3


def test_bad_market_data_names_the_problem(market: pl.DataFrame) -> None:
    with pytest.raises(FeatureComputeError, match=r"missing key column\(s\) \['date'\]"):
        compute_view(PRICE_RETURNS, market.drop("date"))
    with pytest.raises(FeatureComputeError, match="repeated"):
        compute_view(PRICE_RETURNS, pl.concat([market, market.head(3)]))
    clash = FeatureView(name="clash", version="1.0.0", owner="team:x", description="d",
                        features=(FeatureDef("volume", pl.col("close") * 2, "shadowing a source column"),))
    with pytest.raises(FeatureComputeError, match="volume"):
        compute_view(clash, market)


def test_edge_cases_empty_and_single_row() -> None:
    empty = generate_market_data(n_symbols=1, n_days=5, seed=0).head(0)
    assert position_in_entity(empty).len() == 0
    result = compute_view(VOLATILITY_REGIME, empty)
    assert result.df.height == 0 and result.df.columns[:2] == ["symbol", "date"]
    one = generate_market_data(n_symbols=2, n_days=5, seed=0).head(1)
    assert compute_view(PRICE_RETURNS, one).df["ret_1d"].to_list() == [None]


def test_helpers() -> None:
    df = pl.DataFrame({"symbol": ["a", "a", "b", "c", "c", "c"], "date": [date(2020, 1, d) for d in (1, 2, 1, 1, 2, 3)],
                       "close": [1.0, 2, 3, 4, 5, 6], "volume": [None] * 6}, schema_overrides={"volume": pl.Float64})
    assert position_in_entity(df).to_list() == [0, 1, 0, 0, 1, 2]
    assert available_columns(df) == {"symbol", "date", "close"}
    assert sort_market_data(df) is df  # already sorted: no copy
    assert sort_market_data(df.reverse()).equals(df)

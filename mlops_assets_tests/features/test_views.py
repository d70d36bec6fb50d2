"""Feature views: every shipped feature against a plain pandas/numpy reference, and the rules of
declaring a view (names, versions, inputs, dependencies, schema, hashes)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import polars as pl
import pytest

from mlops_assets.data.synthetic import generate_market_data
from mlops_assets.features.compute import compute_view, compute_views
from mlops_assets.features.views import (
    FEATURE_VIEWS,
    KEY_SCHEMA,
    PRICE_RETURNS,
    REGIME_COLUMN,
    REGIME_LABELS,
    TECHNICAL_INDICATORS,
    VOLATILITY_REGIME,
    FeatureDef,
    FeatureView,
    FeatureViewError,
    get_view,
    parse_version,
    schema_hash,
    table_name,
)

SQRT_252 = math.sqrt(252)
TERCILE_Z = 0.4307272992954576


@pytest.fixture(scope="module")
def market() -> pl.DataFrame:
    """Three symbols of different lengths (320, 250 and 180 days), rows shuffled."""
    df = generate_market_data(n_symbols=3, n_days=320, seed=7)
    symbols = sorted(df["symbol"].unique().to_list())
    df = df.with_columns(pl.int_range(pl.len()).over("symbol").alias("_i"))
    df = df.filter(
        (pl.col("symbol") == symbols[0])
        | ((pl.col("symbol") == symbols[1]) & (pl.col("_i") >= 70))
        | ((pl.col("symbol") == symbols[2]) & (pl.col("_i") < 180))
    ).drop("_i")
    return df.sample(fraction=1.0, shuffle=True, seed=3)


@pytest.fixture(scope="module")
def computed(market: pl.DataFrame) -> pl.DataFrame:
    results = compute_views(FEATURE_VIEWS, market)
    out = results[FEATURE_VIEWS[0].name].df
    for view in FEATURE_VIEWS[1:]:
        out = out.join(results[view.name].df, on=["symbol", "date"], how="left")
    return out


def _reference(market: pl.DataFrame) -> pd.DataFrame:
    """The same features, written the plain pandas way: groupby + shift/rolling/ewm."""
    pdf = market.to_pandas().sort_values(["symbol", "date"]).reset_index(drop=True)
    parts = []
    for _, g in pdf.groupby("symbol", sort=True):
        g = g.copy()
        close = g["close"]
        r1 = close.pct_change()
        g["ret_1d"] = r1
        g["ret_5d"] = close / close.shift(5) - 1
        g["ret_20d"] = close / close.shift(20) - 1
        g["momentum_60d"] = close.shift(5) / close.shift(60) - 1
        delta = close.diff()
        gain = delta.clip(lower=0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
        loss = (-delta).clip(lower=0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
        g["rsi_14"] = 100 * gain / (gain + loss)
        g["ma_dist_20"] = close / close.rolling(20).mean() - 1
        g["ma_dist_50"] = close / close.rolling(50).mean() - 1
        lv = np.log1p(g["volume"])
        g["volume_z_20"] = (lv - lv.rolling(20).mean()) / lv.rolling(20).std()
        vol20 = r1.rolling(20).std() * SQRT_252
        g["vol_20d"] = vol20
        g["vol_ratio_20_60"] = vol20 / (r1.rolling(60).std() * SQRT_252)
        g["range_20d"] = ((g["high"] - g["low"]) / close).rolling(20).mean()
        log_vol = np.log(vol20)
        z = (log_vol - log_vol.rolling(120).mean()) / log_vol.rolling(120).std()
        label = np.where(z < -TERCILE_Z, "low", np.where(z >= TERCILE_Z, "high", "mid")).astype(object)
        label[z.isna().to_numpy()] = None
        g[REGIME_COLUMN] = label
        parts.append(g)
    return pd.concat(parts).reset_index(drop=True)


NUMERIC = [f.name for v in FEATURE_VIEWS for f in v.features if f.dtype == pl.Float64]


def test_shipped_views_cover_the_brief() -> None:
    names = {f for v in FEATURE_VIEWS for f in v.feature_names}
    assert {"ret_1d", "ret_5d", "ret_20d", "vol_20d", "momentum_60d", "rsi_14", "volume_z_20",
            "ma_dist_20", REGIME_COLUMN} <= names
    assert [v.name for v in FEATURE_VIEWS] == ["price_returns", "technical_indicators", "volatility_regime"]
    assert get_view("price_returns") is PRICE_RETURNS


@pytest.mark.parametrize("feature", NUMERIC)
def test_numeric_feature_matches_pandas_reference(market: pl.DataFrame, computed: pl.DataFrame,
                                                  feature: str) -> None:
    ref = _reference(market)
    got = computed.sort("symbol", "date")
    assert got["symbol"].to_list() == ref["symbol"].tolist()
    expected = ref[feature].to_numpy(dtype=float)
    actual = got[feature].to_numpy()
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"{feature}: null pattern differs"
    assert np.isfinite(actual).sum() > 100, f"{feature}: too few values to compare"
    np.testing.assert_allclose(actual, expected, rtol=1e-8, atol=1e-10, equal_nan=True)


def test_regime_label_matches_reference_and_uses_all_labels(market: pl.DataFrame,
                                                            computed: pl.DataFrame) -> None:
    ref = _reference(market)
    got = computed.sort("symbol", "date")[REGIME_COLUMN].to_list()
    assert got == ref[REGIME_COLUMN].tolist()
    assert set(got) - {None} == set(REGIME_LABELS)
    # warm-up: null on each symbol's first 139 rows (20 for vol, then 120 vol values), never after
    warm = computed.sort("symbol", "date").with_columns(i=pl.int_range(pl.len()).over("symbol"))
    assert warm.filter(pl.col("i") < 139)[REGIME_COLUMN].null_count() == warm.filter(pl.col("i") < 139).height
    assert warm.filter(pl.col("i") >= 139)[REGIME_COLUMN].null_count() == 0


def test_rsi_is_bounded_and_50_on_a_flat_price() -> None:
    flat = pl.DataFrame({"symbol": ["X"] * 30, "date": pl.date_range(pl.date(2021, 1, 1), pl.date(2021, 1, 30),
                                                                     eager=True),
                         "close": [10.0] * 30})
    out = compute_view(TECHNICAL_INDICATORS, flat).df
    assert out["rsi_14"].drop_nulls().to_list() == [50.0] * 16
    df = generate_market_data(n_symbols=2, n_days=200, seed=1)
    rsi = compute_view(TECHNICAL_INDICATORS, df).df["rsi_14"].drop_nulls()
    assert 0.0 <= rsi.min() and rsi.max() <= 100.0


def test_schema_is_known_without_data_and_matches_computed(computed: pl.DataFrame, market: pl.DataFrame) -> None:
    for view in FEATURE_VIEWS:
        declared = view.schema()
        assert list(declared)[:2] == list(KEY_SCHEMA)
        got = compute_view(view, market).schema()
        assert got == declared, view.name
        assert view.schema_hash() == schema_hash(declared)
    assert VOLATILITY_REGIME.schema()[REGIME_COLUMN] == "String"


def test_table_name_per_major_version() -> None:
    assert table_name(PRICE_RETURNS) == "fv_price_returns_v1"
    v2 = FeatureView(name="price_returns", version="2.3.1", owner="team:x", description="d",
                     features=PRICE_RETURNS.features)
    assert table_name(v2) == "fv_price_returns_v2"


def test_parse_version() -> None:
    assert parse_version("1.2.3") == (1, 2, 3)
    for bad in ("1.2", "v1.2.3", "01.2.3", "1.2.3-rc1", ""):
        with pytest.raises(FeatureViewError, match="version"):
            parse_version(bad)


def _feature(name: str = "x", expr: pl.Expr | None = None, **kw: object) -> FeatureDef:
    return FeatureDef(name, expr if expr is not None else pl.col("close") * 2, "a feature", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad-Name"}, "name"),
        ({"version": "1.0"}, "version"),
        ({"owner": " "}, "owner"),
        ({"features": ()}, "features"),
        ({"features": (_feature("a"), _feature("a"))}, "duplicate"),
        ({"features": (_feature("date"),)}, "key columns"),
        ({"features": (_feature("a", pl.col("b") + 1), _feature("b"))}, "declared before"),
        ({"entity": "ticker"}, "entity"),
    ],
)
def test_view_validation_names_the_field(kwargs: dict, message: str) -> None:
    base: dict = {"name": "v", "version": "1.0.0", "owner": "team:x", "description": "d",
                  "features": (_feature(),)}
    with pytest.raises(FeatureViewError, match=message):
        FeatureView(**{**base, **kwargs})


def test_feature_validation() -> None:
    with pytest.raises(FeatureViewError, match="lower_snake_case"):
        _feature("Ret")
    with pytest.raises(FeatureViewError, match="description"):
        FeatureDef("x", pl.col("close"), " ")
    with pytest.raises(FeatureViewError, match=r"missing \['volume'\]"):
        _feature(expr=pl.col("close") * pl.col("volume"), inputs=("close",))
    with pytest.raises(FeatureViewError, match="lookback"):
        _feature(lookback=-1)
    assert _feature(expr=pl.col("high") - pl.col("low")).inputs == ("high", "low")


def test_dependencies_stages_and_source_inputs() -> None:
    view = VOLATILITY_REGIME
    assert view.dependencies(REGIME_COLUMN) == ("vol_20d",)
    assert view.source_inputs(REGIME_COLUMN) == ("close",)
    assert view.source_inputs("range_20d") == ("high", "low", "close")
    stages = [[f.name for f in s] for s in view.stages()]
    assert stages == [["vol_20d", "range_20d"], ["vol_ratio_20_60", REGIME_COLUMN]]
    # output keeps declaration order, not stage order
    assert view.feature_names == ["vol_20d", "vol_ratio_20_60", "range_20d", REGIME_COLUMN]


def test_definition_hash_tracks_logic_not_object_identity() -> None:
    a = _feature(expr=pl.col("close").rolling_mean(20))
    same = _feature(expr=pl.col("close").rolling_mean(20))
    other_window = _feature(expr=pl.col("close").rolling_mean(21))  # str(expr) would not see this
    assert a.definition_hash == same.definition_hash
    assert a.definition_hash != other_window.definition_hash
    assert a.definition_hash != _feature(expr=pl.col("close").rolling_mean(20), lookback=19).definition_hash
    views = {v.name: v.definition_hash() for v in FEATURE_VIEWS}
    assert len(set(views.values())) == 3
    assert set(PRICE_RETURNS.definition_hashes()) == set(PRICE_RETURNS.feature_names)

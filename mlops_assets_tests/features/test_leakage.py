"""Point-in-time check: the shipped views pass; features that read the future fail."""

from __future__ import annotations

import polars as pl
import pytest

from mlops_assets.data.synthetic import generate_market_data
from mlops_assets.features.leakage import check_point_in_time, check_views_point_in_time
from mlops_assets.features.views import FEATURE_VIEWS, FeatureDef, FeatureView

CLOSE = pl.col("close")


@pytest.fixture(scope="module")
def market() -> pl.DataFrame:
    return generate_market_data(n_symbols=8, n_days=320, seed=4)


def _view(*features: FeatureDef) -> FeatureView:
    return FeatureView(name="probe", version="1.0.0", owner="team:test", description="probe view",
                       features=features)


def test_shipped_views_are_point_in_time(market: pl.DataFrame) -> None:
    results = check_views_point_in_time(FEATURE_VIEWS, market, sample_dates=4, seed=1)
    assert set(results) == {v.name for v in FEATURE_VIEWS}
    for view in FEATURE_VIEWS:
        result = results[view.name]
        assert result.passed, (view.name, result.mismatches[:3])
        assert len(result.checked_dates) == 4
        assert result.checked_values == 4 * 8 * len(view.features)  # every date, symbol and feature
        assert result.checked_dates == sorted(result.checked_dates)


def test_a_shift_minus_one_feature_fails(market: pl.DataFrame) -> None:
    view = _view(
        FeatureDef("ret_1d", CLOSE / CLOSE.shift(1) - 1, "Past return: fine."),
        FeatureDef("next_ret", CLOSE.shift(-1) / CLOSE - 1, "Tomorrow's return: leaks."),
    )
    result = check_point_in_time(view, market, sample_dates=3, seed=0)
    assert not result.passed
    assert result.leaking_features == ["next_ret"]
    assert result.n_mismatches == 3 * 8  # every symbol on every sampled date
    first = result.mismatches[0]
    assert first.feature == "next_ret" and first.truncated_value is None and first.full_value is not None
    assert first.date in result.checked_dates
    summary = result.summary()
    assert summary["passed"] is False and summary["leaking_features"] == ["next_ret"]
    assert summary["examples"][0]["feature"] == "next_ret"


def test_a_centred_window_and_a_full_sample_normalisation_fail(market: pl.DataFrame) -> None:
    view = _view(
        FeatureDef("centred_ma", CLOSE.rolling_mean(5, center=True), "Centred moving average: leaks."),
        FeatureDef("zscore_all", (CLOSE - CLOSE.mean()) / CLOSE.std(), "Whole-history z-score: leaks."),
    )
    result = check_point_in_time(view, market, sample_dates=2, seed=3)
    assert result.leaking_features == ["centred_ma", "zscore_all"]


def test_symbol_sampling_and_determinism(market: pl.DataFrame) -> None:
    view = FEATURE_VIEWS[0]
    a = check_point_in_time(view, market, sample_dates=2, seed=7, max_symbols=3)
    b = check_point_in_time(view, market, sample_dates=2, seed=7, max_symbols=3)
    assert a == b
    assert a.checked_values == 2 * 3 * len(view.features)
    with pytest.raises(ValueError, match="sample_dates"):
        check_point_in_time(view, market, sample_dates=0)


def test_history_shorter_than_the_windows_fails_saying_nothing_was_checked() -> None:
    short = generate_market_data(n_symbols=3, n_days=40, seed=2)  # shorter than the 60-day windows
    view = _view(FeatureDef("ma_100", CLOSE.rolling_mean(100), "100-day moving average: never complete here."))
    result = check_point_in_time(view, short, sample_dates=4, seed=0)
    assert not result.passed
    assert result.checked_values == 0
    assert "nothing to check" in result.reason and "probe" in result.reason


def test_null_against_a_value_is_a_mismatch(market: pl.DataFrame) -> None:
    # a value known on full history and null on truncated history (or the reverse) is a look-ahead
    view = _view(FeatureDef("close_once_tomorrow_exists",
                            pl.when(CLOSE.shift(-1).is_null()).then(None).otherwise(CLOSE),
                            "The close, but null until the next row exists: leaks."))
    result = check_point_in_time(view, market, sample_dates=3, seed=5)
    assert not result.passed and result.n_mismatches == 3 * 8
    assert all(m.truncated_value is None and m.full_value is not None for m in result.mismatches)
    assert result.checked_values == 3 * 8

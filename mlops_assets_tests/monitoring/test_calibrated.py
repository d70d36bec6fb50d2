"""Calibrated drift: its false-alarm rate on a persistent GARCH(1,1) series, its power on injected shifts,
the profile cache, real index prices, bad inputs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlops_assets.errors import InvalidInput
from mlops_assets.monitoring.calibrated import calibrated_drift
from mlops_assets.monitoring.calibrated_profile import CalibrationParams, build_profile
from mlops_assets.monitoring.verdict import drift_verdict

WINDOW = 60
ALPHA = 0.05
# over ~100 windows the binomial standard deviation of a 5% rate is ~2 points; 8 points of tolerance
# leaves room for the windows of one panel not being independent
TOLERANCE = 0.08


def garch_features(n_days: int, seed: int, n_series: int = 3) -> pl.DataFrame:
    """A panel (series x day) of features of GARCH(1,1) returns with persistent volatility (alpha + beta =
    0.98): the return, its 5-day sum (autocorrelated) and its 20-day mean absolute value (volatility
    clustering), like the platform's return and volatility features."""
    from arch.univariate import GARCH, Normal, ZeroMean

    frames = []
    for j in range(n_series):
        model = ZeroMean(volatility=GARCH(), distribution=Normal(seed=np.random.default_rng(seed * 100 + j)))
        returns = model.simulate([0.02, 0.08, 0.90], n_days + 20, burn=500)["data"].to_numpy()
        frame = pl.DataFrame({"day": np.arange(n_days + 20), "ret": returns}).with_columns(
            pl.col("ret").rolling_sum(5).alias("ret_5d"),
            pl.col("ret").abs().rolling_mean(20).alias("vol_20d"),
            pl.lit(f"s{j}").alias("symbol"))
        frames.append(frame.slice(20))
    return pl.concat(frames).rename({"day": "date"}).select("symbol", "date", "ret", "ret_5d", "vol_20d")


@pytest.fixture(scope="module")
def garch() -> pl.DataFrame:
    return garch_features(6000, seed=11)


def _windows(df: pl.DataFrame, start: int, stop: int) -> list[pl.DataFrame]:
    return [df.filter(pl.col("date").is_between(s, s + WINDOW - 1)) for s in range(start, stop - WINDOW + 1, WINDOW)]


def test_false_alarm_rate_stays_within_alpha_on_a_persistent_garch() -> None:
    """30 independent GARCH panels (a rate over windows of one series mostly measures that series' own
    regimes: with alpha + beta = 0.98 a volatility regime lasts months). In each: windows from inside
    the 2,000-day reference and windows of the 1,000 days after it, all without drift."""
    inside, later, evidently = [], [], []
    for replication in range(30):
        series = garch_features(3000, seed=100 + replication)
        reference = series.filter(pl.col("date") < 2000)
        profile = build_profile(reference.drop("symbol"), WINDOW, params=CalibrationParams(alpha=ALPHA))
        inside += [calibrated_drift(profile, w).dataset_drift for w in _windows(series, 20, 2000)[::8]]
        windows = _windows(series, 2000, 3000)[::4]
        later += [calibrated_drift(profile, w).dataset_drift for w in windows]
        if replication < 3:
            evidently += [drift_verdict(reference, w, ["ret", "ret_5d", "vol_20d"], method="evidently",
                                        compare=False).dataset_drift for w in windows]
    assert len(inside) >= 100 and len(later) >= 100
    assert np.mean(inside) <= ALPHA + TOLERANCE
    assert np.mean(later) <= ALPHA + TOLERANCE
    # Evidently's fixed threshold flags most of the same windows: the finding the calibration fixes
    assert np.mean(evidently) >= 0.5


@pytest.mark.parametrize("shift", ["mean", "scale"])
def test_injected_shifts_are_detected(garch: pl.DataFrame, shift: str) -> None:
    reference = garch.filter(pl.col("date") < 3000)
    profile = build_profile(reference.drop("symbol"), WINDOW)
    stds = {c: reference[c].std() for c in ("ret", "ret_5d", "vol_20d")}
    detected = []
    for w in _windows(garch, 3000, 4800):
        if shift == "mean":  # every feature moves by one reference standard deviation
            moved = w.with_columns([pl.col(c) + s for c, s in stds.items()])
        else:  # volatility doubles: returns scale by 2, the volatility feature too
            moved = w.with_columns([pl.col(c) * 2 for c in stds])
        detected.append(calibrated_drift(profile, moved).dataset_drift)
    assert np.mean(detected) >= 0.9


def test_profile_is_cached_and_rebuilt_when_the_reference_changes(garch: pl.DataFrame, tmp_path: Path) -> None:
    reference = garch.filter(pl.col("date") < 1500).drop("symbol")
    current = garch.filter(pl.col("date").is_between(2000, 2000 + WINDOW - 1)).drop("symbol")
    first = drift_verdict(reference, current, cache_dir=tmp_path, compare=False)
    second = drift_verdict(reference, current, cache_dir=tmp_path, compare=False)
    assert first.calibrated is not None and second.calibrated is not None
    assert not first.calibrated.profile_from_cache and second.calibrated.profile_from_cache
    assert second.calibrated.per_column.equals(first.calibrated.per_column)
    assert len(list(tmp_path.glob("*.npz"))) == 1 and not list(tmp_path.glob("*.tmp"))
    changed = reference.with_columns(pl.when(pl.col("date") == 100).then(pl.col("ret") + 1e-9)
                                     .otherwise(pl.col("ret")).alias("ret"))
    third = drift_verdict(changed, current, cache_dir=tmp_path, compare=False)
    assert third.calibrated is not None and not third.calibrated.profile_from_cache
    assert len(list(tmp_path.glob("*.npz"))) == 2
    # another window length is another null
    longer = garch.filter(pl.col("date").is_between(2000, 2000 + 2 * WINDOW - 1)).drop("symbol")
    fourth = drift_verdict(reference, longer, cache_dir=tmp_path, compare=False)
    assert fourth.calibrated is not None and fourth.calibrated.window_days == 2 * WINDOW
    assert not fourth.calibrated.profile_from_cache


def test_real_index_windows_inside_the_reference_are_not_flagged(tmp_path: Path) -> None:
    from mlops_assets.data.loaders import LocalDataLoader
    from mlops_assets.data.real import write_yahoo_folder
    from mlops_assets.features.compute import compute_views, view_frames
    from mlops_assets.features.datasets import join_views
    from mlops_assets.features.views import FEATURE_VIEWS

    write_yahoo_folder(tmp_path / "prices", start=dt.date(2003, 1, 1), end=dt.date(2007, 6, 30))
    market = LocalDataLoader(tmp_path / "prices").load()
    features = join_views(view_frames(compute_views(FEATURE_VIEWS, market))).drop_nulls()
    columns = [c for c in features.columns if c not in ("symbol", "date")]
    reference = features.drop("symbol")
    dates = reference["date"].unique().sort()
    flagged, evidently_flagged, n = 0, 0, 0
    for start in range(0, len(dates) - WINDOW + 1, WINDOW):
        window = reference.filter(pl.col("date").is_between(dates[start], dates[start + WINDOW - 1]))
        verdict = drift_verdict(reference, window, columns, categorical_columns=["vol_regime"],
                                cache_dir=tmp_path / "profiles")
        assert verdict.evidently is not None
        flagged += verdict.dataset_drift
        evidently_flagged += verdict.evidently.dataset_drift
        n += 1
    assert n >= 10 and flagged == 0
    assert evidently_flagged >= n // 2  # the finding, on the same windows


def test_bad_parameters_name_the_field(garch: pl.DataFrame) -> None:
    for kwargs, field in [({"alpha": 1.5}, "alpha"), ({"alpha": 0}, "alpha"), ({"n_draws": 10}, "n_draws"),
                          ({"block_days": 0}, "block_days"), ({"n_bins": 2}, "n_bins")]:
        with pytest.raises(InvalidInput) as err:
            CalibrationParams(**kwargs)
        assert err.value.field == field
    reference = garch.filter(pl.col("date") < 40).drop("symbol")
    current = garch.filter(pl.col("date") < WINDOW).drop("symbol")
    with pytest.raises(InvalidInput) as err:
        drift_verdict(reference, current, compare=False)
    assert err.value.field == "reference" and "fewer than the window" in err.value.problem
    with pytest.raises(InvalidInput) as err:
        drift_verdict(reference, current, method="ks")  # type: ignore[arg-type]
    assert err.value.field == "method"
    with pytest.raises(InvalidInput) as err:
        drift_verdict(reference.drop("date"), current, compare=False)
    assert err.value.field == "reference.date"


def test_settings_validate_the_drift_parameters() -> None:
    from pydantic import ValidationError

    from mlops_assets.settings import MonitoringSettings

    assert MonitoringSettings().drift_method == "calibrated"
    for bad in ({"drift_method": "ks"}, {"drift_fdr_alpha": 1.0}, {"drift_null_draws": 10},
                {"drift_block_days": 0}):
        with pytest.raises(ValidationError) as err:
            MonitoringSettings(**bad)
        assert next(iter(bad)) in str(err.value)


def test_a_window_without_dates_is_measured_in_reference_dates(garch: pl.DataFrame) -> None:
    """Served requests carry no date: their length is their rows over the reference's rows per date."""
    reference = garch.filter(pl.col("date") < 1500).drop("symbol")  # 3 rows per date
    served = garch.filter(pl.col("date").is_between(2000, 2039)).drop("symbol", "date")  # 120 rows
    verdict = drift_verdict(reference, served, ["ret", "ret_5d", "vol_20d"], compare=False)
    assert verdict.calibrated is not None and verdict.calibrated.window_days == 40
    assert verdict.calibrated.n_current == 120

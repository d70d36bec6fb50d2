"""Calibrated drift against Evidently's default verdict, on real index prices and synthetic data.

Prints, nothing is downloaded (the S&P 500 and NASDAQ daily prices 1999-2018 ship inside ``arch``):

1. false alarms: every 60-day window from inside the reference period (1999-2011), against that reference;
2. walk-forward from 2004: every 60-day window against all the history before it: share flagged, and the
   flagged periods (they should be market events: 2008's crash among them);
3. power on injected shifts (synthetic GARCH(1,1) panel: mean and scale shifts of several sizes);
4. speed: the calibrated verdict on 1M rows x 20 features with the profile built, and the profile build,
   repeated, with the spread and the load average (2 cores are shared; a busy machine shows in the spread).

Features are the platform's own (``features.views.FEATURE_VIEWS`` computed by ``features.compute``), the
ones a model trains on and drift_report watches.

    .venv/bin/python benchmarks/drift_calibration.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlops_assets.monitoring.calibrated import calibrated_drift
from mlops_assets.monitoring.calibrated_profile import CalibrationParams, build_profile
from mlops_assets.monitoring.verdict import drift_verdict

WINDOW = 60
STEP = 20  # walk-forward: a new window every 20 trading days
CATEGORICAL = ["vol_regime"]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} cores"


def real_features(tmp: Path) -> pl.DataFrame:
    from mlops_assets.data.loaders import LocalDataLoader
    from mlops_assets.data.real import write_yahoo_folder
    from mlops_assets.features.compute import compute_views, view_frames
    from mlops_assets.features.datasets import join_views
    from mlops_assets.features.views import FEATURE_VIEWS

    write_yahoo_folder(tmp / "prices")
    market = LocalDataLoader(tmp / "prices").load()
    return join_views(view_frames(compute_views(FEATURE_VIEWS, market))).drop_nulls().drop("symbol")


def windows(dates: list[dt.date], start: dt.date, stop: dt.date, step: int = WINDOW) -> list[tuple[dt.date, dt.date]]:
    inside = [d for d in dates if start <= d < stop]
    return [(inside[i], inside[i + WINDOW - 1]) for i in range(0, len(inside) - WINDOW + 1, step)]


def false_alarms(features: pl.DataFrame, columns: list[str], cache: Path) -> None:
    reference = features.filter(pl.col("date") < dt.date(2012, 1, 1))
    dates = reference["date"].unique().sort().to_list()
    spans = windows(dates, dates[0], dt.date(2012, 1, 1))
    calibrated = evidently = 0
    per_feature_flags = 0
    for lo, hi in spans:
        window = reference.filter(pl.col("date").is_between(lo, hi))
        v = drift_verdict(reference, window, columns, categorical_columns=CATEGORICAL, cache_dir=cache)
        assert v.calibrated is not None and v.evidently is not None
        calibrated += v.calibrated.dataset_drift
        evidently += v.evidently.dataset_drift
        per_feature_flags += v.calibrated.per_column["significant"].any()
    n = len(spans)
    print(f"\n1. False alarms: {n} windows of {WINDOW} days from inside the reference "
          f"{dates[0]}..{dates[-1]} ({reference.height} rows, {len(columns)} features)")
    print(f"   drift_method: calibrated  {calibrated:3d} of {n} flagged ({calibrated / n:6.1%})   target <= 5%")
    print(f"   drift_method: evidently   {evidently:3d} of {n} flagged ({evidently / n:6.1%})")
    print(f"   calibrated windows with at least one significant feature: {per_feature_flags} of {n}")


def walk_forward(features: pl.DataFrame, columns: list[str], cache: Path) -> None:
    dates = features["date"].unique().sort().to_list()
    spans = windows(dates, dt.date(2004, 1, 1), dt.date(2019, 1, 1), step=STEP)
    flagged, ev_flagged, builds = [], 0, []
    for lo, hi in spans:
        history = features.filter(pl.col("date") < lo)
        window = features.filter(pl.col("date").is_between(lo, hi))
        started = time.perf_counter()
        v = drift_verdict(history, window, columns, categorical_columns=CATEGORICAL, cache_dir=cache)
        builds.append(time.perf_counter() - started)
        assert v.calibrated is not None and v.evidently is not None
        ev_flagged += v.evidently.dataset_drift
        if v.calibrated.dataset_drift:
            top = v.calibrated.per_column.filter(pl.col("significant")).sort("q_value")["column"].to_list()
            flagged.append((lo, hi, v.calibrated.share_drifted, top))
    n = len(spans)
    print(f"\n2. Walk-forward from 2004: {n} windows of {WINDOW} trading days, one every {STEP} (about a month), "
          "each against all the history before it")
    print(f"   drift_method: calibrated  {len(flagged):3d} of {n} flagged ({len(flagged) / n:6.1%})")
    print(f"   drift_method: evidently   {ev_flagged:3d} of {n} flagged ({ev_flagged / n:6.1%})")
    print(f"   per window (new profile each time, built and cached): median {statistics.median(builds):.2f} s")
    print("   flagged periods (calibrated): first day .. last day, share of features, significant features")
    for lo, hi, share, top in flagged:
        print(f"     {lo} .. {hi}  {share:4.2f}  {', '.join(top)}")
    crash_days = {d for d in dates if dt.date(2008, 10, 1) <= d <= dt.date(2008, 11, 30)}

    def covers(lo: dt.date, hi: dt.date) -> bool:  # at least a third of the window is Oct-Nov 2008
        return sum(lo <= d <= hi for d in crash_days) >= WINDOW // 3

    covering = [(lo, hi) for lo, hi in spans if covers(lo, hi)]
    crash = [(lo, hi) for lo, hi, _, _ in flagged if covers(lo, hi)]
    print(f"   windows with at least {WINDOW // 3} trading days of Oct-Nov 2008: {len(covering)}, "
          f"flagged: {len(crash)} ({', '.join(f'{lo}..{hi}' for lo, hi in crash)})")


def garch_panel(n_days: int, n_series: int, seed: int) -> pl.DataFrame:
    from arch.univariate import GARCH, Normal, ZeroMean

    frames = []
    for j in range(n_series):
        model = ZeroMean(volatility=GARCH(), distribution=Normal(seed=np.random.default_rng(seed * 100 + j)))
        r = model.simulate([0.02, 0.08, 0.90], n_days + 20, burn=500)["data"].to_numpy()
        frames.append(pl.DataFrame({"date": np.arange(n_days + 20), "ret": r}).with_columns(
            pl.col("ret").rolling_sum(5).alias("ret_5d"), pl.col("ret").rolling_sum(20).alias("ret_20d"),
            pl.col("ret").abs().rolling_mean(20).alias("vol_20d")).slice(20))
    return pl.concat(frames)


def power(quick: bool) -> None:
    panel = garch_panel(4000, 5, seed=3)
    reference = panel.filter(pl.col("date") < 2500)
    cols = ["ret", "ret_5d", "ret_20d", "vol_20d"]
    stds = {c: reference[c].std() for c in cols}
    profile = build_profile(reference, WINDOW)
    spans = [(s, s + WINDOW - 1) for s in range(2520, 4020 - WINDOW, WINDOW)][: 10 if quick else None]
    print(f"\n3. Power on injected shifts: GARCH(1,1) panel (alpha+beta=0.98, 5 series), reference 2,500 days, "
          f"{len(spans)} later windows, share of windows flagged")
    print(f"   {'shift':<34}{'calibrated':>12}{'evidently':>12}")
    cases = [("none", lambda w: w)]
    for k in (0.25, 0.5, 1.0):
        cases.append((f"mean + {k} sd (all features)", lambda w, k=k: w.with_columns(
            [pl.col(c) + k * s for c, s in stds.items()])))
    for k in (1.25, 1.5, 2.0):
        cases.append((f"volatility x {k}", lambda w, k=k: w.with_columns([pl.col(c) * k for c in cols])))
    cases.append(("mean + 1 sd (one feature of four)", lambda w: w.with_columns(pl.col("ret_20d") + stds["ret_20d"])))
    for name, move in cases:
        cal = ev = 0
        for lo, hi in spans:
            window = move(panel.filter(pl.col("date").is_between(lo, hi)))
            cal += calibrated_drift(profile, window).dataset_drift
            ev += drift_verdict(reference, window, cols, method="evidently", compare=False).dataset_drift
        print(f"   {name:<34}{cal / len(spans):>12.0%}{ev / len(spans):>12.0%}")


def speed(quick: bool, repeats: int) -> None:
    rng = np.random.default_rng(0)
    n_features, symbols = 20, 16_667
    ref_dates = 120 if quick else 180

    def panel(n_dates: int, offset: int) -> pl.DataFrame:
        vol = np.repeat(np.exp(0.3 * rng.standard_normal(n_dates)), symbols)  # a shared volatility per date
        cols = {"date": np.repeat(np.arange(offset, offset + n_dates), symbols)}
        for j in range(n_features):
            cols[f"f{j:02d}"] = rng.standard_normal(n_dates * symbols) * vol
        return pl.DataFrame(cols)

    reference = panel(ref_dates, 0)
    current = panel(WINDOW, ref_dates)
    print(f"\n4. Speed: reference {reference.height:,} rows, window {current.height:,} rows x {n_features} "
          f"features ({load()} before)")
    builds = []
    for _ in range(2 if not quick else 1):
        started = time.perf_counter()
        profile = build_profile(reference, WINDOW)
        builds.append(time.perf_counter() - started)
    verdicts = []
    for _ in range(repeats):
        started = time.perf_counter()
        calibrated_drift(profile, current)
        verdicts.append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as cache:
        drift_verdict(reference, current, compare=False, cache_dir=Path(cache))  # builds and stores
        cached = []
        for _ in range(max(2, repeats // 2)):
            started = time.perf_counter()
            drift_verdict(reference, current, compare=False, cache_dir=Path(cache))
            cached.append(time.perf_counter() - started)
    started = time.perf_counter()
    drift_verdict(reference, current, method="evidently", compare=False)
    evidently = time.perf_counter() - started

    def spread(xs: list[float]) -> str:
        return f"median {statistics.median(xs):6.2f} s  (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})"

    print(f"   profile build (null of {profile.params.n_draws} draws)            {spread(builds)}")
    print(f"   calibrated verdict, profile in hand                    {spread(verdicts)}   target <= 10 s")
    print(f"   calibrated verdict via drift_verdict + disk cache      {spread(cached)}")
    print(f"   Evidently-exact verdict (fast_drift), for scale        median {evidently:6.2f} s  (n=1)")
    print(f"   ({load()} after)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows and a smaller speed reference")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"Calibrated drift vs Evidently's default ({load()}); defaults: {CalibrationParams()}")
    with tempfile.TemporaryDirectory() as tmp:
        features = real_features(Path(tmp))
        columns = [c for c in features.columns if c != "date"]
        print(f"Real data: S&P 500 and NASDAQ daily 1999-2018 from arch, {features.height} rows "
              f"(symbol x date) of the platform's features: {', '.join(columns)}")
        false_alarms(features, columns, Path(tmp) / "profiles")
        walk_forward(features, columns, Path(tmp) / "profiles")
    power(args.quick)
    speed(args.quick, args.repeats)


if __name__ == "__main__":
    main()

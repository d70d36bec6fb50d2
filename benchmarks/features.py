"""Benchmark: the whole feature path on 10 million rows, and polars against idiomatic pandas.

Stages, each timed (wall and CPU seconds):

1. ``generate``   synthetic market data (``--symbols`` x ``--days`` rows);
2. ``features``   every feature view (``compute_views``);
3. ``warehouse``  each view table written to a temporary DuckDB file, one transaction each
                  (``Warehouse.write_table``: ``CREATE OR REPLACE TABLE ... AS SELECT``, with the
                  "fast" compression the feature view assets use);
4. ``catalog``    catalog rows and history merge, lock check;
5. ``statistics`` per-feature statistics, correlations and the PNG plots;
6. ``online``     the online snapshot (latest vector per symbol), published atomically;
7. ``dataset``    (extra, not part of the target) the point-in-time training dataset.

Then the same features computed the idiomatic pandas way (``groupby`` + ``shift``/``rolling``/``ewm``)
on the same data (as a pandas frame; the conversion is not timed), the ratio of the two feature
computations, and an ``allclose`` check of both outputs on a random sample of rows.

    python benchmarks/features.py                         # 2,000 symbols x 5,000 days = 10M rows
    python benchmarks/features.py --symbols 200 --days 1000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets.data.synthetic import generate_market_data  # noqa: E402
from mlops_assets.data.warehouse import Warehouse  # noqa: E402
from mlops_assets.features.catalog import catalog_rows, merge_history  # noqa: E402
from mlops_assets.features.compute import compute_views  # noqa: E402
from mlops_assets.features.datasets import build_training_dataset  # noqa: E402
from mlops_assets.features.lock import check_lock  # noqa: E402
from mlops_assets.features.online import write_online_snapshot  # noqa: E402
from mlops_assets.features.statistics import (  # noqa: E402
    correlation_png,
    feature_correlations,
    feature_statistics,
    histograms_png,
)
from mlops_assets.features.views import FEATURE_VIEWS, table_name  # noqa: E402

TARGETS = {"total_s": 30.0, "peak_rss_gb": 4.0, "speedup_vs_pandas": 5.0}
TERCILE_Z = 0.4307272992954576
SQRT_252 = math.sqrt(252)


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


class Timer:
    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}

    @contextmanager
    def stage(self, name: str):  # noqa: ANN201
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.stages[name] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
        took = self.stages[name]
        print(f"  {name:<11} {took['wall_s']:7.2f} s wall  {took['cpu_s']:7.2f} s cpu", flush=True)


def write_warehouse(path: Path, frames: dict[str, pl.DataFrame], threads: int = 0) -> str:
    """Write each view table in its own transaction, as the feature view assets do."""
    warehouse = Warehouse(path, write_threads=threads)
    for table, df in frames.items():
        warehouse.write_table(table, df, compression="fast")
    return "Warehouse.write_table (compression 'fast')"


# -- the pandas reference ---------------------------------------------------------------------------

def pandas_features(pdf: pd.DataFrame) -> pd.DataFrame:
    """The shipped features, the idiomatic pandas way: vectorised groupby shift/rolling/ewm.

    ``pdf`` is sorted by (symbol, date) with a default index.
    """
    by = pdf.groupby("symbol", sort=False)
    close = pdf["close"]

    def rolling(series: pd.Series, window: int, how: str) -> pd.Series:
        grouped = series.groupby(pdf["symbol"], sort=False).rolling(window, min_periods=window)
        return getattr(grouped, how)().reset_index(level=0, drop=True).sort_index()

    def ewm(series: pd.Series, alpha: float, min_periods: int) -> pd.Series:
        grouped = series.groupby(pdf["symbol"], sort=False)
        averaged = grouped.ewm(alpha=alpha, adjust=False, min_periods=min_periods).mean()
        return averaged.reset_index(level=0, drop=True).sort_index()

    out = pd.DataFrame({"symbol": pdf["symbol"], "date": pdf["date"]})
    shifted = {k: by["close"].shift(k) for k in (1, 5, 20, 60)}
    out["ret_1d"] = close / shifted[1] - 1
    out["ret_5d"] = close / shifted[5] - 1
    out["ret_20d"] = close / shifted[20] - 1
    out["momentum_60d"] = shifted[5] / shifted[60] - 1
    delta = by["close"].diff()
    gain = ewm(delta.clip(lower=0), 1 / 14, 14)
    loss = ewm((-delta).clip(lower=0), 1 / 14, 14)
    out["rsi_14"] = (100 * gain / (gain + loss)).where((gain + loss) != 0, 50.0)
    out["ma_dist_20"] = close / rolling(close, 20, "mean") - 1
    out["ma_dist_50"] = close / rolling(close, 50, "mean") - 1
    log_volume = np.log1p(pdf["volume"])
    out["volume_z_20"] = (log_volume - rolling(log_volume, 20, "mean")) / rolling(log_volume, 20, "std")
    vol_20 = rolling(out["ret_1d"], 20, "std") * SQRT_252
    out["vol_20d"] = vol_20
    out["vol_ratio_20_60"] = vol_20 / (rolling(out["ret_1d"], 60, "std") * SQRT_252)
    out["range_20d"] = rolling((pdf["high"] - pdf["low"]) / close, 20, "mean")
    log_vol = np.log(vol_20)
    z = (log_vol - rolling(log_vol, 120, "mean")) / rolling(log_vol, 120, "std")
    label = pd.Series(np.where(z < -TERCILE_Z, "low", np.where(z > TERCILE_Z, "high", "mid")), dtype=object)
    label[z.isna().to_numpy()] = None
    out["vol_regime"] = label.to_numpy()
    return out


def compare_outputs(
    polars_joined: pl.DataFrame, pandas_out: pd.DataFrame, sample: int, seed: int
) -> dict[str, Any]:
    """``allclose`` of every numeric feature and equality of the String one on sampled rows."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(polars_joined.height, size=min(sample, polars_joined.height), replace=False))
    ours = polars_joined[rows]
    theirs = pandas_out.iloc[rows]
    assert ours["symbol"].to_list() == theirs["symbol"].tolist(), "row order differs"
    checked: dict[str, int] = {}
    for column in ours.columns:
        if column in ("symbol", "date"):
            continue
        if ours.schema[column] == pl.String:
            assert ours[column].to_list() == theirs[column].tolist(), column
        else:
            np.testing.assert_allclose(ours[column].to_numpy(), theirs[column].to_numpy(dtype=float),
                                       rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=column)
        checked[column] = int(ours[column].is_not_null().sum())
    return {"rows": int(rows.size), "non_null_values_per_feature": checked}


def run(
    symbols: int, days: int, seed: int, pandas_check: bool, sample: int, workdir: Path, warehouse_threads: int = 0,
) -> dict[str, Any]:
    timer = Timer()
    rows = symbols * days
    print(f"feature path on {symbols:,} symbols x {days:,} days = {rows:,} rows", flush=True)
    with timer.stage("generate"):
        market = generate_market_data(n_symbols=symbols, n_days=days, seed=seed)
    with timer.stage("features"):
        results = compute_views(FEATURE_VIEWS, market)
    frames = {table_name(r.view): r.df for r in results.values()}
    with timer.stage("warehouse"):
        writer = write_warehouse(workdir / "warehouse.duckdb", frames, warehouse_threads)
    with timer.stage("catalog"):
        catalog = merge_history(None, catalog_rows(FEATURE_VIEWS, results))
        lock_violations = check_lock(FEATURE_VIEWS)
    with timer.stage("statistics"):
        stats = [feature_statistics(r.df, r.features) for r in results.values()]
        joined = results[FEATURE_VIEWS[0].name].df
        for view in FEATURE_VIEWS[1:]:
            joined = joined.hstack(results[view.name].df.drop("symbol", "date"))
        numeric = [c for c in joined.columns[2:] if joined.schema[c].is_numeric()]
        corr = feature_correlations(joined, numeric)
        pngs = [histograms_png(pl.concat(stats)), correlation_png(corr)]
    with timer.stage("online"):
        frames_in_order = [r.df for r in results.values()]
        snapshot = write_online_snapshot(frames_in_order, list(FEATURE_VIEWS), workdir / "online")
    target_total = sum(s["wall_s"] for s in timer.stages.values())
    rss_feature_path = peak_rss_gb()
    with timer.stage("dataset"):
        dataset = build_training_dataset([r.df for r in results.values()], market)

    report: dict[str, Any] = {
        "rows": rows,
        "symbols": symbols,
        "days": days,
        "stages": timer.stages,
        "total_wall_s": target_total,
        "rows_per_s": rows / target_total,
        "feature_rows_per_s": rows / timer.stages["features"]["wall_s"],
        "peak_rss_gb_feature_path": rss_feature_path,
        "warehouse_writer": writer,
        "warehouse_threads": warehouse_threads or "duckdb default (one per core)",
        "catalog_rows": catalog.height,
        "lock_violations": len(lock_violations),
        "png_bytes": [len(p) for p in pngs],
        "snapshot_entities": snapshot.n_entities,
        "dataset_rows": dataset.df.height,
        "features": joined.width - 2,
    }
    del dataset
    if pandas_check:
        pdf = market.to_pandas()  # sorted by (symbol, date), default index; not timed
        del market
        wall, cpu = time.perf_counter(), time.process_time()
        pandas_out = pandas_features(pdf)
        report["pandas_features"] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
        report["speedup_vs_pandas"] = report["pandas_features"]["wall_s"] / timer.stages["features"]["wall_s"]
        report["cpu_speedup_vs_pandas"] = (
            report["pandas_features"]["cpu_s"] / timer.stages["features"]["cpu_s"]
        )
        report["equality_check"] = compare_outputs(joined, pandas_out, sample, seed)
    report["peak_rss_gb_overall"] = peak_rss_gb()
    return report


def print_report(report: dict[str, Any]) -> None:
    print()
    n_views = len(FEATURE_VIEWS)
    print(f"rows                 {report['rows']:,} ({report['features']} features in {n_views} views)")
    print(f"total (stages 1-6)   {report['total_wall_s']:.2f} s wall   target <= {TARGETS['total_s']:.0f} s")
    print(f"throughput           {report['rows_per_s']:,.0f} rows/s end to end, "
          f"{report['feature_rows_per_s']:,.0f} rows/s feature computation")
    print(f"peak RSS             {report['peak_rss_gb_feature_path']:.2f} GB feature path   "
          f"target <= {TARGETS['peak_rss_gb']:.0f} GB   ({report['peak_rss_gb_overall']:.2f} GB after the "
          f"dataset{' and pandas' if 'pandas_features' in report else ''})")
    cpu_total = sum(v["cpu_s"] for k, v in report["stages"].items() if k != "dataset")
    print(f"cpu (stages 1-6)     {cpu_total:.2f} s (all threads; a guide when the machine is shared)")
    if "pandas_features" in report:
        print(f"pandas features      {report['pandas_features']['wall_s']:.2f} s wall "
              f"{report['pandas_features']['cpu_s']:.2f} s cpu")
        print(f"polars vs pandas     {report['speedup_vs_pandas']:.1f}x wall, "
              f"{report['cpu_speedup_vs_pandas']:.1f}x cpu   target >= {TARGETS['speedup_vs_pandas']:.0f}x")
        eq = report["equality_check"]
        print(f"equal outputs        allclose on {eq['rows']:,} sampled rows, every feature")
    print(f"warehouse writer     {report['warehouse_writer']}; catalog {report['catalog_rows']} rows; "
          f"lock violations {report['lock_violations']}; snapshot {report['snapshot_entities']:,} symbols; "
          f"PNG sizes {report['png_bytes']} bytes")


def main(argv: list[str] | None = None, runner: Callable[..., dict[str, Any]] = run) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=2000)
    parser.add_argument("--days", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas comparison")
    parser.add_argument("--sample", type=int, default=5000, help="rows compared with pandas")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--warehouse-threads", type=int, default=0,
                        help="DuckDB threads for the warehouse writes (0: one per core, the default)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mlops-bench-features-") as tmp:
        report = runner(args.symbols, args.days, args.seed, not args.no_pandas, args.sample, Path(tmp),
                        warehouse_threads=args.warehouse_threads)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


if __name__ == "__main__":
    main()

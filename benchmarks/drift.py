"""Benchmark: fast_drift against Evidently 0.7's default DataDriftPreset, same data, same verdicts.

Generates a reference and a current window (``--rows`` rows each, ``--features`` columns: continuous
floats, an integer volume-like column, a low-cardinality integer, a categorical ``regime`` string and a
``proba`` prediction column; a few of them shifted in the current window), then times

* Evidently: ``Report([DataDriftPreset()], include_tests=True).run(current, reference)`` (the tests only
  add Evidently's per-column drift verdicts to the snapshot), on ``--evidently-rows`` rows (default: all);
* ``fast_drift`` on the same pandas frames, on polars frames, and against a prepared reference profile;

and prints the timings, the speed-up and the verdict agreement (methods, drift flags, max score gap).

    python benchmarks/drift.py                       # 1,000,000 rows x 20 features, both at full size
    python benchmarks/drift.py --rows 200000 --features 11
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets.monitoring.drift import fast_drift, prepare_reference  # noqa: E402
from mlops_assets.monitoring.evidently_report import (  # noqa: E402
    run_evidently_drift,
    verdicts_from_snapshot,
)

SPECIAL_COLUMNS = ("volume", "lowcard_int", "regime", "proba")


def make_window(rows: int, features: int, shifted: bool, seed: int) -> pd.DataFrame:
    """One window: ``features`` columns, of which ``features - 4`` are continuous floats."""
    if features < len(SPECIAL_COLUMNS) + 1:
        raise ValueError(f"--features must be at least {len(SPECIAL_COLUMNS) + 1}, got {features}")
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for i in range(features - len(SPECIAL_COLUMNS)):
        mean, scale = 0.0, 1.0
        if shifted and i == 0:
            mean = 0.5  # clear location shift
        if shifted and i == 1:
            scale = 1.6  # clear scale shift
        if shifted and i == 2:
            mean = 0.02  # tiny shift: below Evidently's threshold
        data[f"f_{i:02d}"] = rng.normal(mean, scale, rows)
    data["volume"] = rng.lognormal(10.0, 1.0 if not shifted else 1.05, rows).astype(np.int64)
    data["lowcard_int"] = rng.integers(0, 5, rows)
    regimes = np.array(["bear", "bull", "sideways"])
    probabilities = [0.3, 0.5, 0.2] if not shifted else [0.45, 0.3, 0.25]
    data["regime"] = regimes[rng.choice(3, rows, p=probabilities)]
    data["proba"] = rng.beta(2.0, 5.0 if not shifted else 3.0, rows)
    return pd.DataFrame(data)


def agreement(fast: pl.DataFrame, evidently: dict[str, Any]) -> dict[str, Any]:
    by_column = {c["column"]: c for c in evidently["columns"]}
    rows = fast.to_dicts()
    same_verdict = sum(1 for r in rows if by_column[r["column"]]["drifted"] == r["drifted"])
    same_method = sum(1 for r in rows if by_column[r["column"]]["method"] == r["method"])
    gaps = [abs(by_column[r["column"]]["score"] - r["score"]) for r in rows]
    return {
        "n_columns": len(rows),
        "n_same_verdict": same_verdict,
        "n_same_method": same_method,
        "max_abs_score_diff": max(gaps),
        "same_column_set": set(by_column) == {r["column"] for r in rows},
    }


def timed(func: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """(result, wall seconds); the CPU seconds of the last call are kept in ``LAST_CPU_SECONDS``."""
    global LAST_CPU_SECONDS
    start, cpu = time.perf_counter(), time.process_time()
    value = func(*args, **kwargs)
    LAST_CPU_SECONDS = time.process_time() - cpu
    return value, time.perf_counter() - start


LAST_CPU_SECONDS = 0.0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per window (reference and current)")
    parser.add_argument("--features", type=int, default=20, help="columns per window")
    parser.add_argument(
        "--evidently-rows", type=int, default=None, help="rows Evidently gets (default: --rows)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    ev_rows = args.evidently_rows or args.rows
    if not 0 < ev_rows <= args.rows:
        parser.error("--evidently-rows must be between 1 and --rows")

    import evidently.presets  # noqa: F401 - import (seconds) before timing anything

    reference = make_window(args.rows, args.features, shifted=False, seed=args.seed)
    current = make_window(args.rows, args.features, shifted=True, seed=args.seed + 1)
    ref_pl, cur_pl = pl.from_pandas(reference), pl.from_pandas(current)

    fast_pd, t_fast_pd = timed(fast_drift, reference, current, prediction_columns=["proba"])
    cpu_fast_pd = LAST_CPU_SECONDS
    _, t_fast_pl = timed(fast_drift, ref_pl, cur_pl, prediction_columns=["proba"])
    profile, t_prepare = timed(prepare_reference, ref_pl)
    _, t_compare = timed(fast_drift, profile, cur_pl, prediction_columns=["proba"])

    ev_ref, ev_cur = reference.iloc[:ev_rows], current.iloc[:ev_rows]
    snapshot, t_evidently = timed(run_evidently_drift, ev_ref, ev_cur)
    cpu_evidently = LAST_CPU_SECONDS
    evidently = verdicts_from_snapshot(snapshot, ["proba"])
    fast_same = fast_pd if ev_rows == args.rows else fast_drift(ev_ref, ev_cur, prediction_columns=["proba"])
    _, t_fast_same = (None, t_fast_pd) if ev_rows == args.rows else timed(fast_drift, ev_ref, ev_cur)
    agree = agreement(fast_same.per_column, evidently)

    figures = {
        "rows": args.rows,
        "features": args.features,
        "evidently_rows": ev_rows,
        "evidently_seconds": round(t_evidently, 3),
        "evidently_cpu_seconds": round(cpu_evidently, 3),
        "fast_drift_seconds_same_rows": round(t_fast_same, 3),
        "speedup": round(t_evidently / t_fast_same, 1),
        "fast_drift_seconds_pandas": round(t_fast_pd, 3),
        "fast_drift_cpu_seconds_pandas": round(cpu_fast_pd, 3),
        "fast_drift_seconds_polars": round(t_fast_pl, 3),
        "prepare_reference_seconds": round(t_prepare, 3),
        "fast_drift_seconds_with_profile": round(t_compare, 3),
        **agree,
        "share_drifted_fast": fast_same.share_drifted,
        "share_drifted_evidently": evidently["share_drifted"],
        "dataset_drift_fast": fast_same.dataset_drift,
        "dataset_drift_evidently": evidently["dataset_drift"],
        "drifted_columns": fast_same.drifted_columns,
    }
    if args.json:
        print(json.dumps(figures))
        return figures
    print(f"data: {args.rows:,} rows x {args.features} columns per window (Evidently on {ev_rows:,} rows)")
    print(f"Evidently 0.7 DataDriftPreset : {t_evidently:8.2f} s   (CPU {cpu_evidently:.2f} s)")
    print(f"fast_drift (same data, pandas): {t_fast_same:8.2f} s   speed-up x{t_evidently / t_fast_same:.1f}")
    print(f"fast_drift on {args.rows:,} rows: pandas {t_fast_pd:.2f} s (CPU {cpu_fast_pd:.2f} s, "
          f"{os.cpu_count()} CPUs), polars {t_fast_pl:.2f} s, "
          f"prepared reference {t_prepare:.2f} s + {t_compare:.2f} s per current window")
    print(f"verdicts equal: {agree['n_same_verdict']}/{agree['n_columns']} columns, "
          f"methods equal: {agree['n_same_method']}/{agree['n_columns']}, "
          f"max |score difference|: {agree['max_abs_score_diff']:.3g}")
    print(f"share drifted: fast {fast_same.share_drifted:.3f} vs Evidently {evidently['share_drifted']:.3f}; "
          f"dataset drift: fast {fast_same.dataset_drift} vs Evidently {evidently['dataset_drift']}")
    print(f"drifted columns: {', '.join(fast_same.drifted_columns)}")
    return figures


if __name__ == "__main__":
    main()

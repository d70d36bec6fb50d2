"""Synthetic reference/current windows that exercise every branch of Evidently's method selection."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
# a temporary MLOPS_HOME and a real Dagster instance, as the Dagster wiring tests use (test_drift_defs.py)
from mlops_assets_tests.defs.conftest import instance, small_home  # noqa: F401


def make_window(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """One window; ``shift`` > 0 moves most columns.

    Evidently types (inferred from dtypes): ``cont``, ``wide_int`` (int, > 10 values), ``five_levels``
    and ``six_levels`` (floats with 5 / 6 values), ``binary_float``, ``proba`` are numerical;
    ``ten_levels_int`` (int, exactly 10 values), ``lowcard_int``, ``regime`` (string), ``flag`` (bool)
    are categorical.
    """
    rng = np.random.default_rng(seed)
    regime_p = [0.4, 0.4, 0.2] if shift == 0 else [0.2, 0.45, 0.35]
    return pd.DataFrame(
        {
            "cont": rng.normal(shift, 1.0, n),
            "wide_int": rng.integers(0, 500, n) + int(shift * 80),
            "five_levels": rng.integers(0, 5, n).astype(float) * 0.5,
            "six_levels": rng.integers(0, 6, n).astype(float) + (shift > 0) * rng.integers(0, 2, n),
            "binary_float": (rng.uniform(size=n) < 0.3 + shift / 4).astype(float),
            "proba": rng.beta(2.0, 5.0 + 2 * shift, n),
            "ten_levels_int": np.arange(n) % 10,
            "lowcard_int": rng.integers(0, 4, n),
            "regime": rng.choice(np.array(["bear", "bull", "sideways"]), n, p=regime_p),
            "flag": rng.uniform(size=n) < 0.5 + shift / 5,
        }
    )


def assert_same_verdicts(fast: Any, evidently: dict[str, Any], ordered: bool = True) -> None:
    """fast_drift's result equals Evidently's: columns, methods, thresholds, flags, scores, dataset."""
    ev_columns = [c["column"] for c in evidently["columns"]]
    fast_columns = fast.per_column.get_column("column").to_list()
    if ordered:
        assert fast_columns == ev_columns
    else:
        assert sorted(fast_columns) == sorted(ev_columns)
    by_column = {c["column"]: c for c in evidently["columns"]}
    for row in fast.per_column.iter_rows(named=True):
        ev = by_column[row["column"]]
        context = f"{row['column']}: fast {row} vs evidently {ev}"
        assert row["method"] == ev["method"], context
        assert row["threshold"] == ev["threshold"], context
        assert row["drifted"] == ev["drifted"], context
        assert math.isclose(row["score"], ev["score"], rel_tol=1e-9, abs_tol=1e-12), context
    assert fast.n_drifted == evidently["n_drifted"]
    assert math.isclose(fast.share_drifted, evidently["share_drifted"], rel_tol=1e-12)
    assert fast.dataset_drift == evidently["dataset_drift"]



"""Return statistics against plain-numpy references; the naive baselines."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from mlops_assets.evaluation.baselines import majority_class_baseline, momentum_baseline
from mlops_assets.evaluation.errors import EvaluationInputError
from mlops_assets.evaluation.performance import cumulative_return, max_drawdown, return_stats, sharpe_ratio


def _reference_drawdown(returns: list[float]) -> float:
    equity, peak, worst = 1.0, 1.0, 0.0
    for r in returns:
        equity *= 1 + r
        peak = max(peak, equity)
        worst = max(worst, (peak - equity) / peak)
    return worst


def test_sharpe_and_drawdown_match_plain_references() -> None:
    r = np.random.default_rng(7).normal(0.0005, 0.01, size=300)
    mean = sum(r) / len(r)
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1))
    assert sharpe_ratio(r) == pytest.approx(mean / std * math.sqrt(252))
    assert max_drawdown(r) == pytest.approx(_reference_drawdown(list(r)))
    assert cumulative_return(r) == pytest.approx(np.prod(1 + r) - 1)


def test_drawdown_of_a_known_path() -> None:
    # 1 -> 1.1 -> 0.88 -> 0.968: peak 1.1, trough 0.88, drawdown 20 %
    assert max_drawdown([0.1, -0.2, 0.1]) == pytest.approx(0.2)
    assert max_drawdown([0.01, 0.02]) == 0.0


def test_degenerate_series() -> None:
    assert math.isnan(sharpe_ratio([0.01]))
    assert math.isnan(sharpe_ratio([0.01, 0.01, 0.01]))  # zero variance
    stats = return_stats([])
    assert stats["n_days"] == 0 and stats["cumulative_return"] == 0.0


def test_majority_class_baseline() -> None:
    assert np.allclose(majority_class_baseline([1, 1, 0, 1], 3), 0.75)
    freqs = majority_class_baseline([0, 2, 2, 2], 2, "multiclass", n_classes=3)
    assert freqs.shape == (2, 3) and np.allclose(freqs[0], [0.25, 0.0, 0.75])
    assert np.allclose(majority_class_baseline([0.1, 0.3], 4, "regression"), 0.2)
    with pytest.raises(EvaluationInputError, match="y_train"):
        majority_class_baseline([], 3)


def test_momentum_baseline_is_smoothed_and_configurable() -> None:
    df = pl.DataFrame({"ret_5d": [0.02, -0.01, 0.0, None], "ret_20d": [-0.1, 0.1, 0.1, 0.1]})
    assert momentum_baseline(df).tolist() == [0.55, 0.45, 0.45, 0.5]
    assert momentum_baseline(df, column="ret_20d", low=0.0, high=1.0).tolist() == [0.0, 1.0, 1.0, 1.0]
    with pytest.raises(EvaluationInputError) as info:
        momentum_baseline(df, column="ret_1d")
    assert info.value.field == "column"

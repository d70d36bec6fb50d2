"""Live metrics: the per-version daily metrics against scipy/sklearn, and the reliability table."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest
from scipy import stats
from sklearn.metrics import brier_score_loss, roc_auc_score

from mlops_assets.monitoring import live_metrics as M


def test_daily_metrics_match_scipy_and_sklearn() -> None:
    rng = np.random.default_rng(3)
    n = 400
    y = rng.integers(0, 2, n)
    score = 1 / (1 + np.exp(-(y - 0.5 + rng.normal(0, 1, n))))
    fwd = (y - 0.5) * 0.01 + rng.normal(0, 0.01, n)
    day = date(2024, 3, 1)
    outcomes = pl.DataFrame({
        "date": [day] * n, "model_name": "m", "model_version": ["1"] * (n // 2) + ["2"] * (n // 2),
        "label": y.astype(float), "fwd_return": fwd, "probability": score, "prediction": (score >= 0.5) * 1.0,
        "vol_regime": rng.choice(["low", "mid", "high"], n).tolist(), "label_status": "labelled"})
    metrics = M.daily_metrics(outcomes, day)
    assert metrics["model_version"].to_list() == ["1", "2"]
    for version, sl in (("1", slice(0, n // 2)), ("2", slice(n // 2, n))):
        row = metrics.filter(pl.col("model_version") == version).row(0, named=True)
        assert row["roc_auc"] == pytest.approx(roc_auc_score(y[sl], score[sl]))
        assert row["brier"] == pytest.approx(brier_score_loss(y[sl], score[sl]))
        assert row["ic"] == pytest.approx(stats.spearmanr(score[sl], fwd[sl]).statistic)
        assert row["accuracy"] == pytest.approx(np.mean((score[sl] >= 0.5) == y[sl]))
        regimes = np.array(outcomes["vol_regime"].to_list())[sl]
        hit = (score[sl] >= 0.5) == y[sl]
        assert row["hit_rate_high"] == pytest.approx(hit[regimes == "high"].mean())
        assert (row["served"], row["labelled"], row["pending"]) == (n // 2, n // 2, 0)
    table = M.reliability_table(outcomes)
    assert table["count"].sum() == n and table["observed_rate"].is_between(0, 1).all()

"""Live performance: the test's size and power against scipy, and the performance episode on a real
governance store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from mlops_assets.governance.store import GovernanceStore
from mlops_assets.monitoring import performance as P

KEY = b"k" * 32


def _binormal(rng: np.random.Generator, n: int, auc: float) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose population AUC is ``auc`` (binormal, equal variances): d = sqrt(2) Phi^-1(auc)."""
    y = rng.integers(0, 2, n)
    d = np.sqrt(2) * stats.norm.ppf(auc)
    return y, 1 / (1 + np.exp(-(d * y + rng.normal(0, 1, n))))


def test_accuracy_test_is_scipys_binomial_test() -> None:
    rng = np.random.default_rng(5)
    policy = P.PerformancePolicy(alpha=0.05, power=0.8, min_degradation=0.05)
    n = P.required_sample_size("accuracy", 0.6, policy)
    y = rng.integers(0, 2, n)
    score = np.where(rng.random(n) < 0.52, y, 1 - y).astype(float)  # accuracy about 0.52
    result = P.compare_live_metric(y, score, model_name="m", model_version="1", evaluated_metric="test_accuracy",
                                   evaluated=0.6, policy=policy)
    hits = int(((score >= 0.5) == y).sum())
    assert result.p_value == pytest.approx(stats.binomtest(hits, n, 0.6, alternative="less").pvalue)
    assert result.verdict == ("degraded" if result.p_value < 0.05 else "ok")


def test_auc_test_has_its_stated_size_and_power() -> None:
    rng = np.random.default_rng(11)
    policy = P.PerformancePolicy(alpha=0.05, power=0.8, min_degradation=0.05)
    n = P.required_sample_size("roc_auc", 0.70, policy)
    assert 200 < n < 5000
    under_null = under_alt = 0
    sims, n_required = 300, n
    n = int(n * 1.05)  # the class balance varies between samples, and with it the required n (by ~2%)
    for _ in range(sims):
        kwargs = {"model_name": "m", "model_version": "1", "evaluated_metric": "test_auc", "evaluated": 0.70,
                  "policy": policy}
        y, s = _binormal(rng, n, 0.70)
        null = P.compare_live_metric(y, s, **kwargs)
        assert null.live == pytest.approx(roc_auc_score(y, s))
        under_null += null.verdict == "degraded"
        y, s = _binormal(rng, n, 0.65)
        under_alt += P.compare_live_metric(y, s, **kwargs).verdict == "degraded"
    # size: at most alpha (binomial 99% upper margin); power: the stated 0.8 within sampling error
    assert under_null / sims <= 0.05 + 2.6 * np.sqrt(0.05 * 0.95 / sims)
    assert abs(under_alt / sims - 0.8) <= 2.6 * np.sqrt(0.8 * 0.2 / sims) + 0.03
    small = P.compare_live_metric(*_binormal(rng, n_required // 2, 0.5), model_name="m", model_version="1",
                                  evaluated_metric="test_auc", evaluated=0.7, policy=policy)
    assert small.verdict == "insufficient_data" and abs(small.n_required - n_required) < 0.1 * n_required


@pytest.fixture()
def store(tmp_path: Path) -> GovernanceStore:
    s = GovernanceStore(f"sqlite:///{tmp_path / 'governance.db'}", KEY, tmp_path / "audit.head")
    s.record_gate_result(name="m", version="1", gate="evaluation", passed=True, values={"test_auc": 0.70},
                         thresholds={"test_auc": 0.5}, details={"metric": "test_auc", "higher_is_better": True},
                         actor="dagster")
    return s


def _outcomes(rng: np.random.Generator, n: int, auc: float) -> pl.DataFrame:
    y, s = _binormal(rng, n, auc)
    return pl.DataFrame({"model_name": "m", "model_version": "1", "label": y.astype(float), "probability": s,
                         "prediction": (s >= 0.5) * 1.0, "label_status": "labelled"})


def test_performance_episode_on_degradation_and_none_on_a_stable_model(store: GovernanceStore) -> None:
    rng = np.random.default_rng(7)
    policy = P.PerformancePolicy(alpha=0.01, power=0.8, min_degradation=0.05, cooldown_hours=24)
    n = P.required_sample_size("roc_auc", 0.70, policy) + 200
    t0 = datetime(2024, 6, 3, 8, tzinfo=UTC)
    # a stable model: its live AUC is its evaluated AUC -> no episode, no event
    stable = P.compare_versions(_outcomes(rng, n, 0.70), store, policy)
    assert [t.verdict for t in stable] == ["ok"]
    tick = P.performance_tick(store, stable, policy, t0)
    assert tick is not None and not tick.retrain and not tick.new_episode
    assert store.list_drift_events(P.SOURCE) == []
    # a synthetic degradation: AUC 0.58 -> one episode, one retraining request, one event of its own source
    degraded = P.compare_versions(_outcomes(rng, n, 0.58), store, policy)
    assert degraded[0].verdict == "degraded" and degraded[0].p_value < policy.alpha
    tick = P.performance_tick(store, degraded, policy, t0 + timedelta(hours=1))
    assert tick.retrain and tick.new_episode and tick.alert["degraded"][0]["model_version"] == "1"
    events = store.list_drift_events(P.SOURCE)
    assert len(events) == 1 and events[0].episode_id == tick.alert["episode_id"]
    assert events[0].details["tests"][0]["verdict"] == "degraded"
    # still degraded an hour later: the episode is open and already asked -> nothing new
    again = P.performance_tick(store, degraded, policy, t0 + timedelta(hours=2))
    assert not again.retrain and len(store.list_drift_events(P.SOURCE)) == 1
    # recovered: the episode ends; degraded again within the cooldown: no new episode
    assert P.performance_tick(store, stable, policy, t0 + timedelta(hours=3)).decision.ends_episode
    assert P.performance_tick(store, degraded, policy, t0 + timedelta(hours=4)).decision.action == "cooldown"
    # after the cooldown: a new episode
    assert P.performance_tick(store, degraded, policy, t0 + timedelta(hours=26)).retrain
    assert len(store.list_drift_events(P.SOURCE)) == 2
    # too few outcomes: no verdict, no decision
    few = P.compare_versions(_outcomes(rng, 50, 0.5), store, policy)
    assert few[0].verdict == "insufficient_data" and P.performance_tick(store, few, policy, t0) is None
    assert store.verify_audit().ok


def test_a_stable_tick_does_not_end_a_drift_episode(store: GovernanceStore) -> None:
    from mlops_assets.monitoring.drift_tick import drift_tick
    from mlops_assets.monitoring.events import DriftObservation, DriftPolicy

    t0 = datetime(2024, 6, 3, 8, tzinfo=UTC)
    [(_, opened)] = drift_tick(store, DriftPolicy(threshold_share=0.3), DriftObservation(0.8, ("x",), t0))
    assert opened.retrain
    policy = P.PerformancePolicy(alpha=0.01)
    n = P.required_sample_size("roc_auc", 0.70, policy) + 200
    stable = P.compare_versions(_outcomes(np.random.default_rng(2), n, 0.70), store, policy)
    P.performance_tick(store, stable, policy, t0 + timedelta(hours=1))
    drift = store.list_drift_events("drift_report")
    assert len(drift) == 1 and not drift[0].details.get("resolved_at")

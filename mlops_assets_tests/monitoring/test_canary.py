"""Canary domain rules on a real MLflow SQLite registry and a real SQLite governance store: starting is
approved like a promotion, the guardrail verdict over prediction-log segments and worker counters, the
platform's rollback in the audit log with the measured values, and readiness after the hold."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlops_assets.errors import Conflict, InvalidInput
from mlops_assets.monitoring import canary as C
from mlops_assets.monitoring import canary_guardrails as G
from mlops_assets.models import promotion as P
from mlops_assets.models import tags as T
from mlops_assets_tests.models import governed
from mlops_assets_tests.models.governed import register

registry, store = governed.registry, governed.store  # fixtures: a real MLflow registry, a governance store
POLICY = G.CanaryPolicy(min_requests=40, window_seconds=120, hold_seconds=0.0)
_ids = itertools.count()


def _champion_and_candidate(registry, store):
    """Version 1 in production, version 2 approved by bob (registered by alice)."""
    client, name = register(registry, store, 2)
    P.approve(client, store, name, 1, reviewer="bob", compliance_required=False)
    P.promote(client, store, name, 1, actor="bob", compliance_required=False)
    return client, name


def _segment(log_dir: Path, name: str, version: str, variant: str, probabilities: np.ndarray,
             latency_ms: float, ts: float) -> None:
    n = len(probabilities)
    frame = pl.DataFrame({
        "request_id": [f"r{next(_ids)}" for _ in range(n)],
        "ts": [datetime.fromtimestamp(ts + i * 0.01, UTC) for i in range(n)],
        "model_name": [name] * n, "model_version": [version] * n, "variant": [variant] * n,
        "prediction": (probabilities >= 0.5).astype(float), "probability": probabilities,
        "latency_ms": [latency_ms] * n,
    })
    log_dir.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(log_dir / f"pred-test-{next(_ids)}.parquet")


def test_start_is_approved_like_a_promotion_and_records_the_share(registry, store) -> None:
    client, name = _champion_and_candidate(registry, store)
    with pytest.raises(P.PromotionRefused, match="not approved"):
        C.start(client, store, name, 2, 0.1, actor="bob", compliance_required=False, policy=POLICY)
    with pytest.raises(InvalidInput, match="at most 0.5"):
        C.start(client, store, name, 2, 0.9, actor="bob", compliance_required=False, policy=POLICY)
    with pytest.raises(Conflict, match="already serves 'production'"):
        C.start(client, store, name, 1, 0.1, actor="bob", compliance_required=False, policy=POLICY)
    assert P.alias_target(client, name, T.ALIAS_CANARY) is None
    P.approve(client, store, name, 2, reviewer="bob", compliance_required=False)
    d = C.start(client, store, name, 2, 0.1, actor="bob", compliance_required=False, policy=POLICY)
    assert P.alias_target(client, name, T.ALIAS_CANARY) == "2"
    assert P.alias_target(client, name, T.ALIAS_PRODUCTION) == "1"  # production untouched
    assert d.alias == T.ALIAS_CANARY and d.checklist["canary"]["share"] == 0.1
    assert d.checklist["canary"]["champion_version"] == "1"
    assert d.checklist["approval"]["approved_by"] == "bob"
    assert client.get_model_version(name, "2").tags[T.TAG_CANARY_SHARE] == "0.1"
    # the approval sensor will not also send it to production; a person still may
    assert all(p.name != name for p in store.pending_promotions("model"))
    assert store.verify_audit().ok


def test_a_constant_canary_is_rolled_back_by_the_platform_with_the_measured_values(registry, store,
                                                                                  tmp_path: Path) -> None:
    client, name = _champion_and_candidate(registry, store)
    P.approve(client, store, name, 2, reviewer="bob", compliance_required=False)
    C.start(client, store, name, 2, 0.2, actor="bob", compliance_required=False, policy=POLICY)
    log_dir, now = tmp_path / "serving", time.time()
    rng = np.random.default_rng(0)
    _segment(log_dir, name, "1", "production", rng.uniform(0.2, 0.8, 200), 2.0, now + 0.5)
    _segment(log_dir, name, "2", "canary", np.full(60, 0.99), 2.0, now + 0.5)
    later = now + 5
    verdict = G.evaluate(log_dir, name, "2", "1", now - 1, POLICY, later)
    shift = next(c for c in verdict.checks if c.name == "prediction_shift")
    assert shift.passed is False and shift.value > 0.9 and shift.measured["p_value"] < 1e-6
    result = C.tick(client, store, name, log_dir, POLICY, now=later)
    assert result["action"] == "rollback"
    assert P.alias_target(client, name, T.ALIAS_CANARY) is None
    assert P.alias_target(client, name, T.ALIAS_PRODUCTION) == "1"
    entry = store.list_audit(limit=1, action="alias.removed")[0]
    assert entry.actor == C.PLATFORM and entry.subject_id == f"{name}/2"
    assert entry.details["kind"] == "rollback" and entry.details["alias"] == T.ALIAS_CANARY
    checks = {c["name"]: c for c in entry.details["guardrails"]["checks"]}
    assert checks["prediction_shift"]["passed"] is False
    assert checks["prediction_shift"]["measured"]["ks_statistic"] == pytest.approx(shift.value)
    assert checks["p99_latency_ms"]["passed"] is True
    assert store.verify_audit().ok
    status = C.status(client, store, name, log_dir, POLICY)
    assert status["state"] == "rolled_back" and status["ended"]["actor"] == C.PLATFORM
    assert C.tick(client, store, name, log_dir, POLICY, now=later)["action"] == "none"  # once


def test_errors_and_latency_fail_their_guardrails(registry, store, tmp_path: Path) -> None:
    _, name = _champion_and_candidate(registry, store)
    log_dir, now = tmp_path / "serving", time.time()
    rng = np.random.default_rng(1)
    same = rng.uniform(0.2, 0.8, 400)
    _segment(log_dir, name, "1", "production", same[:200], 2.0, now + 0.5)
    _segment(log_dir, name, "2", "canary", same[200:260], 80.0, now + 0.5)  # slow, same answers
    counter = G.CanaryCounter(log_dir)
    since = now + 0.1
    for i in range(100):
        counter.add(name, "2", since, error=i % 10 == 0)  # 10% raised
    counter.add(name, "2", now - 100, error=True)  # a load from before this canary: not counted
    counter.write()
    verdict = G.evaluate(log_dir, name, "2", "1", now, POLICY, now + 5)
    checks = {c.name: c for c in verdict.checks}
    assert checks["error_rate"].passed is False and checks["error_rate"].value == pytest.approx(0.1)
    assert checks["error_rate"].measured == {"requests": 100, "errors": 10}
    assert checks["p99_latency_ms"].passed is False and checks["p99_latency_ms"].value == 80.0
    assert checks["prediction_shift"].passed is True


def test_a_good_canary_is_not_rolled_back_and_becomes_ready_after_the_hold(registry, store, tmp_path: Path) -> None:
    client, name = _champion_and_candidate(registry, store)
    P.approve(client, store, name, 2, reviewer="bob", compliance_required=False)
    C.start(client, store, name, 2, 0.1, actor="bob", compliance_required=False, policy=POLICY)
    log_dir, now = tmp_path / "serving", time.time()
    assert C.tick(client, store, name, log_dir, POLICY, now=now)["action"] == "waiting"  # no data: no verdict
    rng = np.random.default_rng(2)
    _segment(log_dir, name, "1", "production", rng.uniform(0.2, 0.8, 300), 2.0, now + 0.5)
    _segment(log_dir, name, "2", "canary", rng.uniform(0.2, 0.8, 80), 2.5, now + 0.5)
    assert C.tick(client, store, name, log_dir, POLICY, now=now + 5)["action"] == "waiting"  # no error counts yet
    counter = G.CanaryCounter(log_dir)
    for _ in range(80):
        counter.add(name, "2", now + 0.2, error=False)
    counter.write()
    held = G.CanaryPolicy(min_requests=40, window_seconds=120, hold_seconds=3600)
    assert C.tick(client, store, name, log_dir, held, now=now + 5)["action"] == "waiting"  # not held long enough
    result = C.tick(client, store, name, log_dir, POLICY, now=now + 5)
    assert result["action"] == "ready"
    assert P.alias_target(client, name, T.ALIAS_CANARY) == "2"  # still serving: a person promotes
    assert C.tick(client, store, name, log_dir, POLICY, now=now + 6)["action"] == "held"  # recorded once
    assert len(store.list_audit(action=C.READY_ACTION)) == 1
    assert C.status(client, store, name, log_dir, POLICY, now=now + 6)["state"] == "ready"
    P.promote(client, store, name, 2, actor="bob", compliance_required=False)  # the human act
    assert P.alias_target(client, name, T.ALIAS_PRODUCTION) == "2"
    assert C.stop(client, store, name, actor="bob", reason="promoted") is True
    assert C.status(client, store, name, log_dir, POLICY)["state"] == "stopped"


def test_a_canary_alias_set_by_hand_is_removed(registry, store, tmp_path: Path) -> None:
    client, name = _champion_and_candidate(registry, store)
    client.set_registered_model_alias(name, T.ALIAS_CANARY, "2")  # no approval, no record
    result = C.tick(client, store, name, tmp_path, POLICY)
    assert result == {"action": "rollback", "version": "2", "unrecorded": True}
    assert P.alias_target(client, name, T.ALIAS_CANARY) is None

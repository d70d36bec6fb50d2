"""Decisions, deployments and drift events in a real SQLite store, each with its audit entry."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, UTC
from pathlib import Path

import pytest

from mlops_assets.governance.records import DecisionState, GovernanceError
from mlops_assets.governance.store import GovernanceStore

KEY = b"s" * 32


@pytest.fixture()
def store(tmp_path: Path) -> GovernanceStore:
    return GovernanceStore(f"sqlite:///{tmp_path / 'governance.db'}", KEY, tmp_path / "audit.head")


def _actions(store: GovernanceStore) -> list[str]:
    return [e.action for e in store.list_audit(limit=None, newest_first=False)]


def test_review_flow_and_pending_promotions(store: GovernanceStore) -> None:
    assert store.state("model", "m", 1) is None
    store.submit("model", "m", 1, actor="alice", comment="ready")
    approved = store.approve("model", "m", "1", actor="bob", owner="alice",
                             checklist={"evaluation_passed": True})
    assert approved.state is DecisionState.APPROVED and approved.checklist == {"evaluation_passed": True}
    store.approve("model", "m", 2, actor="bob", owner="alice")  # approval without a prior submission
    store.submit("prompt", "m", 1, actor="alice")  # another kind, same name
    assert [(d.name, d.version) for d in store.pending_promotions()] == [("m", "1"), ("m", "2")]
    assert store.pending_promotions("prompt") == []

    store.record_deployment(name="m", alias="production", version=1, previous_version=None, actor="sensor",
                            consume_approval=True)
    assert [d.version for d in store.pending_promotions()] == ["2"]
    consumed = store.latest_decision("model", "m", 1)
    assert consumed.consumed and consumed.promoted_at is not None
    again = store.mark_promoted("model", "m", 1, actor="sensor")  # idempotent
    assert again.promoted_at == consumed.promoted_at
    assert _actions(store) == ["decision.in_review", "decision.approved", "decision.approved",
                               "decision.in_review", "deployment.promotion", "decision.promoted"]
    history = store.decision_history("model", "m", 1)
    assert [d.state for d in history] == [DecisionState.IN_REVIEW, DecisionState.APPROVED]
    audit = store.list_audit(subject_kind="model", subject_id="m/1", newest_first=False)
    assert audit[1].details["from"] == "IN_REVIEW" and audit[1].details["owner"] == "alice"
    assert store.verify_audit().ok


def test_four_eyes_and_checklist_refusals_write_nothing(store: GovernanceStore) -> None:
    store.submit("model", "m", 1, actor="alice")
    with pytest.raises(GovernanceError, match="may not approve") as info:
        store.approve("model", "m", 1, actor="alice", owner="alice")
    assert info.value.field == "actor"
    with pytest.raises(GovernanceError, match="owner .* unknown"):
        store.approve("model", "m", 1, actor="bob", owner=None)
    with pytest.raises(GovernanceError, match="checklist items failed: compliance_passed"):
        store.approve("model", "m", 1, actor="bob", owner="alice",
                      checklist={"evaluation_passed": True, "compliance_passed": False})
    with pytest.raises(GovernanceError, match="kind must be one of"):
        store.submit("dataset", "m", 1, actor="alice")
    assert store.state("model", "m", 1) is DecisionState.IN_REVIEW
    assert _actions(store) == ["decision.in_review"]


def test_rejected_needs_resubmission_and_archived_is_final(store: GovernanceStore) -> None:
    store.approve("model", "m", 1, actor="bob", owner="alice")
    store.reject("model", "m", 1, actor="carol", comment="leaks future data")  # revokes the approval
    assert store.pending_promotions() == []
    with pytest.raises(GovernanceError, match="REJECTED; cannot move it to APPROVED .*submit it") as info:
        store.approve("model", "m", 1, actor="bob", owner="alice")
    assert info.value.field == "state"
    with pytest.raises(GovernanceError, match="comment"):
        store.reject("model", "m", 2, actor="carol", comment="")
    store.submit("model", "m", 1, actor="alice", comment="fixed the leak")
    store.approve("model", "m", 1, actor="bob", owner="alice")
    store.archive("model", "m", 1, actor="alice", comment="superseded")
    for attempt in (lambda: store.submit("model", "m", 1, actor="alice"),
                    lambda: store.archive("model", "m", 1, actor="alice")):
        with pytest.raises(GovernanceError, match="ARCHIVED"):
            attempt()
    with pytest.raises(GovernanceError, match="not APPROVED"):
        store.mark_promoted("model", "m", 1, actor="sensor")


def test_deployments_history(store: GovernanceStore) -> None:
    first = store.record_deployment(name="m", alias="production", version=1, previous_version=None,
                                    actor="sensor", reason="first", checklist={"approval_passed": True})
    store.record_deployment(name="m", alias="staging", version=2, previous_version=None, actor="dagster")
    store.record_deployment(name="m", alias="production", version=2, previous_version=1, actor="sensor")
    store.record_deployment(name="m", alias="production", version=1, previous_version=2, actor="oncall",
                            reason="latency", kind="rollback")
    store.record_deployment(name="other", alias="production", version=7, previous_version=None,
                            actor="sensor")
    prod = store.list_deployments("m", alias="production")
    assert [(d.kind, d.version, d.previous_version) for d in prod] == [
        ("rollback", "1", "2"), ("promotion", "2", "1"), ("promotion", "1", None)]
    assert len(store.list_deployments()) == 5 and len(store.list_deployments("m", limit=2)) == 2
    assert store.get_deployment(first.id) == first and store.get_deployment(999) is None
    assert first.checklist == {"approval_passed": True} and first.to_dict()["ts"].endswith("+00:00")
    with pytest.raises(GovernanceError, match="kind must be one of"):
        store.record_deployment(name="m", alias="production", version=3, previous_version=1, actor="x",
                                kind="yolo")
    # nothing to consume: the deployment record is rolled back with it
    with pytest.raises(GovernanceError, match="not APPROVED"):
        store.record_deployment(name="m", alias="production", version=3, previous_version=1, actor="x",
                                consume_approval=True)
    assert len(store.list_deployments()) == 5
    assert _actions(store).count("deployment.promotion") == 4


def test_drift_events(store: GovernanceStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    a = store.record_drift_event(source="predictions", features=["ret_1d", "vol_20d"], drifted_share=0.5,
                                 severity="high", episode_id="ep1", details={"report": "drift.html"})
    store.record_drift_event(source="features", features=[], drifted_share=0.0, severity="none")
    b = store.record_drift_event(source="predictions", features=["ret_1d"], drifted_share=0.25,
                                 severity="medium", episode_id="ep1")
    assert store.last_drift_event("predictions") == b
    assert store.last_drift_event(episode_id="ep1") == b
    assert [e.id for e in store.list_drift_events("predictions")] == [b.id, a.id]
    assert len(store.list_drift_events(since=before)) == 3
    assert a.details == {"report": "drift.html"} and a.ts.tzinfo is UTC
    acted = store.set_drift_action(a.id, "retraining_run:abc", actor="sensor")
    assert acted.action_taken == "retraining_run:abc"
    assert store.list_drift_events("predictions")[-1].action_taken == "retraining_run:abc"
    with pytest.raises(GovernanceError, match="drifted_share"):
        store.record_drift_event(source="x", features=[], drifted_share=1.5, severity="high")
    with pytest.raises(GovernanceError, match="no drift event"):
        store.set_drift_action(999, "x", actor="sensor")
    with pytest.raises(GovernanceError, match="JSON"):  # the audit entry fails, so the event is not kept
        store.record_drift_event(source="x", features=[], drifted_share=0.1, severity="low",
                                 details={"p": float("inf")})
    assert len(store.list_drift_events(limit=None)) == 3
    assert _actions(store) == ["drift.event"] * 3 + ["drift.action"]


def test_second_store_shares_state_and_schema_is_idempotent(tmp_path: Path, store: GovernanceStore) -> None:
    store.submit("model", "m", 1, actor="alice")
    other = GovernanceStore(f"sqlite:///{tmp_path / 'governance.db'}", KEY, tmp_path / "audit.head")
    other.approve("model", "m", 1, actor="bob", owner="alice")
    assert store.state("model", "m", 1) is DecisionState.APPROVED
    assert store.verify_audit().ok and other.verify_audit().entries == 2
    with sqlite3.connect(tmp_path / "governance.db") as conn:  # the UNIQUE backstop against forks
        head = conn.execute("SELECT prev_hash FROM audit_log WHERE seq = 2").fetchone()[0]
        with pytest.raises(sqlite3.IntegrityError, match="prev_hash"):
            conn.execute("INSERT INTO audit_log VALUES (3, '2030-01-01', 'x', 'x', 'x', 'x', '{}', ?, "
                         "'h', 'h')", (head,))


def test_in_memory_store_and_bad_configuration() -> None:
    store = GovernanceStore("sqlite://", KEY)
    store.append_audit("alice", "test.event", "x", "1")
    assert store.verify_audit().ok  # no anchor configured: chain-only verification
    with pytest.raises(GovernanceError, match="not DuckDB"):
        GovernanceStore("duckdb:///x.duckdb", KEY)
    with pytest.raises(GovernanceError, match="16 bytes") as info:
        GovernanceStore("sqlite://", b"short")
    assert info.value.field == "hmac_key"

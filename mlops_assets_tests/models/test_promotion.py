"""Promotion, rollback, archive and the staging gate against a real MLflow SQLite registry."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from mlops_assets.governance.records import DecisionState, GovernanceError
from mlops_assets.governance.store import GovernanceStore
from mlops_assets.models import gates as G
from mlops_assets.models import promotion as P
from mlops_assets.models import tags as T
from mlops_assets_tests.models import governed
from mlops_assets_tests.models.governed import KEY, register

registry, store = governed.registry, governed.store  # fixtures: a real MLflow registry, a governance store


def _register(registry, store, n: int, **kw):
    return register(registry, store, n, **kw)


def _promote(client: MlflowClient, store: GovernanceStore, name: str, version: int, **kw):
    return P.promote(client, store, name, version, actor="sensor", compliance_required=False, **kw)


def _approve_and_promote(client: MlflowClient, store: GovernanceStore, name: str, version: int):
    P.approve(client, store, name, version, reviewer="bob", compliance_required=False)
    return _promote(client, store, name, version)


def test_approved_version_is_promoted_recorded_and_mirrored(registry, store) -> None:
    client, name = _register(registry, store, 1)
    decision = P.approve(client, store, name, 1, reviewer="bob", compliance_required=False, comment="lgtm")
    assert decision.checklist == {"version_exists": True, "not_archived": True, "not_rejected": True,
                                  "evaluation_passed": True, "reviewer_is_not_registerer": True,
                                  "record_verified": True, "mirror_matches_record": True}
    assert [d.version for d in store.pending_promotions()] == ["1"]
    deployment = _promote(client, store, name, 1, reason="approved by bob")
    assert P.alias_target(client, name, "production") == "1"
    assert (deployment.kind, deployment.version, deployment.previous_version, deployment.actor) == (
        "promotion", "1", None, "sensor")
    # the deployment records the values it checked, never a literal True
    evaluation = deployment.checklist["gates"]["evaluation"]
    assert (evaluation["passed"], evaluation["metric"], evaluation["value"], evaluation["threshold"]) == (
        True, "test_auc", 0.7, 0.5)
    assert deployment.checklist["approval"]["approved_by"] == "bob"
    assert deployment.checklist["approval"]["registered_by"] == "alice"
    assert store.pending_promotions() == []
    tags = client.get_model_version(name, "1").tags
    assert tags[T.TAG_APPROVAL_STATE] == "APPROVED" and tags[T.TAG_APPROVED_BY] == "bob"
    # idempotent: promoting the serving version again returns the recorded deployment
    assert _promote(client, store, name, 1) == deployment and len(store.list_deployments(name)) == 1
    actions = [e.action for e in store.list_audit(subject_id=f"{name}/1", newest_first=False)]
    assert actions == ["model.registered", "gate.evaluation", "decision.approved", "deployment.promotion",
                       "decision.promoted"]
    assert store.verify_audit().ok


def test_no_approval_means_no_promotion(registry, store) -> None:
    client, name = _register(registry, store, 1)
    with pytest.raises(P.PromotionRefused, match="not approved in the governance store") as info:
        _promote(client, store, name, 1)
    assert info.value.reasons == ["not approved in the governance store (state: no decision)"]
    P.submit_for_review(client, store, name, 1, actor="alice")
    with pytest.raises(P.PromotionRefused, match="state: IN_REVIEW"):
        _promote(client, store, name, 1)
    assert P.alias_target(client, name, "production") is None and store.list_deployments() == []


def test_self_approval_is_refused(registry, store) -> None:
    client, name = _register(registry, store, 1)
    checklist = P.approval_checklist(client, store, name, 1, "alice", compliance_required=False)
    assert checklist["reviewer_is_not_registerer"] is False
    with pytest.raises(P.PromotionRefused, match="reviewer_is_not_registerer"):
        P.approve(client, store, name, 1, reviewer="alice", compliance_required=False)
    with pytest.raises(GovernanceError, match="may not approve"):  # the store enforces it too
        store.approve("model", name, 1, actor="alice", owner="alice")
    assert store.state("model", name, 1) is None


def test_rejected_version_cannot_be_promoted(registry, store) -> None:
    client, name = _register(registry, store, 1)
    P.approve(client, store, name, 1, reviewer="bob", compliance_required=False)
    P.reject(client, store, name, 1, reviewer="carol", reason="look-ahead bias in a feature")
    assert client.get_model_version(name, "1").tags[T.TAG_REJECTED] == "true"
    with pytest.raises(P.PromotionRefused, match="rejected .look-ahead bias") as info:
        _promote(client, store, name, 1)
    assert any("not approved" in r for r in info.value.reasons)
    # a new submission clears the rejection mirror; it still needs a fresh approval
    P.submit_for_review(client, store, name, 1, actor="alice")
    assert T.TAG_REJECTED not in client.get_model_version(name, "1").tags
    assert _approve_and_promote(client, store, name, 1).version == "1"


@pytest.mark.parametrize("kw, compliance, expected", [
    ({"score": None}, False, "no evaluation result"),
    ({"score": 0.4}, False, "check 'evaluation' failed .test_auc=0.4 against threshold 0.5"),
    ({}, True, "no compliance result"),
    ({"compliance": {"drift_share": 0.9}}, True, "check 'drift_share' failed .drift_share is 0.9"),
])
def test_unknown_or_failed_gate_refuses(registry, store, kw, compliance, expected) -> None:
    client, name = _register(registry, store, 1, **kw)
    store.approve("model", name, 1, actor="bob", owner="alice")  # approved, but the gate is not confirmed
    with pytest.raises(P.PromotionRefused, match=expected):
        P.promote(client, store, name, 1, actor="sensor", compliance_required=compliance)
    assert P.alias_target(client, name, "production") is None


def test_missing_version_owner_or_gate_names_refuse(registry, store) -> None:
    client, name = _register(registry, store, 1, registered_by=None)
    store.approve("model", name, 1, actor="bob", owner="someone")
    with pytest.raises(P.PromotionRefused, match="four-eyes rule cannot be checked"):
        _promote(client, store, name, 1)
    with pytest.raises(P.PromotionRefused, match="does not exist"):
        _promote(client, store, name, 7)
    with pytest.raises(GovernanceError, match="unknown gates"):
        _promote(client, store, name, 1, require=("evaluation", "vibes"))
    with pytest.raises(GovernanceError, match="always requires"):
        _promote(client, store, name, 1, require=("evaluation",))
    # an explicit challenger alias may skip approval, never the evaluation gate
    assert _promote(client, store, name, 1, alias="challenger", require=("evaluation",)).alias == "challenger"


def test_rollback_moves_back_and_is_recorded(registry, store) -> None:
    client, name = _register(registry, store, 3)
    _approve_and_promote(client, store, name, 1)
    second = _approve_and_promote(client, store, name, 2)
    assert second.previous_version == "1"
    with pytest.raises(P.PromotionRefused, match="never deployed to 'production'"):
        P.rollback(client, store, name, 3, actor="oncall", reason="x")
    with pytest.raises(P.PromotionRefused, match="already points at version 2"):
        P.rollback(client, store, name, 2, actor="oncall", reason="x")
    with pytest.raises(GovernanceError, match="needs a reason"):
        P.rollback(client, store, name, 1, actor="oncall", reason=" ")
    back = P.rollback(client, store, name, 1, actor="oncall", reason="p99 latency doubled")
    assert P.alias_target(client, name, "production") == "1"
    assert (back.kind, back.version, back.previous_version) == ("rollback", "1", "2")
    assert back.reason == "p99 latency doubled"
    history = store.list_deployments(name, alias="production")
    assert [(d.kind, d.version, d.previous_version) for d in history] == [
        ("rollback", "1", "2"), ("promotion", "2", "1"), ("promotion", "1", None)]
    assert store.list_audit(limit=1)[0].action == "deployment.rollback"
    # a version rejected after it served cannot be rolled back to
    P.reject(client, store, name, 2, reviewer="carol", reason="wrong labels")
    with pytest.raises(P.PromotionRefused, match="rejected"):
        P.rollback(client, store, name, 2, actor="oncall", reason="x")


def test_staging_gate_archive_and_failed_record_restores_alias(registry, store) -> None:
    client, name = _register(registry, store, 3, compliance=True)
    G.record_evaluation(client, store, name, 3, "test_auc", 0.3, 0.5)  # re-evaluated: now fails
    staged = P.set_gate_alias(client, store, name, 2, compliance_required=True)
    assert (staged.alias, P.alias_target(client, name, "staging")) == ("staging", "2")
    assert staged.checklist["gates"]["compliance"]["values"] == {"drift_share": 0.1}
    assert store.state("model", name, 2) is DecisionState.IN_REVIEW
    with pytest.raises(P.PromotionRefused, match="check 'evaluation' failed .test_auc=0.3"):
        P.set_gate_alias(client, store, name, 3, compliance_required=False)
    with pytest.raises(GovernanceError, match="use promote"):
        P.set_gate_alias(client, store, name, 1, "production", compliance_required=False)

    _approve_and_promote(client, store, name, 1)
    with pytest.raises(P.PromotionRefused, match="serves alias 'production'"):
        P.archive(client, store, name, 1, actor="alice", reason="old")
    P.archive(client, store, name, 2, actor="alice", reason="superseded")
    assert P.alias_target(client, name, "staging") is None
    assert client.get_model_version(name, "2").tags[T.TAG_ARCHIVED] == "true"
    with pytest.raises(P.PromotionRefused, match="archived"):
        P.set_gate_alias(client, store, name, 2, compliance_required=True)

    class FailingStore(GovernanceStore):
        def record_deployment(self, **kwargs):
            raise GovernanceError("disk full")

    failing = FailingStore(store.url, KEY, store.anchor_path)
    G.record_evaluation(client, store, name, 3, "test_auc", 0.8, 0.5)  # passes again
    P.approve(client, failing, name, 3, reviewer="bob", compliance_required=True)
    with pytest.raises(GovernanceError, match="disk full"):
        P.promote(client, failing, name, 3, actor="sensor", compliance_required=True)
    assert P.alias_target(client, name, "production") == "1"  # put back
    assert store.verify_audit().ok

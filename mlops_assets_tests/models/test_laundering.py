"""The findings of the adversarial probe, reproduced against a real MLflow SQLite registry and a real
SQLite governance store (tampering through the plain ``sqlite3`` module and the MLflow client, as
someone with file or registry access would), and the governed exceptions (waivers)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mlops_assets.errors import Conflict, Forbidden, InvalidInput
from mlops_assets.governance.store import GovernanceStore
from mlops_assets.models import gates as G
from mlops_assets.models import promotion as P
from mlops_assets.models import tags as T
from mlops_assets_tests.models import governed
from mlops_assets_tests.models.governed import register

registry, store = governed.registry, governed.store  # fixtures: a real MLflow registry, a governance store


def _db(store: GovernanceStore) -> Path:
    return Path(store.url.removeprefix("sqlite:///"))


def _sql(store: GovernanceStore, statement: str, params: tuple = ()) -> None:
    with sqlite3.connect(_db(store)) as conn:
        conn.execute(statement, params)


def test_flipped_mlflow_tags_do_not_launder_a_failed_version(registry, store) -> None:
    client, name = register(registry, store, 1, score=0.596, threshold=0.99)
    assert client.get_model_version(name, "1").tags[T.TAG_REJECTED] == "true"
    # the probe: delete `rejected`, set the passed tags, rewrite `registered_by`
    client.delete_model_version_tag(name, "1", T.TAG_REJECTED)
    client.set_model_version_tag(name, "1", T.TAG_EVALUATION_PASSED, "true")
    client.set_model_version_tag(name, "1", T.TAG_COMPLIANCE_PASSED, "true")
    client.set_model_version_tag(name, "1", T.TAG_REGISTERED_BY, "mallory")
    with pytest.raises(P.PromotionRefused) as info:
        P.approve(client, store, name, 1, reviewer="alice", compliance_required=False)
    reasons = " | ".join(info.value.reasons)
    assert isinstance(info.value, Conflict)
    assert "check 'evaluation' failed (test_auc=0.596 against threshold 0.99)" in reasons
    assert "MLflow tag 'evaluation.passed' is 'true' but the governance store records 'false'" in reasons
    assert "MLflow tag 'rejected' is absent but the governance store records 'true'" in reasons
    assert "MLflow tag 'registered_by' is 'mallory' but the governance store records 'alice'" in reasons
    assert "MLflow tag 'compliance.passed' is 'true' but the governance store records nothing" in reasons
    assert "reviewer_is_not_registerer" in reasons  # alice registered it: the tag rewrite changes nothing
    # even an approval written straight to the store does not move production
    store.approve("model", name, 1, actor="bob", owner="alice")
    with pytest.raises(P.PromotionRefused, match="'evaluation.passed' is 'true' but the governance store"):
        P.promote(client, store, name, 1, actor="sensor", compliance_required=False)
    assert P.alias_target(client, name, "production") is None
    # restoring the mirror from the record does not help either: the record says fail
    G.sync_mirror(client, store, name, 1)
    with pytest.raises(P.PromotionRefused, match="check 'evaluation' failed") as info:
        P.promote(client, store, name, 1, actor="sensor", compliance_required=False)
    assert not any("MLflow tag" in r for r in info.value.reasons)


def test_stricter_policy_in_force_rechecks_the_recorded_value(registry, store) -> None:
    client, name = register(registry, store, 1, score=0.55, threshold=0.5)
    P.approve(client, store, name, 1, reviewer="bob", compliance_required=False)
    stricter = G.GatePolicy(compliance_required=False, evaluation_threshold=0.6)
    with pytest.raises(P.PromotionRefused, match="test_auc=0.55 against threshold 0.6"):
        P.promote(client, store, name, 1, actor="sensor", compliance_required=False, policy=stricter)
    assert P.promote(client, store, name, 1, actor="sensor", compliance_required=False).version == "1"


def test_hand_inserted_approval_is_refused_and_reported(registry, store) -> None:
    client, name = register(registry, store, 1)
    P.submit_for_review(client, store, name, 1, actor="alice")
    _sql(store, "INSERT INTO decisions (kind, name, version, state, actor, comment, checklist, ts, consumed) "
                "VALUES ('model', ?, '1', 'APPROVED', 'someone', NULL, NULL, '2030-01-01 00:00:00.000000', 0)",
         (name,))
    assert store.state("model", name, 1).value == "APPROVED"  # the row is there...
    with pytest.raises(P.PromotionRefused, match="decisions row .* has no audit entry"):
        P.promote(client, store, name, 1, actor="sensor", compliance_required=False)  # ...and refused
    assert P.alias_target(client, name, "production") is None
    result = store.verify_audit()
    assert not result.ok and "decisions row" in result.reason and "no audit entry" in result.reason
    # copying a genuine entry's seq into the forged row does not help
    _sql(store, "UPDATE decisions SET audit_seq = (SELECT MAX(seq) FROM audit_log) WHERE actor = 'someone'")
    assert "inserted by hand" in store.verify_audit().reason or "latest entry" in store.verify_audit().reason


def test_edited_deployment_and_deleted_gate_row_are_detected(registry, store) -> None:
    client, name = register(registry, store, 2)
    P.approve(client, store, name, 1, reviewer="bob", compliance_required=False)
    P.promote(client, store, name, 1, actor="sensor", compliance_required=False)
    assert store.verify_audit().ok
    _sql(store, "UPDATE deployments SET version = '2' WHERE name = ?", (name,))
    result = store.verify_audit()
    assert not result.ok and "deployments row 1 differs from what audit entry" in result.reason
    _sql(store, "UPDATE deployments SET version = '1' WHERE name = ?", (name,))
    assert store.verify_audit().ok  # put back exactly: verifies again
    _sql(store, "DELETE FROM gate_results WHERE name = ? AND version = '2'", (name,))
    result = store.verify_audit()
    assert not result.ok and "gate_results row" in result.reason and "missing (deleted)" in result.reason
    with pytest.raises(P.PromotionRefused, match="missing .deleted.") as info:
        P.approve(client, store, name, 2, reviewer="bob", compliance_required=False)
    assert any("no evaluation result" in r for r in info.value.reasons)


def test_rolled_back_consumed_flag_is_detected(registry, store) -> None:
    client, name = register(registry, store, 1)
    P.approve(client, store, name, 1, reviewer="bob", compliance_required=False)
    P.promote(client, store, name, 1, actor="sensor", compliance_required=False)
    first = store.list_audit(subject_id=f"{name}/1", action="decision.approved")[0]
    # re-arm the approval: unconsumed, and pointing back at the entry that wrote it unconsumed
    _sql(store, "UPDATE decisions SET consumed = 0, promoted_at = NULL, audit_seq = ? WHERE name = ?",
         (first.seq, name))
    assert "rolled back or rewritten" in store.verify_audit().reason


@pytest.mark.parametrize("registerer, reviewer", [("dagster", "Dagster"), ("Alice", " alice "),
                                                  ("bob  smith", "Bob Smith")])
def test_case_and_space_variants_are_the_same_person(registry, store, registerer, reviewer) -> None:
    client, name = register(registry, store, 1, registered_by=registerer)
    with pytest.raises(P.PromotionRefused, match="reviewer_is_not_registerer"):
        P.approve(client, store, name, 1, reviewer=reviewer, compliance_required=False)
    with pytest.raises(Conflict, match="may not approve"):  # the store enforces it too
        store.approve("model", name, 1, actor=reviewer, owner=registerer)
    assert store.state("model", name, 1) is None


def test_registerer_is_recorded_once(registry, store) -> None:
    client, name = register(registry, store, 1, registered_by="Alice ")
    assert store.registration(name, 1).registered_by == "alice"
    assert store.record_registration(name=name, version=1, registered_by="ALICE", actor="x").registered_by == "alice"
    with pytest.raises(Conflict, match="cannot be re-registered as 'mallory'"):
        store.record_registration(name=name, version=1, registered_by="mallory", actor="mallory")


def test_waiver_lets_a_non_critical_failure_through_and_is_audited(registry, store) -> None:
    client, name = register(registry, store, 1, compliance={"drift_share": 0.62})
    with pytest.raises(P.PromotionRefused, match="check 'drift_share' failed"):
        P.approve(client, store, name, 1, reviewer="bob", compliance_required=True)
    with pytest.raises(P.PromotionRefused, match="check 'drift_share' failed"):
        P.set_gate_alias(client, store, name, 1, compliance_required=True)
    with pytest.raises(Forbidden, match="needs one of the roles"):
        P.approve(client, store, name, 1, reviewer="bob", compliance_required=True, role="viewer",
                  waivers={"drift_share": "regime change after the rate decision; retrain scheduled"})
    with pytest.raises(InvalidInput, match="'fairness:dp' did not fail"):
        P.approve(client, store, name, 1, reviewer="bob", compliance_required=True,
                  waivers={"drift_share": "x", "fairness:dp": "y"})
    why = "regime change after the rate decision; retrain scheduled"
    decision = P.approve(client, store, name, 1, reviewer="bob", compliance_required=True, role="Approver",
                         waivers={"drift_share": why})
    assert decision.waivers == {"drift_share": why}
    entry = store.list_audit(subject_id=f"{name}/1", action="decision.approved")[0]
    assert entry.actor == "bob" and entry.details["waivers"] == {"drift_share": why}
    assert client.get_model_version(name, "1").tags[T.TAG_APPROVAL_WAIVERS] == "drift_share"
    assert P.waivers_of(store, name, 1)["waivers"] == {"drift_share": why}
    # the one alias mover sees the waiver in the store: staging, then production
    staged = P.set_gate_alias(client, store, name, 1, compliance_required=True)
    assert staged.checklist["waivers"] == {"drift_share": why}
    deployed = P.promote(client, store, name, 1, actor="sensor", compliance_required=True)
    assert deployed.checklist["gates"]["compliance"]["values"]["drift_share"] == 0.62
    assert deployed.checklist["gates"]["compliance"]["passed_with_waivers"] is True
    assert store.verify_audit().ok


def test_critical_check_cannot_be_waived(registry, store) -> None:
    client, name = register(registry, store, 1, score=0.45, compliance={"max_drawdown": 0.61, "min_sharpe": -0.2})
    with pytest.raises(P.PromotionRefused) as info:
        P.approve(client, store, name, 1, reviewer="bob", compliance_required=True,
                  waivers={"evaluation": "close enough", "max_drawdown": "one bad month", "min_sharpe": "ok"})
    assert info.value.field == "waive"
    assert [r.split(" is critical")[0] for r in info.value.reasons] == ["check 'evaluation'", "check 'max_drawdown'"]
    assert store.state("model", name, 1) is None
    # a configured list is the policy in force: min_sharpe made critical refuses too
    policy = G.GatePolicy(critical_checks=("min_sharpe",))
    client, name = register(registry, store, 1, compliance={"min_sharpe": -0.2})
    with pytest.raises(P.PromotionRefused, match="'min_sharpe' is critical"):
        P.approve(client, store, name, 1, reviewer="bob", compliance_required=True, policy=policy,
                  waivers={"min_sharpe": "ok"})
    # a waiver given under a laxer policy does not survive a stricter one at promotion time
    P.approve(client, store, name, 1, reviewer="bob", compliance_required=True, waivers={"min_sharpe": "ok"})
    with pytest.raises(P.PromotionRefused, match="'min_sharpe' failed .* critical, so its waiver does not count"):
        P.promote(client, store, name, 1, actor="sensor", compliance_required=True, policy=policy)

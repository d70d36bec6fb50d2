"""The one place that moves a serving alias, and the approval workflow that feeds it.

Every function here re-checks its gate at the moment of acting and refuses (``PromotionRefused``, a
``Conflict``, with every reason) when it cannot *confirm* a pass from the governance store: a
missing record or an unknown registerer is a refusal, not a pass. MLflow tags only mirror the
store for the UI and are never trusted: when a tag disagrees with the record (``evaluation.passed``,
``compliance.passed``, ``rejected``, ``registered_by``) the move is refused, naming the difference.
The governed rows of the version (decisions, gate results, registration, deployments) must each
be bound to an intact audit entry (``GovernanceStore.subject_problems``), so a row inserted or
edited with a plain SQL client refuses the move too.

Rules decided here:

* ``promote`` needs: the version exists, is not archived or rejected (store), its recorded
  evaluation result passes under the policy in force (``gates.GatePolicy``), its compliance result
  passes when compliance is required, the latest decision is APPROVED, and the approver is not
  the recorded registerer (identities compared normalised). A failing non-critical check passes
  only when the approval waived it. Promoting the version the alias already serves is idempotent
  when the store already records it. ``require`` can drop the approval gate only for
  non-production aliases (``challenger``).
* If recording the deployment fails after the alias moved, the alias is put back and the error
  re-raised.
* ``rollback`` only goes to a version that was deployed to the same alias before, is not the
  current one, is not archived or rejected since, and whose recorded gates still hold; a reason
  is required.
* ``archive`` refuses a version that serves a protected alias (``production``). Other aliases
  pointing at it are removed, and the removal is audited.
* ``set_gate_alias`` (the automated ``staging`` move) reads the recorded gate results itself (no
  caller-supplied verdicts), refuses the production alias, and submits the version for review when
  it has no decision yet.
* ``approve`` may carry waivers (``{check: reason}``) for failing non-critical checks; a waiver
  needs the approver role or above when a role is given, and a critical check refuses, named.

What a version's record holds and what is derived from it (the trust problems, the approval
checklist, the deployment evidence) is read in ``version_record``; this module acts on it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops_assets.errors import Forbidden, InvalidInput
from mlops_assets.governance.records import (
    Decision,
    DecisionState,
    Deployment,
    GovernanceError,
    normalize_identity,
)
from mlops_assets.governance.store import GovernanceStore
from mlops_assets.models import gates as G
from mlops_assets.models import tags as T
from mlops_assets.models.version_record import (
    NOT_FOUND,
    VersionRecord,
    evidence,
    gate_reasons,
    mirror_tags,
    policy_in_force,
    reviewer_checklist,
    version_tags,
)

log = logging.getLogger(__name__)

GATES = ("evaluation", "approval")


class PromotionRefused(GovernanceError):
    """An alias move (or approval) was refused; ``reasons`` lists every check that did not pass.

    A ``GovernanceError``, so a ``Conflict`` (HTTP 409, CLI exit 4)."""

    def __init__(self, action: str, name: str, version: str, reasons: Iterable[str], field: str = "version") -> None:
        self.action, self.name, self.version, self.reasons = action, name, str(version), list(reasons)
        super().__init__(f"refused to {action} {name} version {version}: " + "; ".join(self.reasons),
                         field=field)


# --- reading the registry and the record ----------------------------------------------------


def alias_target(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or ``None``."""
    try:
        target = client.get_registered_model(name).aliases.get(alias)
    except MlflowException as exc:
        if exc.error_code == NOT_FOUND:
            return None
        raise
    return None if target is None else str(target)


def _record(client: MlflowClient, store: GovernanceStore, action: str, name: str,
            version: str) -> VersionRecord:
    """The version's record; ``PromotionRefused`` when the registry has no such version."""
    record = VersionRecord.read(client, store, name, version)
    if record is None:
        raise PromotionRefused(action, name, version, ["the version does not exist in the registry"])
    return record


def _require_tags(client: MlflowClient, action: str, name: str, version: str) -> dict[str, str]:
    tags = version_tags(client, name, version)
    if tags is None:
        raise PromotionRefused(action, name, version, ["the version does not exist in the registry"])
    return tags


# --- approvals -----------------------------------------------------------------------------


def approval_checklist(client: MlflowClient, store: GovernanceStore, name: str, version: str | int,
                       reviewer: str, *, compliance_required: bool, policy: G.GatePolicy | None = None,
                       waivers: Mapping[str, str] | None = None) -> dict[str, bool]:
    """What a reviewer's approval depends on, read from the store; every item must be true."""
    version = str(version)
    record = VersionRecord.read(client, store, name, version)
    if record is None:
        return {"version_exists": False, "not_archived": False, "not_rejected": False,
                "evaluation_passed": False, **({"compliance_passed": False} if compliance_required else {}),
                "reviewer_is_not_registerer": False}
    review = G.review_gates(record.gates, policy_in_force(policy, compliance_required),
                            waivers=waivers if waivers is not None else record.waivers)
    return reviewer_checklist(record, review, reviewer, compliance_required)


def waivers_of(store: GovernanceStore, name: str, version: str | int) -> dict[str, Any]:
    """The governed exceptions of a version's approval, for reports and the API: who, when, what."""
    decision = store.latest_decision("model", name, str(version))
    if decision is None or not decision.waivers:
        return {}
    return {"approved_by": decision.actor, "state": decision.state.value, "ts": decision.ts.isoformat(),
            "waivers": dict(decision.waivers)}


def submit_for_review(client: MlflowClient, store: GovernanceStore, name: str, version: str | int, *,
                      actor: str, comment: str | None = None) -> Decision:
    """Put a version in review (first time, or again after a rejection)."""
    version = str(version)
    _require_tags(client, "submit", name, version)
    decision = store.submit("model", name, version, actor=actor, comment=comment)
    evaluation = store.gate_results(name, version).get(G.GATE_EVALUATION)
    still_failed = evaluation is not None and not evaluation.passed
    mirror_tags(client, name, version, {T.TAG_APPROVAL_STATE: DecisionState.IN_REVIEW.value,
                                        **({} if still_failed else {T.TAG_REJECTED: None, T.TAG_REJECTED_REASON: None})})
    return decision


def _check_waivers(action: str, name: str, version: str, waivers: Mapping[str, str], review: G.GateReview,
                   policy: G.GatePolicy, role: str | None) -> None:
    if role is not None and normalize_identity(role) not in G.WAIVER_ROLES:
        raise Forbidden("role", f"waiving a check needs one of the roles {G.WAIVER_ROLES}; the caller is "
                                f"{role!r}")
    empty = [c for c, why in waivers.items() if not str(why or "").strip()]
    if empty:
        raise InvalidInput("reason", [f"the waiver of {c!r} needs a reason" for c in empty])
    critical = G.unwaivable(waivers, policy)
    if critical:
        raise PromotionRefused(action, name, version, [
            f"check {c!r} is critical and cannot be waived (critical checks: {', '.join(policy.critical_checks)})"
            for c in critical], field="waive")
    not_failing = [c for c in waivers if c not in review.failing]
    if not_failing:
        raise InvalidInput("waive", [f"check {c!r} did not fail, so there is nothing to waive "
                                     f"(failing checks: {review.failing or 'none'})" for c in not_failing])


def approve(client: MlflowClient, store: GovernanceStore, name: str, version: str | int, *, reviewer: str,
            compliance_required: bool, comment: str | None = None, waivers: Mapping[str, str] | None = None,
            policy: G.GatePolicy | None = None, role: str | None = None) -> Decision:
    """Approve a version for production after re-checking the record (``approval_checklist``).

    ``waivers`` (``{check: reason}``) approve a version that fails non-critical checks; they are
    recorded with the approval (audited) and honoured by the alias mover. ``role`` (the caller's
    role, where the caller has one) must be approver or above to waive.
    """
    version, waivers = str(version), {str(k).strip(): v for k, v in (waivers or {}).items()}
    policy = policy_in_force(policy, compliance_required)
    record = _record(client, store, "approve", name, version)
    review = G.review_gates(record.gates, policy, waivers=waivers)
    if waivers:
        _check_waivers("approve", name, version, waivers, review, policy, role)
    checklist = reviewer_checklist(record, review, reviewer, compliance_required)
    failed = [item for item, ok in checklist.items() if not ok]
    if failed:
        raise PromotionRefused("approve", name, version, [f"checklist item failed: {item}" for item in failed]
                               + review.reasons + record.untrusted())
    decision = store.approve("model", name, version, actor=reviewer, owner=record.registration.registered_by,
                             comment=comment, checklist=checklist, waivers=waivers or None)
    mirror = {T.TAG_APPROVAL_STATE: DecisionState.APPROVED.value, T.TAG_APPROVED_BY: reviewer}
    if waivers:
        mirror[T.TAG_APPROVAL_WAIVERS] = ", ".join(sorted(waivers))
    mirror_tags(client, name, version, mirror)
    return decision


def reject(client: MlflowClient, store: GovernanceStore, name: str, version: str | int, *, reviewer: str,
           reason: str) -> Decision:
    """Reject a version (also revokes an approval). It does not move aliases: roll back if it serves."""
    version = str(version)
    _require_tags(client, "reject", name, version)
    decision = store.reject("model", name, version, actor=reviewer, comment=reason)
    mirror_tags(client, name, version, {T.TAG_APPROVAL_STATE: DecisionState.REJECTED.value,
                                        T.TAG_REJECTED: "true", T.TAG_REJECTED_REASON: reason[:5000]})
    return decision


# --- alias moves ---------------------------------------------------------------------------


def move_alias(client: MlflowClient, store: GovernanceStore, *, name: str, alias: str, version: str,
               previous: str | None, actor: str, reason: str | None, checklist: dict[str, Any], kind: str,
               consume_approval: bool) -> Deployment:
    """Set the alias, record it; if recording fails, put the alias back and re-raise."""
    client.set_registered_model_alias(name, alias, version)
    try:
        return store.record_deployment(name=name, alias=alias, version=version, previous_version=previous,
                                       actor=actor, reason=reason, checklist=checklist, kind=kind,
                                       consume_approval=consume_approval)
    except Exception:
        try:
            if previous is None:
                client.delete_registered_model_alias(name, alias)
            else:
                client.set_registered_model_alias(name, alias, previous)
        except MlflowException:
            log.exception("could not restore alias %s of %s to %s after a failed record",
                          alias, name, previous)
        raise


def already_serving(store: GovernanceStore, name: str, alias: str, version: str) -> Deployment | None:
    last = store.list_deployments(name, alias=alias, limit=1)
    return last[0] if last and last[0].version == version else None


def promote(client: MlflowClient, store: GovernanceStore, name: str, version: str | int,
            alias: str = T.ALIAS_PRODUCTION, *, actor: str, reason: str | None = None,
            require: Iterable[str] = GATES, compliance_required: bool,
            production_alias: str = T.ALIAS_PRODUCTION, policy: G.GatePolicy | None = None,
            details: Mapping[str, Any] | None = None) -> Deployment:
    """Move ``alias`` to ``version`` after re-checking every gate in ``require``; consume the approval.

    ``details`` are recorded in the deployment's checklist beside the evidence (e.g. a canary's
    traffic share), so they are bound to the audit entry that records the move.

    ``require`` may drop gates only for aliases other than ``production_alias`` (e.g. a
    ``challenger``); production always needs both evaluation and approval. ``policy`` is the policy
    in force (``gates.gate_policy(settings)``); by default the recorded thresholds and the default
    critical checks.
    """
    version, require = str(version), tuple(require)
    unknown = set(require) - set(GATES)
    if unknown:
        raise GovernanceError(f"require has unknown gates {sorted(unknown)}; use any of {GATES}",
                              field="require")
    if alias == production_alias and set(require) != set(GATES):
        raise GovernanceError(f"promotion to {alias!r} always requires {GATES}; got {require}",
                              field="require")
    action = f"promote to {alias!r}"
    record = _record(client, store, action, name, version)
    reasons, review = gate_reasons(record, policy_in_force(policy, compliance_required),
                                   "evaluation" in require)
    if "approval" in require:
        reasons += record.approval_reasons()
    if reasons:
        raise PromotionRefused(action, name, version, reasons)
    decision = record.decision
    consume = "approval" in require and decision is not None and not decision.consumed
    previous = alias_target(client, name, alias)
    if previous == version and (done := already_serving(store, name, alias, version)) is not None:
        if consume:
            store.mark_promoted("model", name, version, actor=actor)
        return done
    checklist = {**dict(details or {}), **evidence(record, review, "approval" in require)}
    deployment = move_alias(client, store, name=name, alias=alias, version=version, previous=previous,
                            actor=actor, reason=reason, checklist=checklist,
                            kind="promotion", consume_approval=consume)
    if decision is not None and "approval" in require:
        mirror_tags(client, name, version,
                    {T.TAG_APPROVAL_STATE: decision.state.value, T.TAG_APPROVED_BY: decision.actor})
    return deployment


def rollback(client: MlflowClient, store: GovernanceStore, name: str, to_version: str | int,
             alias: str = T.ALIAS_PRODUCTION, *, actor: str, reason: str, compliance_required: bool = False,
             policy: G.GatePolicy | None = None) -> Deployment:
    """Move ``alias`` back to a version it served before (not archived/rejected since, gates still hold)."""
    version = str(to_version)
    if not reason or not reason.strip():
        raise GovernanceError("a rollback needs a reason (what went wrong)", field="reason")
    action = f"roll back {alias!r} to"
    record = _record(client, store, action, name, version)
    reasons, review = gate_reasons(record, policy_in_force(policy, compliance_required), True)
    previous = alias_target(client, name, alias)
    if previous == version:
        reasons.append(f"alias {alias!r} already points at version {version}")
    if version not in {d.version for d in store.list_deployments(name, alias=alias, limit=None)}:
        reasons.append(f"version {version} was never deployed to {alias!r}; promote it instead")
    if reasons:
        raise PromotionRefused(action, name, version, reasons)
    checklist = {**evidence(record, review, False), "previously_deployed_to": alias}
    return move_alias(client, store, name=name, alias=alias, version=version, previous=previous, actor=actor,
                      reason=reason, checklist=checklist, kind="rollback", consume_approval=False)


def remove_alias(client: MlflowClient, store: GovernanceStore, name: str, alias: str, version: str | int, *,
                 actor: str, reason: str, details: Mapping[str, Any] | None = None,
                 protected_aliases: Iterable[str] = (T.ALIAS_PRODUCTION,)) -> bool:
    """Take ``alias`` off ``version`` (e.g. a canary leaving traffic); audited as ``alias.removed``.

    Removing traffic from a version is never refused by a gate: it is how a failing version is
    stopped. It refuses a protected alias (``production`` is only ever moved, never emptied) and acts
    only while ``alias`` still points at ``version`` (``False`` otherwise: someone moved it first).
    If the audit entry cannot be written the alias is put back and the error re-raised.
    """
    version = str(version)
    if not reason or not reason.strip():
        raise GovernanceError("removing an alias needs a reason", field="reason")
    if alias in set(protected_aliases):
        raise GovernanceError(f"alias {alias!r} is protected: roll it back to another version instead",
                              field="alias")
    if alias_target(client, name, alias) != version:
        return False
    client.delete_registered_model_alias(name, alias)
    try:
        store.append_audit(actor, "alias.removed", "model", f"{name}/{version}",
                           {**dict(details or {}), "alias": alias, "why": reason})
    except Exception:
        try:
            client.set_registered_model_alias(name, alias, version)
        except MlflowException:
            log.exception("could not restore alias %s of %s to %s after a failed record", alias, name, version)
        raise
    return True


def archive(client: MlflowClient, store: GovernanceStore, name: str, version: str | int, *, actor: str,
            reason: str, protected_aliases: Iterable[str] = (T.ALIAS_PRODUCTION,)) -> Decision:
    """Retire a version: ARCHIVED in the store, tag ``archived``, and drop its non-protected aliases."""
    version = str(version)
    _require_tags(client, "archive", name, version)
    aliases = list(client.get_model_version(name, version).aliases or [])
    serving = [a for a in aliases if a in set(protected_aliases)]
    if serving:
        raise PromotionRefused("archive", name, version, [
            f"it serves alias {a!r}; roll back or promote another version first" for a in serving])
    decision = store.archive("model", name, version, actor=actor, comment=reason)
    for alias in aliases:
        client.delete_registered_model_alias(name, alias)
        store.append_audit(actor, "alias.removed", "model", f"{name}/{version}",
                           {"alias": alias, "why": "archived"})
    mirror_tags(client, name, version,
                {T.TAG_ARCHIVED: "true", T.TAG_APPROVAL_STATE: DecisionState.ARCHIVED.value})
    return decision


def set_gate_alias(client: MlflowClient, store: GovernanceStore, name: str, version: str | int,
                   alias: str = T.ALIAS_STAGING, *, actor: str = "dagster", compliance_required: bool,
                   production_alias: str = T.ALIAS_PRODUCTION, submit: bool = True,
                   policy: G.GatePolicy | None = None) -> Deployment:
    """The automated move behind the evaluation (and compliance) gate, e.g. to ``staging``.

    It reads the gate results the evaluation recorded in the governance store (never a verdict from
    its caller, never the tags). With ``submit``, a version without a decision is put in review.
    """
    version = str(version)
    if alias == production_alias:
        raise GovernanceError(f"set_gate_alias does not move {alias!r}; use promote() (needs approval)",
                              field="alias")
    action = f"set {alias!r} on"
    record = _record(client, store, action, name, version)
    reasons, review = gate_reasons(record, policy_in_force(policy, compliance_required), True)
    if reasons:
        raise PromotionRefused(action, name, version, reasons)
    previous = alias_target(client, name, alias)
    deployment = already_serving(store, name, alias, version) if previous == version else None
    if deployment is None:
        deployment = move_alias(client, store, name=name, alias=alias, version=version, previous=previous,
                                actor=actor, reason="passed the automated gate",
                                checklist=evidence(record, review, False), kind="promotion",
                                consume_approval=False)
    if submit and record.decision is None:
        submit_for_review(client, store, name, version, actor=actor, comment=f"passed the gate to {alias!r}")
    return deployment

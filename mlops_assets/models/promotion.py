"""The one place that moves a serving alias, and the approval workflow that feeds it.

Every function here re-checks its gate at the moment of acting and refuses (``PromotionRefused``,
with every reason) when it cannot *confirm* a pass: a missing tag or an unknown owner is a refusal,
not a pass. Decisions are written to the governance store (the source of truth) first or together
with the alias move; MLflow tags only mirror them for the UI, and a failure to mirror is logged,
not raised.

Rules decided here:

* ``promote`` needs: the version exists, is not archived or rejected (store or tag), tag
  ``evaluation.passed == "true"``, ``compliance.passed == "true"`` when compliance is required,
  the store's latest decision is APPROVED, and the approver is not the ``registered_by`` tag (which
  must exist). Promoting the version the alias already serves is idempotent when the store already
  records it. ``require`` can drop the approval gate only for non-production aliases
  (``challenger``).
* If recording the deployment fails after the alias moved (e.g. the approval was revoked in the
  meantime), the alias is put back to where it was and the error re-raised.
* ``rollback`` only goes to a version that was deployed to the same alias before, is not the
  current one, and is not archived or rejected since; a reason is required.
* ``archive`` refuses a version that serves a protected alias (``production``): roll back or
  promote another version first. Other aliases pointing at it (``staging``, ``challenger``) are
  removed, and the removal is audited.
* ``set_gate_alias`` (the automated ``staging`` move) refuses the production alias, and submits the
  version for review when it has no decision yet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops_assets.governance.records import Decision, DecisionState, Deployment, GovernanceError
from mlops_assets.governance.store import GovernanceStore
from mlops_assets.models import tags as T

log = logging.getLogger(__name__)

GATES = ("evaluation", "approval")
_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


class PromotionRefused(GovernanceError):
    """An alias move (or approval) was refused; ``reasons`` lists every check that did not pass."""

    def __init__(self, action: str, name: str, version: str, reasons: Iterable[str]) -> None:
        self.action, self.name, self.version, self.reasons = action, name, str(version), list(reasons)
        super().__init__(f"refused to {action} {name} version {version}: " + "; ".join(self.reasons),
                         field="version")


# --- reading the registry ------------------------------------------------------------------


def _version_tags(client: MlflowClient, name: str, version: str) -> dict[str, str] | None:
    """The version's tags, or ``None`` if the model or version does not exist."""
    try:
        return dict(client.get_model_version(name, version).tags or {})
    except MlflowException as exc:
        if exc.error_code == _NOT_FOUND:
            return None
        raise


def alias_target(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or ``None``."""
    try:
        target = client.get_registered_model(name).aliases.get(alias)
    except MlflowException as exc:
        if exc.error_code == _NOT_FOUND:
            return None
        raise
    return None if target is None else str(target)


def _is_true(tags: Mapping[str, str], key: str) -> bool:
    return str(tags.get(key, "")).strip().lower() == "true"


def _tag_reason(tags: Mapping[str, str], key: str) -> list[str]:
    if _is_true(tags, key):
        return []
    value = tags.get(key)
    return [f"tag '{key}' is missing, so the gate result is unknown" if value is None
            else f"tag '{key}' is {value!r}, not 'true'"]


def _retired_reasons(tags: Mapping[str, str], decision: Decision | None) -> list[str]:
    reasons = []
    if _is_true(tags, T.TAG_ARCHIVED) or (decision and decision.state is DecisionState.ARCHIVED):
        reasons.append("the version is archived")
    if _is_true(tags, T.TAG_REJECTED) or (decision and decision.state is DecisionState.REJECTED):
        why = f" ({decision.comment})" if decision and decision.comment else ""
        reasons.append(f"the version was rejected{why}")
    return reasons


def _approval_reasons(tags: Mapping[str, str], decision: Decision | None) -> list[str]:
    reasons = []
    if decision is None or decision.state is not DecisionState.APPROVED:
        state = decision.state.value if decision else "no decision"
        reasons.append(f"not approved in the governance store (state: {state})")
    owner = tags.get(T.TAG_REGISTERED_BY)
    if not owner:
        reasons.append(f"tag '{T.TAG_REGISTERED_BY}' is missing, so the four-eyes rule cannot be checked")
    elif decision is not None and decision.state is DecisionState.APPROVED and decision.actor == owner:
        reasons.append(f"approved by its own registerer {owner!r}")
    return reasons


def _mirror(client: MlflowClient, name: str, version: str, values: Mapping[str, str | None]) -> None:
    """Mirror decisions to version tags (``None`` deletes); the store stays the source of truth."""
    for key, value in values.items():
        try:
            if value is None:
                client.delete_model_version_tag(name, version, key)
            else:
                client.set_model_version_tag(name, version, key, value)
        except MlflowException as exc:
            if value is not None or exc.error_code != _NOT_FOUND:
                log.warning("could not mirror tag %s on %s v%s: %s", key, name, version, exc)


def _require_tags(client: MlflowClient, action: str, name: str, version: str) -> dict[str, str]:
    tags = _version_tags(client, name, version)
    if tags is None:
        raise PromotionRefused(action, name, version, ["the version does not exist in the registry"])
    return tags


# --- approvals -----------------------------------------------------------------------------


def approval_checklist(client: MlflowClient, store: GovernanceStore, name: str, version: str | int,
                       reviewer: str, *, compliance_required: bool) -> dict[str, bool]:
    """What a reviewer's approval depends on; every item must be true."""
    version = str(version)
    tags = _version_tags(client, name, version)
    decision = store.latest_decision("model", name, version)
    found = tags is not None
    tags = tags or {}
    state = decision.state if decision else None
    checklist = {
        "version_exists": found,
        "not_archived": found and not _is_true(tags, T.TAG_ARCHIVED) and state is not DecisionState.ARCHIVED,
        "not_rejected": found and not _is_true(tags, T.TAG_REJECTED) and state is not DecisionState.REJECTED,
        "evaluation_passed": _is_true(tags, T.TAG_EVALUATION_PASSED),
    }
    if compliance_required:
        checklist["compliance_passed"] = _is_true(tags, T.TAG_COMPLIANCE_PASSED)
    owner = tags.get(T.TAG_REGISTERED_BY)
    checklist["reviewer_is_not_registerer"] = bool(owner) and owner != reviewer
    return checklist


def submit_for_review(client: MlflowClient, store: GovernanceStore, name: str, version: str | int, *,
                      actor: str, comment: str | None = None) -> Decision:
    """Put a version in review (first time, or again after a rejection)."""
    version = str(version)
    _require_tags(client, "submit", name, version)
    decision = store.submit("model", name, version, actor=actor, comment=comment)
    _mirror(client, name, version, {T.TAG_APPROVAL_STATE: DecisionState.IN_REVIEW.value,
                                    T.TAG_REJECTED: None, T.TAG_REJECTED_REASON: None})
    return decision


def approve(client: MlflowClient, store: GovernanceStore, name: str, version: str | int, *, reviewer: str,
            compliance_required: bool, comment: str | None = None) -> Decision:
    """Approve a version for production after re-checking ``approval_checklist``."""
    version = str(version)
    checklist = approval_checklist(client, store, name, version, reviewer,
                                   compliance_required=compliance_required)
    failed = [item for item, ok in checklist.items() if not ok]
    if failed:
        raise PromotionRefused("approve", name, version,
                               [f"checklist item failed: {item}" for item in failed])
    owner = _require_tags(client, "approve", name, version).get(T.TAG_REGISTERED_BY)
    decision = store.approve("model", name, version, actor=reviewer, owner=owner, comment=comment,
                             checklist=checklist)
    _mirror(client, name, version,
            {T.TAG_APPROVAL_STATE: DecisionState.APPROVED.value, T.TAG_APPROVED_BY: reviewer})
    return decision


def reject(client: MlflowClient, store: GovernanceStore, name: str, version: str | int, *, reviewer: str,
           reason: str) -> Decision:
    """Reject a version (also revokes an approval). It does not move aliases: roll back if it serves."""
    version = str(version)
    _require_tags(client, "reject", name, version)
    decision = store.reject("model", name, version, actor=reviewer, comment=reason)
    _mirror(client, name, version, {T.TAG_APPROVAL_STATE: DecisionState.REJECTED.value,
                                    T.TAG_REJECTED: "true", T.TAG_REJECTED_REASON: reason[:5000]})
    return decision


# --- alias moves ---------------------------------------------------------------------------


def _move_alias(client: MlflowClient, store: GovernanceStore, *, name: str, alias: str, version: str,
                previous: str | None, actor: str, reason: str | None, checklist: dict[str, bool], kind: str,
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


def _already_serving(store: GovernanceStore, name: str, alias: str, version: str) -> Deployment | None:
    last = store.list_deployments(name, alias=alias, limit=1)
    return last[0] if last and last[0].version == version else None


def promote(client: MlflowClient, store: GovernanceStore, name: str, version: str | int,
            alias: str = T.ALIAS_PRODUCTION, *, actor: str, reason: str | None = None,
            require: Iterable[str] = GATES, compliance_required: bool,
            production_alias: str = T.ALIAS_PRODUCTION) -> Deployment:
    """Move ``alias`` to ``version`` after re-checking every gate in ``require``; consume the approval.

    ``require`` may drop gates only for aliases other than ``production_alias`` (e.g. a
    ``challenger``); production always needs both evaluation and approval.
    """
    version, require = str(version), tuple(require)
    unknown = set(require) - set(GATES)
    if unknown:
        raise GovernanceError(f"require has unknown gates {sorted(unknown)}; use any of {GATES}",
                              field="require")
    if alias == production_alias and set(require) != set(GATES):
        raise GovernanceError(f"promotion to {alias!r} always requires {GATES}; got {require}",
                              field="require")
    tags = _require_tags(client, "promote", name, version)
    decision = store.latest_decision("model", name, version)
    reasons = _retired_reasons(tags, decision)
    if "evaluation" in require:
        reasons += _tag_reason(tags, T.TAG_EVALUATION_PASSED)
    if compliance_required:
        reasons += _tag_reason(tags, T.TAG_COMPLIANCE_PASSED)
    if "approval" in require:
        reasons += _approval_reasons(tags, decision)
    if reasons:
        raise PromotionRefused(f"promote to {alias!r}", name, version, reasons)
    consume = "approval" in require and decision is not None and not decision.consumed
    previous = alias_target(client, name, alias)
    if previous == version and (done := _already_serving(store, name, alias, version)) is not None:
        if consume:
            store.mark_promoted("model", name, version, actor=actor)
        return done
    checklist = {"version_exists": True, "not_archived": True, "not_rejected": True}
    checklist.update({f"{gate}_passed": True for gate in require})
    if compliance_required:
        checklist["compliance_passed"] = True
    if "approval" in require:
        checklist["approver_is_not_registerer"] = True
    deployment = _move_alias(client, store, name=name, alias=alias, version=version, previous=previous,
                             actor=actor, reason=reason, checklist=checklist, kind="promotion",
                             consume_approval=consume)
    if decision is not None and "approval" in require:
        _mirror(client, name, version,
                {T.TAG_APPROVAL_STATE: decision.state.value, T.TAG_APPROVED_BY: decision.actor})
    return deployment


def rollback(client: MlflowClient, store: GovernanceStore, name: str, to_version: str | int,
             alias: str = T.ALIAS_PRODUCTION, *, actor: str, reason: str) -> Deployment:
    """Move ``alias`` back to a version it served before (and that is not archived/rejected since)."""
    version = str(to_version)
    if not reason or not reason.strip():
        raise GovernanceError("a rollback needs a reason (what went wrong)", field="reason")
    tags = _require_tags(client, "roll back to", name, version)
    reasons = _retired_reasons(tags, store.latest_decision("model", name, version))
    previous = alias_target(client, name, alias)
    if previous == version:
        reasons.append(f"alias {alias!r} already points at version {version}")
    if version not in {d.version for d in store.list_deployments(name, alias=alias, limit=None)}:
        reasons.append(f"version {version} was never deployed to {alias!r}; promote it instead")
    if reasons:
        raise PromotionRefused(f"roll back {alias!r} to", name, version, reasons)
    checklist = {"version_exists": True, "not_archived": True, "not_rejected": True,
                 "previously_deployed": True}
    return _move_alias(client, store, name=name, alias=alias, version=version, previous=previous, actor=actor,
                       reason=reason, checklist=checklist, kind="rollback", consume_approval=False)


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
    _mirror(client, name, version,
            {T.TAG_ARCHIVED: "true", T.TAG_APPROVAL_STATE: DecisionState.ARCHIVED.value})
    return decision


def set_gate_alias(client: MlflowClient, store: GovernanceStore, name: str, version: str | int,
                   alias: str = T.ALIAS_STAGING, *, actor: str = "dagster", evaluation_passed: bool,
                   compliance_passed: bool | None, production_alias: str = T.ALIAS_PRODUCTION,
                   submit: bool = True) -> Deployment:
    """The automated move behind the evaluation (and compliance) gate, e.g. to ``staging``.

    ``evaluation_passed``/``compliance_passed`` are the gate results the caller computed;
    ``compliance_passed=None`` means compliance is not required. Both the results and the version's
    tags must say pass. With ``submit``, a version without a decision is put in review.
    """
    version = str(version)
    if alias == production_alias:
        raise GovernanceError(f"set_gate_alias does not move {alias!r}; use promote() (needs approval)",
                              field="alias")
    tags = _require_tags(client, f"set {alias!r} on", name, version)
    decision = store.latest_decision("model", name, version)
    reasons = _retired_reasons(tags, decision)
    if not evaluation_passed:
        reasons.append("the evaluation gate did not pass")
    reasons += _tag_reason(tags, T.TAG_EVALUATION_PASSED)
    if compliance_passed is not None:
        if not compliance_passed:
            reasons.append("the compliance gate did not pass")
        reasons += _tag_reason(tags, T.TAG_COMPLIANCE_PASSED)
    if reasons:
        raise PromotionRefused(f"set {alias!r} on", name, version, reasons)
    previous = alias_target(client, name, alias)
    deployment = _already_serving(store, name, alias, version) if previous == version else None
    if deployment is None:
        checklist = {"version_exists": True, "not_archived": True, "not_rejected": True,
                     "evaluation_passed": True}
        if compliance_passed is not None:
            checklist["compliance_passed"] = True
        deployment = _move_alias(client, store, name=name, alias=alias, version=version, previous=previous,
                                 actor=actor, reason="passed the automated gate", checklist=checklist,
                                 kind="promotion", consume_approval=False)
    if submit and decision is None:
        submit_for_review(client, store, name, version, actor=actor, comment=f"passed the gate to {alias!r}")
    return deployment

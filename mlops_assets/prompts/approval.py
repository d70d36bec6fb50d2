"""Approval, rejection, promotion and rollback of prompt versions (the rules are in :mod:`.workflow`'s
docstring): the store records the decision, the MLflow prompt registry mirrors it, and every move of the
``production`` alias is audited."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mlops_assets.errors import InvalidInput
from mlops_assets.governance.records import Decision, DecisionState, GovernanceError
from mlops_assets.models.tags import ALIAS_PRODUCTION
from mlops_assets.prompts import records as R
from mlops_assets.prompts.library import PromptTemplate, content_hash
from mlops_assets.prompts.records import (KIND, EvaluationRecord, PromptDeployment, Stores, SubmissionRecord,
                                          find_template, open_stores)
from mlops_assets.prompts.registry import (current_alias_version, find_prompt_version, get_prompt_version,
                                           set_production_alias, set_prompt_state, sync_prompt)
from mlops_assets.prompts.workflow import ApprovalPolicy, PromptWorkflowError, current_template

if TYPE_CHECKING:
    from mlops_assets.settings import Settings

log = logging.getLogger(__name__)


def _evaluation_reasons(evaluation: EvaluationRecord | None, risk_level: str, policy: ApprovalPolicy,
                        template_id: str) -> list[str]:
    if evaluation is None:
        return [f"the submitted content was never evaluated; run `mlops prompts evaluate {template_id}`"]
    if not evaluation.passed:
        return [f"its latest evaluation (audit entry {evaluation.audit_seq}) failed blocking checks: "
                f"{', '.join(evaluation.blocking_failures)}"]
    if risk_level in policy.model_checks_required_for and not evaluation.model_checks:
        return [f"risk level {risk_level} needs an evaluation that ran the golden set through the model; "
                "evaluate with an LLM backend configured (OPENAI_API_KEY)"]
    return []


def approve_prompt(settings: Settings, template_id: str, version: str, *, reviewer: str,
                   comment: str | None = None, policy: ApprovalPolicy | None = None) -> Decision:
    """Approve a version in review and move ``production`` to it (see the module rules)."""
    policy = policy or ApprovalPolicy()
    version, reviewer = str(version), str(reviewer).strip()
    with open_stores(settings) as s:
        reasons: list[str] = []
        try:
            template: PromptTemplate | None = current_template(settings, template_id, version)
        except GovernanceError as exc:
            template = None
            reasons.append(str(exc))
        decision = s.store.latest_decision(KIND, template_id, version)
        if decision is None or decision.state is not DecisionState.IN_REVIEW:
            state = decision.state.value if decision else "not submitted"
            reasons.append(f"it is {state}, not IN_REVIEW; submit it first "
                           f"(`mlops prompts submit {template_id}`)")
        submission = R.latest_submission(s.store, template_id, version)
        if submission is None:
            reasons.append("no submission of its content is on record; submit it")
        else:
            if template is not None and content_hash(template) != submission.content_hash:
                reasons.append(f"the file changed since submission (submitted "
                               f"{submission.content_hash[:12]}, now {content_hash(template)[:12]}); "
                               "bump the version and submit again")
            evaluation = R.latest_evaluation(s.store, template_id, version, submission.content_hash)
            reasons += _evaluation_reasons(evaluation, submission.risk_level, policy, template_id)
            if reviewer == submission.owner:
                reasons.append(f"{reviewer} owns the template; ask another reviewer (four eyes)")
            if reviewer == submission.actor:
                reasons.append(f"{reviewer} submitted this version; ask another reviewer (four eyes)")
        if reasons:
            raise PromptWorkflowError("approve", template_id, version, reasons)
        assert submission is not None
        checklist = {"in_review": True, "content_unchanged_since_submission": True, "evaluation_passed": True,
                     "reviewer_is_not_owner": True, "reviewer_is_not_submitter": True}
        approved = s.store.approve(KIND, template_id, version, actor=reviewer, owner=submission.owner,
                                   comment=comment, checklist=checklist)
        try:
            _promote(s, template_id, version, actor=reviewer, reason=comment or "approved", kind="promotion",
                     policy=policy)
        except Exception as exc:
            raise GovernanceError(f"prompt {template_id} version {version} is APPROVED but production did "
                                  f"not move ({type(exc).__name__}: {exc}); retry with `mlops prompts "
                                  f"promote {template_id} {version}`", field="production") from exc
    return approved


def _registered_version(s: Stores, submission: SubmissionRecord) -> int:
    """The MLflow version holding the submitted content (registered from the audit record if missing)."""
    found = find_prompt_version(s.client, submission.template_id, submission.content_hash)
    if found is not None:
        return found.mlflow_version
    return sync_prompt(s.client, submission.to_template(), DecisionState.APPROVED.value).mlflow_version


def _promote(s: Stores, template_id: str, version: str, *, actor: str, reason: str | None, kind: str,
             policy: ApprovalPolicy, alias: str = ALIAS_PRODUCTION) -> PromptDeployment:
    reasons = []
    decision = s.store.latest_decision(KIND, template_id, version)
    if decision is None or decision.state is not DecisionState.APPROVED:
        reasons.append(f"it is {decision.state.value if decision else 'not submitted'}, not APPROVED")
    submission = R.latest_submission(s.store, template_id, version)
    if submission is None:
        reasons.append("no submission of its content is on record")
    else:
        evaluation = R.latest_evaluation(s.store, template_id, version, submission.content_hash)
        reasons += _evaluation_reasons(evaluation, submission.risk_level, policy, template_id)
    if kind == "rollback" and not any(d.version == version for d in R.deployments(s.store, template_id)):
        reasons.append(f"it never served {alias}; roll back only to a version that did "
                       "(see `mlops prompts status`)")
    if reasons:
        action = "roll back to" if kind == "rollback" else "promote"
        raise PromptWorkflowError(action, template_id, version, reasons)
    assert submission is not None
    target = _registered_version(s, submission)
    current = current_alias_version(s.client, template_id, alias)
    if current == target:
        if kind == "rollback":
            raise PromptWorkflowError("roll back to", template_id, version, [f"it already serves {alias}"])
        previous_records = [d for d in R.deployments(s.store, template_id) if d.mlflow_version == target]
        if previous_records:
            return previous_records[0]  # idempotent: already promoted and recorded
    set_prompt_state(s.client, template_id, target, DecisionState.APPROVED.value)
    previous = set_production_alias(s.client, template_id, target, alias=alias)
    previous_semver = get_prompt_version(s.client, template_id, previous).semver if previous else None
    return R.record_deployment(s.store, template_id=template_id, version=version, mlflow_version=target,
                               content_hash=submission.content_hash, previous_version=previous_semver,
                               previous_mlflow_version=previous, kind=kind, actor=actor, reason=reason,
                               alias=alias)


def promote_prompt(settings: Settings, template_id: str, version: str, *, actor: str,
                   reason: str | None = None, policy: ApprovalPolicy | None = None) -> PromptDeployment:
    """Point ``prompts:/<id>@production`` at an APPROVED, evaluated version; audited and idempotent."""
    with open_stores(settings) as s:
        return _promote(s, template_id, str(version), actor=actor, reason=reason, kind="promotion",
                        policy=policy or ApprovalPolicy())


def rollback_prompt(settings: Settings, template_id: str, to_version: str, *, actor: str, reason: str,
                    policy: ApprovalPolicy | None = None) -> PromptDeployment:
    """Move production back to ``to_version``: still APPROVED, served production before; audited."""
    if not str(reason or "").strip():
        raise InvalidInput("reason", "a rollback needs a reason")
    with open_stores(settings) as s:
        return _promote(s, template_id, str(to_version), actor=actor, reason=reason, kind="rollback",
                        policy=policy or ApprovalPolicy())


def _require_known(settings: Settings, s: Stores, template_id: str, version: str) -> None:
    """Raise ``NotFound`` (before anything is written) unless the library holds ``template_id`` or the
    store already has a decision about that version (a template whose file was since removed)."""
    if s.store.latest_decision(KIND, template_id, version) is not None:
        return
    find_template(settings.prompts_dir, template_id)  # NotFound for a template nobody ever wrote


def reject_prompt(settings: Settings, template_id: str, version: str, *, reviewer: str,
                  reason: str) -> Decision:
    """Reject a version (also revokes an approval); MLflow tags mirror it, failures to mirror are logged."""
    version = str(version)
    with open_stores(settings) as s:
        _require_known(settings, s, template_id, version)
        decision = s.store.reject(KIND, template_id, version, actor=reviewer, comment=reason)
        submission = R.latest_submission(s.store, template_id, version)
        try:
            from mlops_assets.prompts.registry import list_prompt_versions

            for registered in list_prompt_versions(s.client, template_id):
                same = (registered.content_hash == submission.content_hash if submission
                        else registered.semver == version)
                if same:
                    set_prompt_state(s.client, template_id, registered.mlflow_version,
                                     DecisionState.REJECTED.value)
        except Exception as exc:  # the store is the source of truth; the tag is only a mirror
            log.warning("could not mirror the rejection of %s %s to MLflow: %s", template_id, version, exc)
    return decision

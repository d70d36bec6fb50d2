"""The prompt approval workflow: submit and evaluate here; approve (moves production), reject and roll
back in :mod:`.approval`.

The governance store is the single source of truth for each template version's state (kind
``prompt``, name = template id, version = the file's semantic version); every version is also
registered in the MLflow prompt registry (deduplicated by content hash) whose ``approval.state``
tag mirrors the store. What approval depends on (the submitted content, each evaluation's outcome)
and every move of the ``production`` alias are audit entries (:mod:`.prompt_records`).

Rules decided here:

* ``submit``: the library file must hold that version. From no state or REJECTED it records
  IN_REVIEW and the submitted content; submitting the same content again is a no-op (it re-syncs
  MLflow); a version IN_REVIEW or APPROVED with *other* content is refused — bump the version.
* ``evaluate``: :func:`~.evaluators.evaluate_template`, one MLflow run in experiment
  ``prompt-evaluations``, and an audit entry with the outcome for that content hash.
* ``approve`` refuses (all reasons at once) unless: the version is IN_REVIEW with a submission
  record; the file still holds exactly the submitted content; the latest evaluation of that
  content exists and failed no blocking check (and, for risk levels in
  ``ApprovalPolicy.model_checks_required_for``, ran the golden set through the model); the
  reviewer is neither the template's owner nor its submitter. Then the store records APPROVED
  and :func:`promote_prompt` moves ``prompts:/<id>@production`` to that version.
* ``promote`` (also the retry when an approval could not move the alias) re-checks the state and
  the evaluation; ``rollback`` moves production back to a version that is still APPROVED and
  served production before. Both are audited.
* ``reject`` records REJECTED (revoking an approval too) and mirrors it; a rejected production
  version is refused by the LLM wrapper at once (fail closed) — roll back to restore service.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_assets.prompts import records as R
from mlops_assets.prompts.evaluators import evaluate_template
from mlops_assets.prompts.policy import PromptEvaluation, PromptPolicy
from mlops_assets.prompts.records import (KIND, EvaluationRecord, Stores,
                                                    SubmissionRecord, find_template, open_stores)
from mlops_assets.prompts.registry import (find_prompt_version,
                                                     sync_prompt)
from mlops_assets.prompts.library import PromptTemplate, content_hash
from mlops_assets.governance.records import Decision, DecisionState, GovernanceError

if TYPE_CHECKING:
    from mlops_assets.settings import Settings

__all__ = ["ApprovalPolicy", "PromptWorkflowError", "PromptSubmission", "RecordedEvaluation", "Registration",
           "current_template", "evaluate_prompt", "register_prompt_version", "submit_prompt"]

log = logging.getLogger(__name__)
EVALUATION_EXPERIMENT = "prompt-evaluations"


class PromptWorkflowError(GovernanceError):
    """A workflow step was refused; ``reasons`` lists every rule that did not hold."""

    def __init__(self, action: str, template_id: str, version: str, reasons: list[str],
                 field: str = "version") -> None:
        self.action, self.template_id, self.version, self.reasons = action, template_id, str(version), reasons
        super().__init__(f"refused to {action} prompt {template_id} version {version}: " + "; ".join(reasons),
                         field=field)


@dataclass(frozen=True)
class ApprovalPolicy:
    """Who may approve what beyond the store's four-eyes rule."""

    model_checks_required_for: tuple[str, ...] = ("high",)


class RecordedEvaluation(PromptEvaluation):
    """A :class:`PromptEvaluation` with where it was recorded."""

    mlflow_run_id: str | None = None
    audit_seq: int | None = None


@dataclass(frozen=True)
class PromptSubmission:
    """What :func:`submit_prompt` did: the decision, the submission record, the MLflow version."""

    decision: Decision
    submission: SubmissionRecord
    mlflow_version: int
    created: bool
    evaluation: EvaluationRecord | None

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision.to_dict(), "submission": self.submission.to_dict(),
                "mlflow_version": self.mlflow_version, "created": self.created,
                "evaluation": self.evaluation.to_dict() if self.evaluation else None}


def current_template(settings: Settings, template_id: str, version: str | None = None) -> PromptTemplate:
    """The template file of ``template_id`` in ``settings.prompts_dir``; it must hold ``version`` if given."""
    template = find_template(settings.prompts_dir, template_id)
    if version is not None and template.version != str(version):
        raise GovernanceError(f"the library holds {template_id} version {template.version}, not {version}; "
                              f"act on {template.version} or restore that file", field="version")
    return template


# --- registration and submission -------------------------------------------------------------------


def _state_for_content(s: Stores, template: PromptTemplate, digest: str) -> str:
    """The store's state for exactly this content, else IN_REVIEW (what MLflow should mirror)."""
    decision = s.store.latest_decision(KIND, template.id, template.version)
    submission = R.latest_submission(s.store, template.id, template.version)
    if decision is not None and submission is not None and submission.content_hash == digest:
        return decision.state.value
    return DecisionState.IN_REVIEW.value


@dataclass(frozen=True)
class Registration:
    """What :func:`register_prompt_version` found and did."""

    mlflow_version: int
    created: bool                     # a new MLflow prompt version was registered
    state: str                        # the state mirrored onto it
    submitted: bool                   # the version was submitted to the store now
    content_hash: str
    content_matches_submission: bool  # False: the file was edited after submission without a version bump


def register_prompt_version(settings: Settings, template: PromptTemplate, *, actor: str = "dagster",
                            submit_new: bool = True) -> Registration:
    """Sync ``template`` into MLflow (state mirrored from the store); submit it if it has no decision yet.

    Used by the ``prompt_templates`` asset.
    """
    digest = content_hash(template)
    with open_stores(settings) as s:
        decision = s.store.latest_decision(KIND, template.id, template.version)
        submitted = decision is None and submit_new
        if submitted:
            s.store.submit(KIND, template.id, template.version, actor=actor,
                           comment="registered from the library")
            state = DecisionState.IN_REVIEW.value
            sync = sync_prompt(s.client, template, state)
            R.record_submission(s.store, template, actor=actor, mlflow_version=sync.mlflow_version)
        else:
            state = _state_for_content(s, template, digest)
            sync = sync_prompt(s.client, template, state)
        submission = R.latest_submission(s.store, template.id, template.version)
        return Registration(sync.mlflow_version, sync.created, state, submitted, digest,
                            submission is not None and submission.content_hash == digest)


def submit_prompt(settings: Settings, template_id: str, version: str, *, actor: str,
                  comment: str | None = None, evaluate: bool = True, llm_client: Any = None,
                  policy: PromptPolicy | None = None, embedder: Any = None) -> PromptSubmission:
    """Submit the library's ``template_id`` at ``version`` for review (see the module rules).

    Evaluates the content too unless ``evaluate`` is False or it was already evaluated.
    """
    template = current_template(settings, template_id, version)
    digest = content_hash(template)
    with open_stores(settings) as s:
        decision = s.store.latest_decision(KIND, template_id, version)
        submission = R.latest_submission(s.store, template_id, version)
        state = decision.state if decision else None
        if state is DecisionState.ARCHIVED:
            raise PromptWorkflowError("submit", template_id, version,
                                      ["the version is archived; bump the version"])
        created = state in (None, DecisionState.REJECTED)
        if not created and submission is not None and submission.content_hash != digest:
            raise PromptWorkflowError("submit", template_id, version, [
                f"it is {state} with other content (submitted {submission.content_hash[:12]}, the file "
                f"now {digest[:12]}); bump `version` in the file and submit the new version"],
                field="content_hash")
        if created:
            decision = s.store.submit(KIND, template_id, version, actor=actor, comment=comment)
        assert decision is not None
        sync = sync_prompt(s.client, template, decision.state.value)
        if created or submission is None:
            submission = R.record_submission(s.store, template, actor=actor,
                                             mlflow_version=sync.mlflow_version, comment=comment)
    evaluation = None
    if evaluate:
        with open_stores(settings) as s:
            evaluation = R.latest_evaluation(s.store, template_id, version, digest)
        if evaluation is None or (llm_client is not None and not evaluation.model_checks):
            recorded = evaluate_prompt(settings, template, llm_client, policy=policy, embedder=embedder,
                                       actor=actor)
            with open_stores(settings) as s:
                evaluation = R.latest_evaluation(s.store, template_id, version, recorded.content_hash)
    return PromptSubmission(decision, submission, sync.mlflow_version, created, evaluation)


# --- evaluation ---------------------------------------------------------------------------------------


def _checks_markdown(evaluation: PromptEvaluation) -> str:
    lines = [f"# {evaluation.template_id} {evaluation.version} ({evaluation.risk_level} risk)", "",
             f"verdict: {'PASSED' if evaluation.passed else 'FAILED'}", "",
             "| check | result | blocking | value | threshold | message |", "|---|---|---|---|---|---|"]
    for c in evaluation.checks:
        result = "pass" if c.passed else "**FAIL**"
        message = c.message.replace("|", "/").replace("\n", " ")
        lines.append(f"| {c.name} | {result} | {c.blocking} | {c.value} | {c.threshold} | {message} |")
    return "\n".join(lines) + "\n"


def _log_evaluation_run(s: Stores, template: PromptTemplate, evaluation: PromptEvaluation,
                        policy: PromptPolicy) -> str:
    from mlflow.entities import Metric, Param, RunTag

    from mlops_assets.models.registry import ensure_experiment

    client = s.client
    experiment_id = ensure_experiment(client, EVALUATION_EXPERIMENT)
    tags = {"prompt.id": template.id, "prompt.version": template.version,
            "prompt.content_hash": evaluation.content_hash, "prompt.risk_level": template.risk_level,
            "prompt.owner": template.owner, "evaluation.passed": str(evaluation.passed).lower(),
            "evaluation.model_checks": str(bool(evaluation.cases)).lower()}
    run = client.create_run(experiment_id, tags=tags,
                            run_name=f"{template.id}-{template.version}-{evaluation.content_hash[:8]}")
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in evaluation.metrics.items() if math.isfinite(float(v))]
    metrics += [Metric(f"check.{c.name}", 1.0 if c.passed else 0.0, now, 0) for c in evaluation.checks]
    params = {"model": template.model_parameters.model, "temperature": template.model_parameters.temperature,
              "max_tokens": template.model_parameters.max_tokens, "golden_cases": len(template.golden_set),
              **{f"scorer.{k}": v for k, v in evaluation.scorers.items()}}
    try:
        client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        client.log_text(run_id, evaluation.model_dump_json(indent=2), "evaluation.json")
        client.log_text(run_id, _checks_markdown(evaluation), "checks.md")
        client.log_dict(run_id, policy.model_dump(mode="json"), "policy.json")
        client.log_dict(run_id, template.model_dump(mode="json"), "template.json")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def evaluate_prompt(settings: Settings, template: PromptTemplate, llm_client: Any = None, *,
                    policy: PromptPolicy | None = None, embedder: Any = None, actor: str = "evaluator",
                    use_moderation: bool | None = None) -> RecordedEvaluation:
    """Evaluate ``template``, log an MLflow run (experiment ``prompt-evaluations``) and record the outcome.

    ``llm_client`` (an ``openai.OpenAI``) adds the model checks; without it only the static and
    offline checks run. The outcome is an audit entry tied to the content hash, which approval reads.
    """
    policy = policy or PromptPolicy()
    evaluation = evaluate_template(template, llm_client, policy, embedder=embedder,
                                   use_moderation=use_moderation)
    with open_stores(settings) as s:
        run_id = _log_evaluation_run(s, template, evaluation, policy)
        registered = find_prompt_version(s.client, template.id, evaluation.content_hash)
        if registered is not None:  # mirror the outcome on the prompt version (for the MLflow UI)
            mirrored = {"evaluation.passed": str(evaluation.passed).lower(), "evaluation.run_id": run_id}
            for key, value in mirrored.items():
                s.client.set_prompt_version_tag(template.id, registered.mlflow_version, key, value)
        record = R.record_evaluation(s.store, evaluation, actor=actor, mlflow_run_id=run_id)
    return RecordedEvaluation.model_validate({**evaluation.model_dump(), "mlflow_run_id": run_id,
                                              "audit_seq": record.audit_seq})

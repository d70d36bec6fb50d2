"""The prompt approval workflow on a real governance store (SQLite) and MLflow prompt registry.

Four eyes, a failing blocking check, content edited after submission, approval moving production,
rollback to an earlier approved version, rejection mirrored, and every step in a verified audit log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from mlops_assets import stores
from mlops_assets.errors import InvalidInput, NotFound
from mlops_assets.prompts import records as R
from mlops_assets.prompts.policy import CHECK_OUTPUT_NUMBERS, PromptPolicy
from mlops_assets.prompts.registry import (current_alias_version, list_prompt_versions,
                                                     load_production_prompt)
from mlops_assets.prompts.library import content_hash, load_template
from mlops_assets.governance.records import DecisionState, GovernanceError
from mlops_assets.prompts.approval import approve_prompt, reject_prompt, rollback_prompt
from mlops_assets.prompts.status import diff_prompt, prompt_status
from mlops_assets.prompts.workflow import PromptWorkflowError, evaluate_prompt, submit_prompt
from mlops_assets.settings import Settings

pytest_plugins = ["mlops_assets_tests.conftest_llm"]

OWNER = "fx-desk@example.com"
# the fake server restates the figures, so ROUGE/contains against prose references are low by design
RELAXED = PromptPolicy.model_validate({"medium": {"min_rouge_l": 0.0, "min_contains_rate": 0.0},
                                       "high": {"min_rouge_l": 0.0, "min_contains_rate": 0.0}})


def template_data(template_id: str, version: str = "1.0.0", risk_level: str = "medium",
                  instruction: str = "Write one sentence on {{pair}}.") -> dict[str, Any]:
    return {
        "id": template_id, "version": version, "owner": OWNER, "description": "FX note",
        "risk_level": risk_level,
        "template": f"{instruction}\nFIGURES:\n{{{{figures}}}}\nSENTENCE:",
        "variables": {"pair": "currency pair", "figures": "'- name: value' lines"},
        "model_parameters": {"model": "fake-gpt", "max_tokens": 64},
        "golden_set": [
            {"name": f"case{i}",
             "inputs": {"pair": "EURUSD", "figures": f"- spot: 1.08{i}\n- change: 0.00{i + 1}"},
             "context": f"EURUSD spot was 1.08{i}. The change was 0.00{i + 1}.",
             "expected": {"output": f"EURUSD spot was 1.08{i}.", "contains": ["EURUSD"]}}
            for i in range(3)
        ],
    }


def write_template(prompts_dir: Path, data: dict[str, Any]) -> Path:
    path = prompts_dir / f"{data['id']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def make_settings(tmp_path: Path, tracking_uri: str) -> Settings:
    settings = Settings(home=tmp_path / "home", prompts_dir=tmp_path / "prompts", tracking_uri=tracking_uri)
    settings.ensure_dirs()
    settings.prompts_dir.mkdir(parents=True, exist_ok=True)
    return settings


@pytest.fixture()
def settings(tmp_path: Path, llm_tracking_uri: str) -> Settings:
    return make_settings(tmp_path, llm_tracking_uri)


def _actions(settings: Settings, template_id: str) -> list[str]:
    store = stores.governance_store(settings)
    entries = store.list_audit(limit=None, newest_first=False, subject_kind="prompt")
    return [e.action for e in entries if e.subject_id.startswith(f"{template_id}/")]


def test_workflow_rules_from_submission_to_rollback(settings: Settings, openai_client, fake_openai,
                                                    embedder) -> None:
    tid = "wf_rules"
    write_template(settings.prompts_dir, template_data(tid))
    submitted = submit_prompt(settings, tid, "1.0.0", actor="alice", comment="first draft", embedder=embedder)
    assert submitted.created and submitted.decision.state is DecisionState.IN_REVIEW
    assert submitted.evaluation is not None and submitted.evaluation.passed  # static + offline checks
    client = MlflowClient(settings.mlflow_tracking_uri)
    assert client.get_prompt_version(tid, 1).tags["approval.state"] == "IN_REVIEW"
    again = submit_prompt(settings, tid, "1.0.0", actor="alice", embedder=embedder)
    assert not again.created and again.submission.audit_seq == submitted.submission.audit_seq

    # the golden set through a model that changes a number: a blocking check fails, approval refused
    fake_openai.config.mode = "hallucinate"
    template = load_template(settings.prompts_dir / f"{tid}.yaml")
    bad = evaluate_prompt(settings, template, openai_client, policy=RELAXED, embedder=embedder, actor="ci")
    assert not bad.passed and CHECK_OUTPUT_NUMBERS in {c.name for c in bad.blocking_failures}
    assert bad.mlflow_run_id and client.get_run(bad.mlflow_run_id).data.tags["evaluation.passed"] == "false"
    with pytest.raises(PromptWorkflowError, match="failed blocking checks: .*output_numbers"):
        approve_prompt(settings, tid, "1.0.0", reviewer="bob", comment="looks fine")

    fake_openai.config.mode = "echo"
    good = evaluate_prompt(settings, template, openai_client, policy=RELAXED, embedder=embedder, actor="ci")
    assert good.passed, good.blocking_failures
    # four eyes: neither the owner nor the submitter may approve
    with pytest.raises(PromptWorkflowError, match="owns the template") as owner_err:
        approve_prompt(settings, tid, "1.0.0", reviewer=OWNER, comment=None)
    assert owner_err.value.field == "version"
    with pytest.raises(PromptWorkflowError, match="alice submitted this version"):
        approve_prompt(settings, tid, "1.0.0", reviewer="alice", comment=None)
    assert current_alias_version(client, tid) is None

    approved = approve_prompt(settings, tid, "1.0.0", reviewer="bob", comment="clear and grounded")
    assert approved.state is DecisionState.APPROVED and approved.actor == "bob"
    prod = load_production_prompt(settings.mlflow_tracking_uri, tid)
    assert (prod.mlflow_version, prod.semver, prod.state) == (1, "1.0.0", "APPROVED")

    # a new version, then an edit after submission without a version bump
    v2 = template_data(tid, "1.1.0", instruction="Write one short sentence on {{pair}}.")
    write_template(settings.prompts_dir, v2)
    submit_prompt(settings, tid, "1.1.0", actor="alice", embedder=embedder)
    edited = dict(v2, description="FX note, edited during review")
    write_template(settings.prompts_dir, edited)
    with pytest.raises(PromptWorkflowError, match="file changed since submission"):
        approve_prompt(settings, tid, "1.1.0", reviewer="bob", comment=None)
    with pytest.raises(PromptWorkflowError, match="bump `version`"):
        submit_prompt(settings, tid, "1.1.0", actor="alice", evaluate=False)
    write_template(settings.prompts_dir, v2)
    approve_prompt(settings, tid, "1.1.0", reviewer="bob", comment="shorter")
    assert current_alias_version(client, tid) == 2

    # roll back to the earlier approved version; not again, and not to one that never served
    rolled = rollback_prompt(settings, tid, "1.0.0", actor="carol", reason="desk prefers the long form")
    assert (rolled.kind, rolled.version, rolled.mlflow_version) == ("rollback", "1.0.0", 1)
    assert rolled.previous_version == "1.1.0" and rolled.previous_mlflow_version == 2
    assert current_alias_version(client, tid) == 1
    with pytest.raises(PromptWorkflowError, match="already serves production"):
        rollback_prompt(settings, tid, "1.0.0", actor="carol", reason="again")
    with pytest.raises(InvalidInput, match="needs a reason"):
        rollback_prompt(settings, tid, "1.1.0", actor="carol", reason=" ")

    rejected = reject_prompt(settings, tid, "1.1.0", reviewer="carol", reason="tone")
    assert rejected.state is DecisionState.REJECTED
    assert {v.semver: v.state for v in list_prompt_versions(client, tid)} == {"1.0.0": "APPROVED",
                                                                              "1.1.0": "REJECTED"}
    with pytest.raises(PromptWorkflowError, match="REJECTED, not APPROVED"):
        rollback_prompt(settings, tid, "1.1.0", actor="carol", reason="undo")

    status = {row["version"]: row for row in prompt_status(settings) if row["template_id"] == tid}
    assert status["1.0.0"]["state"] == "APPROVED" and status["1.0.0"]["production"]
    assert status["1.1.0"]["state"] == "REJECTED" and not status["1.1.0"]["production"]
    assert status["1.0.0"]["last_evaluation"]["passed"] and status["1.0.0"]["last_evaluation"]["model_checks"]
    assert status["1.1.0"]["in_library"] and not status["1.0.0"]["in_library"]
    diff = diff_prompt(settings, tid, "1.0.0", "1.1.0")  # 1.0.0 comes from its submission record
    assert "-Write one sentence on {{pair}}." in diff and "+Write one short sentence on {{pair}}." in diff
    assert "~ version: \"1.0.0\" -> \"1.1.0\"" in diff

    assert _actions(settings, tid) == [
        "decision.in_review", "prompt.submitted", "prompt.evaluated",   # submit (offline evaluation)
        "prompt.evaluated", "prompt.evaluated",                          # failed, then passed, with the model
        "decision.approved", "prompt.production_moved",                  # approval moves production
        "decision.in_review", "prompt.submitted", "prompt.evaluated",   # 1.1.0
        "decision.approved", "prompt.production_moved",
        "prompt.production_moved",                                       # rollback
        "decision.rejected",
    ]
    store = stores.governance_store(settings)
    assert store.verify_audit().ok
    moves = R.deployments(store, tid)
    assert [(d.kind, d.version, d.actor) for d in moves] == [("rollback", "1.0.0", "carol"),
                                                             ("promotion", "1.1.0", "bob"),
                                                             ("promotion", "1.0.0", "bob")]


def test_high_risk_needs_model_checks_and_submitted_content_round_trips(settings: Settings, openai_client,
                                                                         fake_openai, embedder) -> None:
    tid = "wf_high"
    write_template(settings.prompts_dir, template_data(tid, risk_level="high"))
    submit_prompt(settings, tid, "1.0.0", actor="alice", embedder=embedder)
    with pytest.raises(PromptWorkflowError, match="risk level high needs an evaluation that ran the golden"):
        approve_prompt(settings, tid, "1.0.0", reviewer="bob", comment=None)
    # submitting again with a client re-evaluates with the model (the offline evaluation is not enough)
    again = submit_prompt(settings, tid, "1.0.0", actor="alice", llm_client=openai_client, policy=RELAXED,
                          embedder=embedder)
    assert again.evaluation is not None and again.evaluation.model_checks and again.evaluation.passed
    approve_prompt(settings, tid, "1.0.0", reviewer="bob", comment="ok")
    store = stores.governance_store(settings)
    submission = R.latest_submission(store, tid, "1.0.0")
    assert submission is not None
    assert content_hash(submission.to_template()) == submission.content_hash  # exact content on record
    with pytest.raises(GovernanceError, match="holds wf_high version 1.0.0, not 2.0.0"):
        submit_prompt(settings, tid, "2.0.0", actor="alice")
    with pytest.raises(NotFound, match="no prompt template with id 'nope'") as err:
        submit_prompt(settings, "nope", "1.0.0", actor="alice")
    assert err.value.field == "template_id"
    # rejecting a template nobody wrote is NotFound too, and writes no decision and no audit entry
    audit_before = len(store.list_audit(1000, 0))
    with pytest.raises(NotFound) as err:
        reject_prompt(settings, "nope", "1.0.0", reviewer="bob", reason="made up")
    assert err.value.field == "template_id"
    assert store.latest_decision("prompt", "nope", "1.0.0") is None
    assert len(store.list_audit(1000, 0)) == audit_before

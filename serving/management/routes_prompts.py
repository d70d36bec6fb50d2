"""``/api/v1/prompt-governance``: the prompt library as the management API shows it.

Reads: the templates in the prompt library with their governance state, a diff between two
versions, usage per template. Writes (an API key with the approver role; the key's owner is the
identity in the audit log) go through the same workflow functions as the CLI
(``mlops_assets.prompts.workflow``): submit, evaluate, test (render with sample inputs), approve
(moves ``production``), reject, roll back. Templates are files (``prompts/``), so creating or
editing them over HTTP answers 405 with the reason.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime
from pathlib import Path as FsPath
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from serving.auth import Identity, require
from serving.management.context import ApiContext, ctx
from serving.schemas import error_responses

router = APIRouter(prefix="/api/v1/prompt-governance", tags=["prompt-governance"],
                   responses=error_responses(400, 401, 403, 404, 409, 413, 422))
FILES_ONLY = ("prompt templates are files under prompts/ (one YAML per template, versioned in git); change "
              "them in a pull request, then submit the new version for review")
TEMPLATE_ID = Path(pattern=r"^[a-z][a-z0-9_]{1,63}$")
VERSION_RE = r"^[0-9]+\.[0-9]+\.[0-9]+$"
VERSION = Path(pattern=VERSION_RE)
APPROVER = require("approver", lambda request: request.app.state.ctx.keyring)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CommentIn(_Body):
    comment: str | None = Field(None, max_length=5000)


class ReasonIn(_Body):
    reason: str = Field(min_length=1, max_length=5000)


class RollbackPromptIn(_Body):
    to_version: str = Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    reason: str = Field(min_length=1, max_length=5000)


class TestIn(_Body):
    variables: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=100)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.isoformat() if isinstance(value, datetime | date) else value


def _library(directory: FsPath) -> list[Any]:
    from mlops_assets.prompts.library import PromptLibraryError, load_library

    try:
        return load_library(directory)
    except PromptLibraryError as exc:
        raise HTTPException(409, f"the prompt library cannot be read: {exc}") from None


def _summary(c: ApiContext, template: Any) -> dict[str, Any]:
    from mlops_assets.prompts.library import content_hash

    decision = c.store.latest_decision("prompt", template.id, template.version)
    return {"id": template.id, "version": template.version, "owner": template.owner,
            "description": template.description, "risk_level": str(template.risk_level),
            "policy_tags": list(template.policy_tags), "content_hash": content_hash(template),
            "file": FsPath(template.source).name if template.source else None,
            "state": decision.state.value if decision else None}


@router.get("/templates", summary="Prompt templates in the library, with their review state")
def list_templates(c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    items = [_summary(c, t) for t in _library(c.settings.prompts_dir)]
    return {"items": items, "total": len(items)}


@router.get("/templates/{template_id}",
            summary="One template: its text, variables, model parameters, decisions")
def get_template(template_id: str = TEMPLATE_ID, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    found = [t for t in _library(c.settings.prompts_dir) if t.id == template_id]
    if not found:
        raise HTTPException(404, f"no prompt template {template_id!r} in prompts/")
    template = found[0]
    history = [d.to_dict() for d in c.store.decision_history("prompt", template.id, template.version)]
    return {**_summary(c, template), "template": template.model_dump(mode="json"), "decisions": history}


@router.api_route("/templates", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
def write_templates() -> JSONResponse:
    return JSONResponse({"detail": f"405: {FILES_ONLY}"}, status_code=405, headers={"Allow": "GET"})


@router.api_route("/templates/{template_id}", methods=["POST", "PUT", "DELETE", "PATCH"],
                  include_in_schema=False)
def write_template(template_id: str) -> JSONResponse:
    return JSONResponse({"detail": f"405: {FILES_ONLY}"}, status_code=405, headers={"Allow": "GET"})


@router.get("/templates/{template_id}/diff", summary="What changed between two versions of a template")
def diff(template_id: str = TEMPLATE_ID, v1: str = Query(pattern=VERSION_RE), v2: str = Query(pattern=VERSION_RE),
         c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    from mlops_assets.prompts.status import diff_prompt

    return {"template_id": template_id, "from": v1, "to": v2, "diff": diff_prompt(c.settings, template_id, v1, v2)}


@router.get("/usage", summary="Calls, success rate, latency percentiles and tokens per template version")
def usage(c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    from mlops_assets.prompts.usage import read_usage, summarise_usage, usage_log_dir

    rows = summarise_usage(read_usage(usage_log_dir(c.settings.serving_log_dir))).to_dicts()
    return {"items": _plain(rows), "total": len(rows)}


@router.get("/templates/{template_id}/usage", summary="Usage of one template, per version")
def template_usage(template_id: str = TEMPLATE_ID, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    rows = [r for r in usage(c)["items"] if r.get("template_id") == template_id]
    return {"items": rows, "total": len(rows)}


@router.post("/templates/{template_id}/{version}/test",
             summary="Render the template with sample inputs (the golden set's first case by default)")
def test_template(body: TestIn | None = None, template_id: str = TEMPLATE_ID, version: str = VERSION,
                  c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    from mlops_assets.prompts.library import render
    from mlops_assets.prompts.workflow import current_template

    template = current_template(c.settings, template_id, version)
    variables = dict(body.variables) if body and body.variables else (
        dict(template.golden_set[0].inputs) if template.golden_set else {})
    # a missing variable is a MissingVariablesError (InvalidInput): 422 naming them, by the one error mapping
    return {"template_id": template_id, "version": version, "variables": variables,
            "rendered": render(template, variables)}


@router.post("/templates/{template_id}/{version}/submit", summary="Submit a version for review (approver)")
def submit(body: CommentIn | None = None, template_id: str = TEMPLATE_ID, version: str = VERSION,
           who: Identity = APPROVER, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    from mlops_assets.prompts.workflow import submit_prompt

    result = submit_prompt(c.settings, template_id, version, actor=who.owner, comment=body.comment if body else None)
    return _plain(result.to_dict())


@router.post("/templates/{template_id}/{version}/evaluate",
             summary="Run the automatic evaluation of a version (approver)")
def evaluate(template_id: str = TEMPLATE_ID, version: str = VERSION, who: Identity = APPROVER,
             c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    from mlops_assets.prompts.workflow import current_template, evaluate_prompt

    result = evaluate_prompt(c.settings, current_template(c.settings, template_id, version), actor=who.owner)
    return {"template_id": template_id, "version": version, "passed": result.passed,
            "mlflow_run_id": result.mlflow_run_id,
            "checks": [_plain(ch.model_dump()) for ch in result.checks]}


@router.post("/templates/{template_id}/{version}/approve",
             summary="Approve a version in review; production moves to it (approver, not the owner)")
def approve(body: CommentIn | None = None, template_id: str = TEMPLATE_ID, version: str = VERSION,
            who: Identity = APPROVER, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    from mlops_assets.prompts.approval import approve_prompt

    decision = approve_prompt(c.settings, template_id, version, reviewer=who.owner,
                              comment=body.comment if body else None)
    return {"decision": _plain(decision.to_dict())}


@router.post("/templates/{template_id}/{version}/reject", summary="Reject a version (approver)")
def reject(body: ReasonIn, template_id: str = TEMPLATE_ID, version: str = VERSION, who: Identity = APPROVER,
           c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    from mlops_assets.prompts.approval import reject_prompt

    return {"decision": _plain(reject_prompt(c.settings, template_id, version, reviewer=who.owner,
                                             reason=body.reason).to_dict())}


@router.post("/templates/{template_id}/rollback",
             summary="Move production back to an earlier approved version (approver)")
def rollback(body: RollbackPromptIn, template_id: str = TEMPLATE_ID, who: Identity = APPROVER,
             c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    from mlops_assets.prompts.approval import rollback_prompt

    deployment = rollback_prompt(c.settings, template_id, body.to_version, actor=who.owner, reason=body.reason)
    return {"deployment": _plain(asdict(deployment))}

"""``/api/v1/prompt-governance``: the prompt library as the management API shows it.

This module holds the read endpoints (the templates in the prompt library with their governance
state). The review workflow routes (submit, approve, reject, promote a prompt version) belong here
too and are added by the prompt-governance work; they must go through the governance store and
``mlops_assets.governance.prompt_registry`` like the CLI does. Templates are files (``prompts/``),
so writing to them over HTTP answers 405 with the reason.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import JSONResponse

from mlops_assets.settings import PROJECT_ROOT
from serving.context import ApiContext, ctx

router = APIRouter(prefix="/api/v1/prompt-governance", tags=["prompt-governance"])
LIBRARY = PROJECT_ROOT / "prompts"
FILES_ONLY = ("prompt templates are files under prompts/ (one YAML per template, versioned in git); change "
              "them in a pull request, then submit the new version for review")
TEMPLATE_ID = Path(pattern=r"^[a-z][a-z0-9_]{1,63}$")


def _library(directory: FsPath = LIBRARY) -> list[Any]:
    from mlops_assets.governance.prompts import PromptLibraryError, load_library

    try:
        return load_library(directory)
    except PromptLibraryError as exc:
        raise HTTPException(409, f"the prompt library cannot be read: {exc}") from None


def _summary(c: ApiContext, template: Any) -> dict[str, Any]:
    from mlops_assets.governance.prompts import content_hash

    decision = c.store.latest_decision("prompt", template.id, template.version)
    return {"id": template.id, "version": template.version, "owner": template.owner,
            "description": template.description, "risk_level": str(template.risk_level),
            "policy_tags": list(template.policy_tags), "content_hash": content_hash(template),
            "file": FsPath(template.source).name if template.source else None,
            "state": decision.state.value if decision else None}


@router.get("/templates", summary="Prompt templates in the library, with their review state")
def list_templates(c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    items = [_summary(c, t) for t in _library()]
    return {"items": items, "total": len(items)}


@router.get("/templates/{template_id}",
            summary="One template: its text, variables, model parameters, decisions")
def get_template(template_id: str = TEMPLATE_ID, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    found = [t for t in _library() if t.id == template_id]
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

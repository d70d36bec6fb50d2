"""``/api/v1/prompt-governance``: each template's version history, and the usage other services report.

* ``GET /templates/{id}/versions``: every version the library, the governance store or the MLflow
  prompt registry knows, with its state, decisions, submissions, evaluations and production moves
  (``mlops_assets.prompts.versions.template_versions``).
* ``POST /templates/{id}/{version}/usage``: an LLM application outside the inference app reports one
  call (tokens, latency, cost, caller...); it is appended to the LLM usage log the platform keeps,
  so the usage summaries and the KPIs count it. It needs a key with the ``service`` role (or admin;
  a viewer or approver may not); the caller defaults to the key's owner. An unknown template or
  version is 404 and nothing is written.
* ``GET /templates/{id}/{version}/usage``: that version's usage summary, cost and calls per caller.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path

from serving.auth import SERVICE, Identity, require
from serving.management.context import ApiContext, ctx
from serving.management.schemas import UsageIn
from serving.schemas import error_responses

router = APIRouter(prefix="/api/v1/prompt-governance", tags=["prompt-governance"],
                   responses=error_responses(400, 401, 403, 404, 409, 413, 422))
TEMPLATE_ID = Path(pattern=r"^[a-z][a-z0-9_]{1,63}$")
VERSION = Path(pattern=r"^[0-9]{1,9}\.[0-9]{1,9}\.[0-9]{1,9}$")
SERVICE_KEY = require(SERVICE, lambda request: request.app.state.ctx.keyring)


def _plain(value: Any) -> Any:
    from datetime import date, datetime

    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.isoformat() if isinstance(value, datetime | date) else value


@router.get("/templates/{template_id}/versions",
            summary="Every version of a template: state, decisions, submissions, evaluations, production moves")
def template_versions(template_id: str = TEMPLATE_ID, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    from mlops_assets.prompts.versions import template_versions as history

    items = _plain(history(c.settings, template_id))
    return {"template_id": template_id, "items": items, "total": len(items)}


@router.post("/templates/{template_id}/{version}/usage", status_code=201,
             summary="Log one call of a template version made by another service (service key)")
def log_usage(body: UsageIn, template_id: str = TEMPLATE_ID, version: str = VERSION,
              who: Identity = SERVICE_KEY, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    from mlops_assets.prompts.versions import log_usage as append

    fields = body.model_dump(exclude={"caller", "flags"})
    record = append(c.settings, template_id, version, caller=body.caller or who.owner, flags=tuple(body.flags),
                    **fields)
    return {"logged": _plain({**record._asdict(), "flags": list(record.flags)}), "reported_by": who.owner}


@router.get("/templates/{template_id}/{version}/usage",
            summary="Usage of one template version: summary, reported cost, calls per caller")
def version_usage(template_id: str = TEMPLATE_ID, version: str = VERSION,
                  c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    from mlops_assets.prompts.versions import version_usage as summary

    return _plain(summary(c.settings, template_id, version))

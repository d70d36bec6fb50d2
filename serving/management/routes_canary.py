"""``/api/v1/ml/lifecycle/models/{name}/canary``: start, watch and stop a canary; and the platform's
guardrail monitor.

Starting goes through ``mlops_assets.monitoring.canary.start`` (the one alias mover: recorded gates and an
APPROVED decision by another person) under the caller's identity. The router's lifespan runs a
:class:`~mlops_assets.monitoring.canary.CanaryMonitor` for the served model (``model.name``) in this
process: every ``evaluation.canary_check_seconds`` it judges the running canary on the prediction log
and rolls it back as ``platform`` when a guardrail fails, so ``mlops serve`` needs no Dagster daemon.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Path
from pydantic import BaseModel, Field

from mlops_assets.monitoring import canary
from mlops_assets.monitoring.canary_guardrails import CanaryPolicy
from mlops_assets.models.gates import gate_policy
from serving.auth import Identity, require
from serving.management.context import ApiContext, ctx
from serving.schemas import error_responses


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    c: ApiContext = app.state.ctx
    s = c.settings
    monitor = canary.CanaryMonitor(lambda: c.client, lambda: c.store, s.model.name, s.serving_log_dir,
                                   CanaryPolicy.from_settings(s), canary.Aliases.from_settings(s))
    c.canary_monitor = monitor  # type: ignore[attr-defined] - read by GET .../canary
    monitor.start()
    try:
        yield
    finally:
        monitor.stop()


router = APIRouter(prefix="/api/v1/ml/lifecycle", tags=["canary"], lifespan=lifespan,
                   responses=error_responses(400, 401, 403, 404, 409, 413, 422))
APPROVER = require("approver", lambda request: request.app.state.ctx.keyring)
NAME = Path(min_length=1, max_length=300, pattern=r"^[A-Za-z0-9_.\-]+$")


class CanaryIn(BaseModel):
    version: str = Field(pattern=r"^[1-9][0-9]{0,8}$", description="the approved version to route traffic to")
    share: float = Field(gt=0, le=1, description="share of /predict requests (at most evaluation.canary_max_share)")
    reason: str | None = Field(None, max_length=2000)


class CanaryStopIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


def _status(c: ApiContext, name: str) -> dict[str, Any]:
    s = c.settings
    return canary.status(c.client, c.store, name, s.serving_log_dir, CanaryPolicy.from_settings(s),
                         canary.Aliases.from_settings(s))


@router.post("/models/{name}/canary", status_code=201,
             summary="Start a canary: route a share of traffic to an approved version (approver)")
def start_canary(body: CanaryIn, name: str = NAME, who: Identity = APPROVER,
                 c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    s = c.settings
    deployment = canary.start(c.client, c.store, name, body.version, body.share, actor=who.owner,
                              compliance_required=s.evaluation.compliance_required, gate_policy=gate_policy(s),
                              policy=CanaryPolicy.from_settings(s), aliases=canary.Aliases.from_settings(s),
                              reason=body.reason)
    return {"deployment": deployment.to_dict(), "canary": _status(c, name)}


@router.get("/models/{name}/canary", summary="The canary: state, share, guardrail verdict, how it ended")
def get_canary(name: str = NAME, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    out = _status(c, name)
    monitor = getattr(c, "canary_monitor", None)
    if monitor is not None:
        out["monitor"] = monitor.last
    return out


@router.post("/models/{name}/canary/stop", summary="Take the canary off traffic (approver)")
def stop_canary(body: CanaryStopIn, name: str = NAME, who: Identity = APPROVER,
                c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    removed = canary.stop(c.client, c.store, name, actor=who.owner, reason=body.reason,
                          aliases=canary.Aliases.from_settings(c.settings))
    return {"removed": removed, "canary": _status(c, name)}

"""``/api/v1/ml/lifecycle``: experiments and runs (MLflow), registered models and versions, decisions,
deployments (governance store) and drift events.

Writes go through the domain functions that enforce the rules (``mlops_assets.models.promotion``
and the governance store) under the caller's identity from the API key. Approving does not move
an alias: the approval sensor promotes the version (re-checking every gate).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, UTC
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from fastapi.responses import JSONResponse
from mlflow.entities import ViewType

from mlops_assets.errors import InvalidInput
from mlops_assets.models import promotion
from mlops_assets.models.gates import gate_policy
from mlops_assets.monitoring.shadow import shadow_evidence
from mlops_assets.models.registry import create_experiment, list_versions
from serving.auth import Identity, require
from serving.management.context import ApiContext, ctx
from serving.management.schemas import (
    VERSION_NUMBER,
    DecisionIn,
    DeploymentIn,
    DriftEventIn,
    ExperimentIn,
    RejectIn,
    RollbackIn,
)
from serving.schemas import error_responses

router = APIRouter(prefix="/api/v1/ml/lifecycle", tags=["lifecycle"],
                   responses=error_responses(400, 401, 403, 404, 409, 413, 422, 502))
NAME = Path(min_length=1, max_length=300, pattern=r"^[A-Za-z0-9_.\-]+$")
VERSION = Path(pattern=VERSION_NUMBER)
INTERNAL_TAGS = ("mlflow.log-model.history", "mlflow.source.git", "mlflow.user")


def _keyring(request: Any) -> Any:
    return request.app.state.ctx.keyring


APPROVER = require("approver", _keyring)
VIEWER = require("viewer", _keyring)


def _ms(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts / 1000, tz=UTC).isoformat()


def _run(run: Any) -> dict[str, Any]:
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith(INTERNAL_TAGS)}
    return {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
            "start_time": _ms(run.info.start_time), "end_time": _ms(run.info.end_time),
            "params": dict(run.data.params), "metrics": dict(run.data.metrics), "tags": tags}


def _history(c: ApiContext, run: Any) -> dict[str, Any]:
    """Per-metric histories and a per-step table (one row per logged step, e.g. each epoch)."""
    histories: dict[str, list[dict[str, Any]]] = {}
    by_step: dict[int, dict[str, Any]] = {}
    for key in sorted(run.data.metrics):
        points = c.client.get_metric_history(run.info.run_id, key)
        histories[key] = [{"step": p.step, "value": p.value, "timestamp": p.timestamp} for p in points]
        if len(points) > 1:
            for p in points:
                by_step.setdefault(p.step, {"step": p.step})[key] = p.value
    return {"metric_history": histories, "epochs": [by_step[s] for s in sorted(by_step)]}


def _experiment(c: ApiContext, name: str) -> Any:
    experiment = c.client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        raise HTTPException(404, f"no experiment named {name!r}; list them at "
                                 "/api/v1/ml/lifecycle/experiments")
    return experiment


@router.get("/experiments", summary="MLflow experiments")
def list_experiments(c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    items = [{"experiment_id": e.experiment_id, "name": e.name, "lifecycle_stage": e.lifecycle_stage,
              "creation_time": _ms(e.creation_time), "last_update_time": _ms(e.last_update_time),
              "tags": dict(e.tags or {})}
             for e in c.client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000)]
    return {"items": items, "total": len(items)}


@router.post("/experiments", status_code=201, summary="Create an MLflow experiment (approver)")
def new_experiment(body: ExperimentIn, who: Identity = APPROVER, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    """201 with the experiment; 409 when one of that name exists (active or deleted)."""
    experiment_id = create_experiment(c.client, body.name, description=body.description, tags=body.tags,
                                      created_by=who.owner)
    c.store.append_audit(who.owner, "experiment.created", "experiment", body.name,
                         {"experiment_id": experiment_id})
    e = c.client.get_experiment(experiment_id)
    return {"experiment_id": e.experiment_id, "name": e.name, "lifecycle_stage": e.lifecycle_stage,
            "creation_time": _ms(e.creation_time), "tags": dict(e.tags or {})}


@router.get("/experiments/{name}", summary="An experiment and its runs (newest first)")
def get_experiment(name: str = NAME, max_runs: int = Query(50, ge=1, le=500),
                   history: bool = Query(False, description="include per-epoch metric histories"),
                   c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    experiment = _experiment(c, name)
    runs = c.client.search_runs([experiment.experiment_id], max_results=max_runs,
                                order_by=["attributes.start_time DESC"])
    items = [{**_run(r), **(_history(c, r) if history else {})} for r in runs]
    return {"experiment_id": experiment.experiment_id, "name": experiment.name, "runs": items,
            "total": len(items)}


@router.get("/experiments/{name}/runs/{run_id}", summary="One run with per-epoch metrics")
def get_run(name: str = NAME, run_id: str = Path(pattern=r"^[0-9a-f]{32}$"),
            c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    experiment = _experiment(c, name)
    run = c.client.get_run(run_id)
    if run.info.experiment_id != experiment.experiment_id:
        raise HTTPException(404, f"run {run_id} is not in experiment {name!r}")
    return {**_run(run), **_history(c, run)}


# --- registered models ------------------------------------------------------------------------------


def _decision(c: ApiContext, name: str, version: str) -> dict[str, Any] | None:
    decision = c.store.latest_decision("model", name, version)
    return decision.to_dict() if decision else None


def _version(c: ApiContext, v: Any) -> dict[str, Any]:
    return {"version": str(v.version), "run_id": v.run_id, "status": v.status,
            "aliases": list(v.aliases or []), "tags": dict(v.tags or {}),
            "created": _ms(v.creation_timestamp), "description": v.description,
            "decision": _decision(c, v.name, str(v.version))}


def _evaluation(c: ApiContext, name: str, version: str) -> dict[str, Any] | None:
    path = c.settings.reports_dir / "evaluation" / name / version / "evaluation_report.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    return {"id": f"{name}:{version}", "passed": report.get("passed"), "metrics": report.get("metrics"),
            "report": f"/api/v1/ml/evaluation/runs/{name}:{version}/report"}


def _aliases(model: Any) -> dict[str, str]:
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


@router.get("/models", summary="Registered models with their aliases")
def list_models(c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    items = [{"name": m.name, "description": m.description, "aliases": _aliases(m),
              "tags": dict(m.tags or {}), "created": _ms(m.creation_timestamp),
              "updated": _ms(m.last_updated_timestamp)}
             for m in c.client.search_registered_models(max_results=1000)]
    return {"items": items, "total": len(items)}


@router.get("/models/{name}", summary="A registered model and its versions, with their decisions")
def get_model(name: str = NAME, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    model = c.client.get_registered_model(name)
    versions = list_versions(c.client, name)  # with their aliases (MLflow 3's search leaves them empty)
    return {"name": model.name, "description": model.description, "aliases": _aliases(model),
            "versions": [_version(c, v) for v in reversed(versions)]}


@router.get("/models/{name}/compare", summary="Metrics of several versions side by side")
def compare_versions(name: str = NAME,
                     versions: list[str] = Query(..., min_length=2, max_length=10,
                                                 description="registry version numbers (1 to 9 digits each)"),
                     c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    bad = [v for v in versions if not re.fullmatch(VERSION_NUMBER, v)]
    if bad:
        raise InvalidInput("versions", [f"{v[:20]!r} is not a version number of 1 to 9 digits" for v in bad])
    rows, keys = [], set()
    for version in versions:
        v = c.client.get_model_version(name, version)
        metrics = dict(c.client.get_run(v.run_id).data.metrics) if v.run_id else {}
        keys.update(metrics)
        rows.append({"version": version, "aliases": list(v.aliases or []), "metrics": metrics,
                     "evaluation": _evaluation(c, name, version), "decision": _decision(c, name, version)})
    table = [{"metric": k, **{r["version"]: r["metrics"].get(k) for r in rows}} for k in sorted(keys)]
    return {"name": name, "versions": rows, "metrics": table}


@router.api_route("/models/{name}/rollback", methods=["GET", "PUT", "DELETE", "PATCH"], include_in_schema=False)
def rollback_other_methods(name: str) -> JSONResponse:
    """Only POST: answered here so ``GET .../rollback`` is a 405, not a version lookup of "rollback"."""
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": "POST"})


@router.get("/models/{name}/{version}", summary="One version: lineage tags, run metrics, gates and history")
def get_version(name: str = NAME, version: str = VERSION, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    v = c.client.get_model_version(name, version)
    run = c.client.get_run(v.run_id) if v.run_id else None
    history = [d.to_dict() for d in c.store.decision_history("model", name, version)]
    deployments = [d.to_dict() for d in c.store.list_deployments(name, limit=None) if d.version == version]
    gates = promotion.approval_checklist(c.client, c.store, name, version, reviewer="",
                                         compliance_required=c.settings.evaluation.compliance_required,
                                         policy=gate_policy(c.settings))
    gates.pop("reviewer_is_not_registerer", None)
    evaluation = _evaluation(c, name, version)
    waivers = promotion.waivers_of(c.store, name, version)
    if evaluation is not None:
        evaluation["waivers"] = waivers.get("waivers", {})
    recorded = {gate: r.to_dict() for gate, r in c.store.gate_results(name, version).items()}
    return {**_version(c, v), "name": name, "run": _run(run) if run else None, "decisions": history,
            "deployments": deployments, "gates": gates, "gate_results": recorded, "waivers": waivers,
            "shadow": shadow_evidence(c.settings.reports_dir, name, version), "evaluation": evaluation}


@router.post("/models/{name}/{version}/approve", summary="Approve a version for production (approver)")
def approve(body: DecisionIn | None = None, name: str = NAME, version: str = VERSION,
            who: Identity = APPROVER, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    comment = body.comment if body is not None else None
    waivers = {w.check: w.reason for w in body.waivers} if body is not None else {}
    if body is not None and len(waivers) != len(body.waivers):
        raise HTTPException(422, "waivers: each check may be waived once")
    c.client.get_model_version(name, version)  # 404 for an unknown model or version
    decision = promotion.approve(c.client, c.store, name, version, reviewer=who.owner, comment=comment,
                                 compliance_required=c.settings.evaluation.compliance_required,
                                 waivers=waivers, policy=gate_policy(c.settings), role=who.role)
    return {"decision": decision.to_dict(), "waivers": decision.waivers or {},
            "shadow": shadow_evidence(c.settings.reports_dir, name, version),
            "next": "the approval sensor promotes the version after re-checking every gate"}


@router.post("/models/{name}/{version}/reject", summary="Reject a version, or revoke its approval (approver)")
def reject(body: RejectIn, name: str = NAME, version: str = VERSION, who: Identity = APPROVER,
           c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    c.client.get_model_version(name, version)  # 404 for an unknown model or version
    decision = promotion.reject(c.client, c.store, name, version, reviewer=who.owner, reason=body.reason)
    return {"decision": decision.to_dict()}


@router.post("/models/{name}/rollback", summary="Move an alias back to a version it served before (approver)")
def rollback(body: RollbackIn, name: str = NAME, who: Identity = APPROVER,
             c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    alias = body.alias or c.settings.model.production_alias
    deployment = promotion.rollback(c.client, c.store, name, body.to_version, alias, actor=who.owner,
                                    reason=body.reason, policy=gate_policy(c.settings),
                                    compliance_required=c.settings.evaluation.compliance_required)
    return {"deployment": deployment.to_dict()}


# --- deployments and drift events ---------------------------------------------------------------------


def _with_health(c: ApiContext, items: list[dict[str, Any]], health: bool) -> list[dict[str, Any]]:
    """Mark the latest deployment per (model, alias) as current; attach the inference app's health to the
    one it serves."""
    seen: set[tuple[str, str]] = set()
    served = (c.settings.model.name, c.settings.serving_alias)
    probe = None
    for item in items:
        key = (item["name"], item["alias"])
        item["current"] = key not in seen
        seen.add(key)
        if health and item["current"] and key == served:
            probe = probe or c.inference_health()
            item["health"] = probe
    return items


@router.get("/deployments", summary="Alias moves (promotions and rollbacks), newest first")
def list_deployments(model: str | None = Query(None, max_length=300),
                     alias: str | None = Query(None, max_length=100),
                     limit: int = Query(100, ge=1, le=1000), health: bool = True,
                     c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    deployments = [d.to_dict() for d in c.store.list_deployments(model, alias=alias, limit=limit)]
    items = _with_health(c, deployments, health)
    return {"items": items, "total": len(items)}


@router.post("/deployments", status_code=201,
             summary="Deploy: move production to an approved version through the alias mover (approver)",
             responses={200: {"description": "Production already serves this version: the recorded deployment"}})
def request_deployment(body: DeploymentIn, response: Response, who: Identity = APPROVER,
                       c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    """Like ``mlops models promote``: every gate is re-checked (409 with the reasons when one fails);
    201 with the new deployment, 200 with the recorded one when production already serves the version."""
    name = body.model_name or c.settings.model.name
    c.client.get_model_version(name, body.version)  # 404 for an unknown model or version
    alias = c.settings.model.production_alias
    before = c.store.list_deployments(name, alias=alias, limit=1)
    deployment = promotion.promote(c.client, c.store, name, body.version, alias=alias, actor=who.owner,
                                   reason=body.reason or "deployment requested over the management API",
                                   compliance_required=c.settings.evaluation.compliance_required,
                                   production_alias=alias, policy=gate_policy(c.settings))
    created = not before or before[0].id != deployment.id
    if not created:
        response.status_code = 200
    return {**deployment.to_dict(), "created": created}


@router.get("/deployments/{deployment_id}", summary="One deployment, with live health if it is current")
def get_deployment(deployment_id: int = Path(ge=1, le=2**62), c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    deployment = c.store.get_deployment(deployment_id)
    if deployment is None:
        raise HTTPException(404, f"no deployment with id {deployment_id}")
    latest = c.store.list_deployments(deployment.name, alias=deployment.alias, limit=1)
    item = deployment.to_dict()
    item["current"] = bool(latest) and latest[0].id == deployment.id
    served = (c.settings.model.name, c.settings.serving_alias)
    if item["current"] and (deployment.name, deployment.alias) == served:
        item["health"] = c.inference_health()
    return item


@router.get("/drift-events", summary="Drift findings and what was done about them, newest first")
def list_drift_events(source: str | None = Query(None, max_length=300),
                      episode_id: str | None = Query(None, max_length=200), since: datetime | None = None,
                      limit: int = Query(100, ge=1, le=1000), c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    events = c.store.list_drift_events(source, episode_id=episode_id, since=since, limit=limit)
    items = [e.to_dict() for e in events]
    return {"items": items, "total": len(items)}


@router.post("/drift-events", status_code=201,
             summary="Record a drift event from another service (approver: it may start a retraining run)")
def record_drift_event(body: DriftEventIn, response: Response, who: Identity = APPROVER,
                       c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    """201 with the new event; 200 with the recorded one when this source already posted the same
    (window, share). The drift sensor decides on each new event once, with the same episode and cooldown
    rules as its own drift reports, so a burst of posts starts at most one retraining run."""
    from mlops_assets.monitoring.drift_tick import posted_dedupe_key

    fields = body.model_dump(exclude={"window_start", "window_end"})
    window = {k: v for k, v in (("window_start", body.window_start), ("window_end", body.window_end)) if v}
    fields["details"] = {**fields["details"], **window}
    key = posted_dedupe_key(body.window_start, body.window_end, body.drifted_share)
    event, created = c.store.record_drift_event_once(dedupe_key=key, actor=who.owner, **fields)
    if not created:
        response.status_code = 200
    return {**event.to_dict(), "duplicate": not created}

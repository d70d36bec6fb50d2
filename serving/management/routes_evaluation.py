"""``/api/v1/ml/evaluation``: stress scenarios, evaluation reports, "evaluate version X now", and the
explanation of one served prediction.

* Scenarios: the configured ones (``evaluation.scenarios``, read-only here) plus those saved over
  the API in ``$MLOPS_HOME/evaluation/scenarios.json`` (a list of ``{name, start, end,
  description}``, written atomically; the evaluation assets read it next to the settings).
* Runs: the report directories the evaluation assets write
  (``$MLOPS_HOME/reports/evaluation/<model>/<version>/``); a run id is ``<model>:<version>``.
* Launching an evaluation posts to Dagster's GraphQL API (``serving.dagster_graphql_url``).
* Explanations look the request id up in the prediction log, reload that model version and
  explain the logged feature row with SHAP (background: the training-dataset sample read-model,
  else the online snapshot).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path as FsPath
from typing import Any, Literal

import numpy as np
import polars as pl
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError

from mlops_assets.evaluation.scenarios import ScenarioWindow, saved_scenarios, scenarios_file
from mlops_assets.features import readmodels
from mlops_assets.monitoring.served import find_prediction
from serving.auth import Identity, require
from serving.management.context import ApiContext, ctx
from serving.management.dagster_client import (
    DagsterRefused,
    DagsterTarget,
    DagsterUnavailable,
    launch_partition_run,
)
from serving.management.schemas import EvaluationRunIn, ScenarioIn
from serving.schemas import error_responses

router = APIRouter(prefix="/api/v1/ml/evaluation", tags=["evaluation"],
                   responses=error_responses(400, 401, 403, 404, 409, 413, 422, 502, 503))
RUN_ID = Path(pattern=r"^[A-Za-z0-9_.\-]{1,300}:[0-9]{1,9}$", description="<model>:<version>")
EVALUATION_JOB = "evaluate_model_job"
PARTITIONS = "model_versions"
TRAINING_SAMPLE = readmodels.dataset_sample_name("training_dataset")
BACKGROUND_ROWS = 30


def _keyring(request: Any) -> Any:
    return request.app.state.ctx.keyring


ADMIN = require("admin", _keyring)
APPROVER = require("approver", _keyring)


# --- scenarios ------------------------------------------------------------------------------------------


def _saved(c: ApiContext) -> list[dict[str, Any]]:
    return saved_scenarios(c.settings.home)


def _write_atomic(path: FsPath, items: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(items, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@router.get("/scenarios", summary="Stress scenarios: configured and saved over the API")
def list_scenarios(c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    configured = [{**s, "source": "config"} for s in c.settings.evaluation.scenarios]
    items = configured + [{**s, "source": "api"} for s in _saved(c)]
    return {"items": items, "total": len(items)}


@router.post("/scenarios", status_code=201,
             summary="Save (create or replace by name) a stress scenario (admin)")
def save_scenario(body: ScenarioIn, who: Identity = ADMIN, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    try:
        window = ScenarioWindow.model_validate(body.model_dump(include={"name", "start", "end"}))
    except ValidationError as exc:  # e.g. end before start, or an impossible date
        raise HTTPException(422, "; ".join(e["msg"] for e in exc.errors())) from None
    if any(s.get("name") == body.name for s in c.settings.evaluation.scenarios):
        raise HTTPException(409, f"scenario {body.name!r} is defined in the configuration file; change it "
                                 "there")
    item = {"name": window.name, "start": window.start.isoformat(), "end": window.end.isoformat(),
            "description": body.description, "saved_by": who.owner,
            "saved_at": datetime.now(timezone.utc).isoformat()}
    items = [s for s in _saved(c) if s.get("name") != body.name] + [item]
    _write_atomic(scenarios_file(c.settings.home), items)
    c.store.append_audit(who.owner, "evaluation.scenario_saved", "scenario", body.name,
                         {"start": item["start"], "end": item["end"]})
    return item


# --- evaluation runs (reports) ----------------------------------------------------------------------


def _report_dir(c: ApiContext, run_id: str) -> FsPath:
    name, version = run_id.rsplit(":", 1)
    path = c.settings.reports_dir / "evaluation" / name / version
    if not (path / "evaluation_report.json").exists():
        raise HTTPException(404, f"no evaluation report for {name} version {version}; launch one with "
                                 "POST /api/v1/ml/evaluation/runs")
    return path


def _run_item(path: FsPath) -> dict[str, Any]:
    report = json.loads((path / "evaluation_report.json").read_text())
    stamp = datetime.fromtimestamp((path / "evaluation_report.json").stat().st_mtime, tz=timezone.utc)
    name, version = path.parent.name, path.name
    return {"id": f"{name}:{version}", "model_name": name, "version": version, "passed": report.get("passed"),
            "metrics": report.get("metrics"), "evaluated_at": stamp.isoformat(),
            "files": sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())}


@router.get("/runs", summary="Evaluation reports on record, newest first")
def list_runs(model: str | None = Query(None, max_length=300),
              c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    root = c.settings.reports_dir / "evaluation"
    paths = sorted(root.glob("*/*/evaluation_report.json"), key=lambda p: p.stat().st_mtime, reverse=True) \
        if root.exists() else []
    items = [_run_item(p.parent) for p in paths if model is None or p.parent.parent.name == model]
    return {"items": items, "total": len(items)}


@router.get("/runs/{run_id}/report", summary="The evaluation report (JSON, or Markdown with format=markdown)",
            responses={200: {"content": {"application/json": {}, "text/markdown": {}}}})
def get_report(run_id: str = RUN_ID, format: Literal["json", "markdown"] = "json",
               c: ApiContext = Depends(ctx)) -> Any:
    path = _report_dir(c, run_id)
    if format == "markdown":
        md = path / "evaluation_report.md"
        return PlainTextResponse(md.read_text() if md.exists() else "", media_type="text/markdown")
    return {**_run_item(path), "report": json.loads((path / "evaluation_report.json").read_text())}


@router.post("/runs", status_code=202,
             summary="Evaluate a model version now: launch the Dagster job (approver)")
def launch_evaluation(body: EvaluationRunIn, who: Identity = APPROVER,
                      c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    name = body.model_name or c.settings.model.name
    if name != c.settings.model.name:
        raise HTTPException(422, f"model_name: the evaluation job evaluates {c.settings.model.name!r} "
                                 f"(MLFLOW_MODEL_NAME), not {name!r}")
    c.client.get_model_version(name, body.version)  # 404 when it does not exist
    job = body.job_name or EVALUATION_JOB
    target = DagsterTarget(c.settings.serving.dagster_graphql_url)
    try:
        run = launch_partition_run(target, job, PARTITIONS, body.version, {"mlops/requested_by": who.owner})
    except DagsterUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
    except DagsterRefused as exc:
        raise HTTPException(502, str(exc)) from None
    c.store.append_audit(who.owner, "evaluation.requested", "model", f"{name}/{body.version}",
                         {"dagster_run_id": run["run_id"], "job": job})
    return {"model_name": name, "version": body.version, "job": job, **run}


# --- explanations of served predictions ---------------------------------------------------------------


def _background(c: ApiContext, features: list[str]) -> tuple[np.ndarray, str]:
    """Rows to explain against: the training-dataset sample, else the online snapshot."""
    try:
        sample = readmodels.read_read_model(c.settings.readmodels_dir, TRAINING_SAMPLE)
        if all(f in sample.columns for f in features):
            rows = sample.select(features).cast(pl.Float64).drop_nulls().to_numpy()
            if len(rows) >= 5:
                return rows, TRAINING_SAMPLE
    except readmodels.ReadModelNotFoundError:
        pass
    from mlops_assets.features.online import OnlineFeatureStore

    try:
        store = OnlineFeatureStore(c.settings.online_dir).load()
    except FileNotFoundError:
        store = None
    if store is not None and all(f in store.feature_names for f in features):
        rows = np.array([[np.nan if (v := r.get(f)) is None else float(v) for f in features]
                         for r in store.lookup_many(store.entities)], dtype=np.float64)
        rows = rows[~np.isnan(rows).any(axis=1)]
        if len(rows) >= 5:
            return rows, f"online snapshot {store.version}"
    raise HTTPException(409, "no background data to explain against: export the training dataset sample "
                             f"({TRAINING_SAMPLE}) or the online snapshot")


@router.get("/explanations/{request_id}", summary="Explain a served prediction by its request id (SHAP)")
def explain_prediction(request_id: str = Path(pattern=r"^[A-Za-z0-9_.\-]{1,128}$"),
                       row: int = Query(0, ge=0, le=100_000, description="instance of a batch request"),
                       c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    from mlops_assets.evaluation.explain import explain_one

    logged = find_prediction(c.settings.serving_log_dir, request_id, row)
    if logged is None:
        flush = c.settings.serving.log_flush_seconds
        raise HTTPException(404, f"request {request_id!r} (row {row}) is not in the prediction log; segments "
                                 f"are closed every {flush:g} s, try again shortly")
    wrapper = c.model_wrapper(logged["model_name"], logged["model_version"])
    features = list(getattr(wrapper, "features", None) or logged["features"])
    values = logged["features"]
    x = np.array([[np.nan if values.get(f) is None else float(values[f]) for f in features]],
                 dtype=np.float64)
    background, source = _background(c, features)
    if hasattr(wrapper, "predict_array"):
        def predict_fn(m: np.ndarray) -> np.ndarray:
            return wrapper.predict_array(m.astype(np.float32))
    else:
        def predict_fn(m: np.ndarray) -> np.ndarray:
            out = wrapper.predict(m)
            return out.probabilities if out.probabilities is not None else out.predictions
    explanation = explain_one(predict_fn, background, x, features, background_size=BACKGROUND_ROWS)
    ts = logged.get("ts")
    return {"request_id": request_id, "row": row, "model_name": logged["model_name"],
            "model_version": logged["model_version"], "entity": logged.get("entity"),
            "ts": ts.isoformat() if ts else None, "prediction": logged.get("prediction"),
            "probability": logged.get("probability"), "features": values, "background": source,
            "explanation": explanation}

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
from datetime import datetime, UTC
from pathlib import Path as FsPath
from typing import Any, Literal

import numpy as np
import polars as pl
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError

from mlops_assets.errors import NotFound
from mlops_assets.evaluation import report_files
from mlops_assets.evaluation.scenarios import ScenarioWindow, saved_scenarios, scenarios_file
from mlops_assets.features import readmodels
from mlops_assets.models import promotion
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
RUN_ID_RE = r"^[A-Za-z0-9_.\-]{1,300}:[0-9]{1,9}$"
RUN_ID = Path(pattern=RUN_ID_RE, description="<model>:<version>")
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
            "saved_at": datetime.now(UTC).isoformat()}
    items = [s for s in _saved(c) if s.get("name") != body.name] + [item]
    _write_atomic(scenarios_file(c.settings.home), items)
    c.store.append_audit(who.owner, "evaluation.scenario_saved", "scenario", body.name,
                         {"start": item["start"], "end": item["end"]})
    return item


# --- evaluation runs (reports) ----------------------------------------------------------------------


def _report(c: ApiContext, run_id: str) -> report_files.ReportFile:
    name, version = run_id.rsplit(":", 1)
    return report_files.find_report(c.settings.reports_dir, name, version)  # NotFound naming the version


def _report_dir(c: ApiContext, run_id: str) -> FsPath:
    return _report(c, run_id).path


def _run_item(path: FsPath) -> dict[str, Any]:
    report = json.loads((path / "evaluation_report.json").read_text())
    stamp = datetime.fromtimestamp((path / "evaluation_report.json").stat().st_mtime, tz=UTC)
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
    name, version = run_id.rsplit(":", 1)
    waivers = promotion.waivers_of(c.store, name, version)  # governed exceptions of the approval
    if format == "markdown":
        md = path / "evaluation_report.md"
        text = md.read_text() if md.exists() else ""
        return PlainTextResponse(text + waivers_markdown(waivers), media_type="text/markdown")
    report = json.loads((path / "evaluation_report.json").read_text())
    if isinstance(report.get("compliance"), dict):
        report["compliance"]["waivers"] = waivers.get("waivers", {})
    return {**_run_item(path), "report": report, "waivers": waivers}


def waivers_markdown(waivers: dict[str, Any]) -> str:
    """The approval's waivers as a Markdown section (empty when there are none)."""
    if not waivers.get("waivers"):
        return ""
    lines = ["", "## Waivers", "",
             f"Approved by {waivers['approved_by']} ({waivers['state']}, {waivers['ts']}) despite these failing "
             "non-critical checks:", "", "| check | reason |", "| --- | --- |"]
    lines += [f"| {check} | {reason.replace('|', '/')} |" for check, reason in sorted(waivers["waivers"].items())]
    return "\n".join(lines) + "\n"


# --- A/B tests, fairness, scenario runs, comparison: parts of the reports ------------------------------

PART_ONLY = ("A/B tests, fairness audits and scenario (benchmark) runs are parts of each version's evaluation: "
             "POST /api/v1/ml/evaluation/runs {\"version\"} runs them all (the A/B test against the production "
             "version), and POST /api/v1/ml/evaluation/scenarios saves a scenario for the next runs")


def _parts(c: ApiContext, model: str | None, part: Any) -> list[dict[str, Any]]:
    items = []
    for report in report_files.list_reports(c.settings.reports_dir, model):
        try:
            items.append(part(report))
        except NotFound:  # this version's evaluation has no such part
            continue
    return items


@router.get("/ab-tests", summary="A/B tests of each evaluated version against its champion, newest first")
def list_ab_tests(model: str | None = Query(None, max_length=300), c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    items = [{**{k: v for k, v in r.items() if k != "ab"},
              **{k: r["ab"].get(k) for k in ("verdict", "p_value", "accuracy_difference", "sharpe_difference", "n")}}
             for r in _parts(c, model, report_files.ab_test)]
    return {"items": items, "total": len(items)}


@router.get("/ab-tests/{run_id}", summary="The A/B test of one version (McNemar and paired Sharpe bootstrap)")
def get_ab_test(run_id: str = RUN_ID, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    return report_files.ab_test(_report(c, run_id))


@router.get("/fairness", summary="Fairness audits of each evaluated version, newest first")
def list_fairness(model: str | None = Query(None, max_length=300), c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    items = [{**{k: v for k, v in r.items() if k not in ("fairness", "compliance_checks")},
              "severity": r["fairness"].get("severity"), "disparities": r["fairness"].get("disparities")}
             for r in _parts(c, model, report_files.fairness)]
    return {"items": items, "total": len(items)}


@router.get("/fairness/{run_id}", summary="The fairness audit of one version, by group, with its checks")
def get_fairness(run_id: str = RUN_ID, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    return report_files.fairness(_report(c, run_id))


@router.get("/benchmarks", summary="Scenario (benchmark and stress) runs of each evaluated version")
def list_benchmarks(model: str | None = Query(None, max_length=300),
                    c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    items = [{**{k: v for k, v in r.items() if k not in ("summary", "scenarios")},
              "scenarios": [{"name": s.get("name"), "kind": s.get("kind"), "start": s.get("start"),
                             "end": s.get("end")} for s in r["scenarios"]]}
             for r in _parts(c, model, report_files.scenario_runs)]
    return {"items": items, "total": len(items)}


@router.get("/benchmarks/{run_id}", summary="One version's scenario runs: statistics per strategy and scenario")
def get_benchmark(run_id: str = RUN_ID, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    return report_files.scenario_runs(_report(c, run_id))


@router.get("/compare", summary="Two evaluated versions side by side (metrics, compliance, scenarios, fairness)")
def compare_reports(a: str = Query(pattern=RUN_ID_RE, description="<model>:<version>"),
                    b: str = Query(pattern=RUN_ID_RE, description="<model>:<version>"),
                    c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    return report_files.compare(_report(c, a), _report(c, b))


@router.api_route("/ab-tests", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
@router.api_route("/fairness", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
@router.api_route("/benchmarks", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
@router.api_route("/ab-tests/{run_id}", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
@router.api_route("/fairness/{run_id}", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
@router.api_route("/benchmarks/{run_id}", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
def write_parts() -> JSONResponse:
    return JSONResponse({"detail": f"405: {PART_ONLY}"}, status_code=405, headers={"Allow": "GET"})


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

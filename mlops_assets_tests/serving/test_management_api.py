"""The management API on a real uvicorn: keys and roles, decisions, rollback, drift events, scenarios,
reports, Dagster launches (against a local fake GraphQL endpoint), read-models, MLflow views, audit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from mlflow import MlflowClient

from mlops_assets.features import readmodels
from mlops_assets.features.catalog import catalog_rows
from mlops_assets.features.views import FEATURE_VIEWS
from mlops_assets.models import promotion
from mlops_assets.models import tags as T
from mlops_assets.settings import Settings
from mlops_assets_tests.serving.conftest import (
    MODEL,
    FakeDagster,
    ThreadedServer,
    World,
    copy_version,
    free_port,
)

pytestmark = pytest.mark.xdist_group("serving")
VIEWER = {"X-API-Key": "viewer-key-0000000000000001"}
APPROVER = {"Authorization": "Bearer approver-key-00000000000001"}
ADMIN = {"X-API-Key": "admin-key-000000000000000001"}
NAME = "mgmt_model"


@dataclass
class Mgmt:
    url: str
    settings: Settings
    client: MlflowClient
    dagster: FakeDagster
    versions: list[str] = field(default_factory=list)


def _record_gates(settings: Settings, client: MlflowClient, versions: list[str],
                  failed: dict[str, float] | None = None) -> None:
    """Record each version's gates in the governance store, as the evaluation assets do (the store is
    what approval and promotion read; tags are only its mirror)."""
    from types import SimpleNamespace

    from mlops_assets import stores
    from mlops_assets.models.gates import record_compliance, record_evaluation

    failed = failed or {}
    checks = [SimpleNamespace(name="drift_share", passed="drift_share" not in failed,
                              value=failed.get("drift_share", 0.1), threshold=0.5, message="", skipped=False)]
    checks += [SimpleNamespace(name=c, passed=False, value=v, threshold=0.5, message=f"{c}={v}", skipped=False)
               for c, v in failed.items() if c != "drift_share"]
    report = SimpleNamespace(passed=not failed, task_type="binary", checks=checks)
    store = stores.governance_store(settings)
    for version in versions:
        record_evaluation(client, store, NAME, version, "test_auc", 0.7, 0.5)
        record_compliance(client, store, NAME, version, report)


def _copy_versions(world: World, name: str) -> list[str]:
    """v1, v2, v1 of the session model registered again under ``name`` (no training), gate passed."""
    return [copy_version(world, name, src, **{T.TAG_EVALUATION_PASSED: "true"})
            for src in (world.v1, world.v2, world.v1)]


@pytest.fixture(scope="module")
def mgmt(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mgmt]:
    from serving.management.main import create_app

    dagster = FakeDagster()
    settings = world.settings_for(tmp_path_factory.mktemp("mgmt_home"), dagster_graphql_url=dagster.url)
    settings.ensure_dirs()
    client = world.client()
    versions = _copy_versions(world, NAME)
    _record_gates(settings, client, versions)
    with ThreadedServer(create_app(settings)) as server:
        yield Mgmt(server.url, settings, client, dagster, versions)
    dagster.server.shutdown()


def _api(m: Mgmt) -> httpx.Client:
    return httpx.Client(base_url=m.url, timeout=30)


def test_writes_need_a_key_with_the_role(mgmt: Mgmt) -> None:
    with _api(mgmt) as api:
        path = f"/api/v1/ml/lifecycle/models/{NAME}/{mgmt.versions[0]}/approve"
        assert api.post(path).status_code == 401
        assert api.post(path, headers={"X-API-Key": "not-a-real-key-at-all"}).status_code == 401
        r = api.post(path, headers=VIEWER)
        assert r.status_code == 403 and "victor" in r.json()["detail"] and "approver" in r.json()["detail"]
        r = api.post(path, headers=APPROVER, json={"comment": "looks good"})
        assert r.status_code == 200, r.text
        assert (r.json()["decision"]["state"], r.json()["decision"]["actor"]) == ("APPROVED", "bob")
        audit = api.get("/api/v1/audit", params={"subject_id": f"{NAME}/{mgmt.versions[0]}"}).json()["items"]
        assert audit[0]["actor"] == "bob" and audit[0]["action"] == "decision.approved"
        assert "approver-key" not in json.dumps(audit)


def test_reject_then_approve_is_refused_with_reasons(mgmt: Mgmt) -> None:
    with _api(mgmt) as api:
        path = f"/api/v1/ml/lifecycle/models/{NAME}/{mgmt.versions[2]}"
        assert api.post(f"{path}/reject", headers=APPROVER, json={}).status_code == 422  # reason required
        r = api.post(f"{path}/reject", headers=APPROVER, json={"reason": "drawdown too deep"})
        assert r.status_code == 200 and r.json()["decision"]["state"] == "REJECTED"
        r = api.post(f"{path}/approve", headers=APPROVER)
        assert r.status_code == 409 and "not_rejected" in r.json()["detail"]
        missing = api.post(f"/api/v1/ml/lifecycle/models/{NAME}/999/approve", headers=APPROVER)
        assert missing.status_code == 404 and "999" in missing.json()["detail"]
        detail = api.get(path).json()
        assert detail["decision"]["state"] == "REJECTED" and detail["gates"]["evaluation_passed"]
        assert [d["state"] for d in detail["decisions"]] == ["REJECTED"]


def test_rollback_moves_production_back_and_is_recorded(mgmt: Mgmt) -> None:
    store = _store(mgmt)
    v1, v2 = mgmt.versions[0], mgmt.versions[1]
    for v in (v1, v2):  # approved here, whatever the module's earlier tests left (the suite may reorder them)
        if store.latest_decision("model", NAME, v) is None or \
                store.latest_decision("model", NAME, v).state != "APPROVED":
            promotion.approve(mgmt.client, store, NAME, v, reviewer="bob", compliance_required=False)
    for v in (v1, v2):
        promotion.promote(mgmt.client, store, NAME, v, actor="sensor", compliance_required=False)
    with _api(mgmt) as api:
        body = {"to_version": v1, "reason": "v2 misbehaves in production"}
        path = f"/api/v1/ml/lifecycle/models/{NAME}/rollback"
        assert api.post(path, json=body, headers=VIEWER).status_code == 403
        r = api.post(f"/api/v1/ml/lifecycle/models/{NAME}/rollback", json=body, headers=APPROVER)
        assert r.status_code == 200, r.text
        assert r.json()["deployment"]["kind"] == "rollback" and r.json()["deployment"]["actor"] == "bob"
        assert str(mgmt.client.get_registered_model(NAME).aliases["production"]) == v1
        again = api.post(f"/api/v1/ml/lifecycle/models/{NAME}/rollback", json=body, headers=APPROVER)
        assert again.status_code == 409 and "already points" in again.json()["detail"]
        items = api.get("/api/v1/ml/lifecycle/deployments", params={"model": NAME}).json()["items"]
        assert [(d["kind"], d["version"], d["current"]) for d in items] == [
            ("rollback", v1, True), ("promotion", v2, False), ("promotion", v1, False)]
        one = api.get(f"/api/v1/ml/lifecycle/deployments/{items[0]['id']}").json()
        assert one["current"] and one["reason"] == "v2 misbehaves in production"
        assert api.get("/api/v1/ml/lifecycle/deployments/999999").status_code == 404


def _store(m: Mgmt) -> Any:
    from mlops_assets import stores

    return stores.governance_store(m.settings)


def test_drift_events_are_posted_and_listed(mgmt: Mgmt) -> None:
    with _api(mgmt) as api:
        event = {"source": "market_direction", "features": ["f0", "f1"], "drifted_share": 0.5,
                 "severity": "high"}
        assert api.post("/api/v1/ml/lifecycle/drift-events", json=event).status_code == 401
        assert api.post("/api/v1/ml/lifecycle/drift-events", json=event, headers=VIEWER).status_code == 403
        assert api.post("/api/v1/ml/lifecycle/drift-events", json={**event, "drifted_share": 2},
                        headers=APPROVER).status_code == 422
        r = api.post("/api/v1/ml/lifecycle/drift-events", json=event, headers=APPROVER)
        assert r.status_code == 201 and r.json()["features"] == ["f0", "f1"]
        again = api.post("/api/v1/ml/lifecycle/drift-events", json=event, headers=APPROVER)
        assert again.status_code == 200 and again.json()["duplicate"] and again.json()["id"] == r.json()["id"]
        listed = api.get("/api/v1/ml/lifecycle/drift-events", params={"source": "market_direction"}).json()
        assert listed["total"] == 1 and listed["items"][0]["severity"] == "high"
        entry = api.get("/api/v1/audit", params={"action": "drift.event"}).json()["items"][0]
        assert entry["actor"] == "bob"


def test_scenarios_are_saved_by_admins_only(mgmt: Mgmt) -> None:
    with _api(mgmt) as api:
        scenario = {"name": "covid", "start": "2020-02-15", "end": "2020-04-30", "description": "crash"}
        assert api.post("/api/v1/ml/evaluation/scenarios", json=scenario, headers=APPROVER).status_code == 403
        bad = api.post("/api/v1/ml/evaluation/scenarios", json={**scenario, "end": "2020-01-01"},
                       headers=ADMIN)
        assert bad.status_code == 422 and "before start" in bad.json()["detail"]
        assert api.post("/api/v1/ml/evaluation/scenarios", json=scenario, headers=ADMIN).status_code == 201
        items = api.get("/api/v1/ml/evaluation/scenarios").json()["items"]
        assert [(s["name"], s["source"], s["saved_by"]) for s in items] == [("covid", "api", "ada")]
        saved = json.loads((mgmt.settings.home / "evaluation" / "scenarios.json").read_text())
        assert saved[0]["start"] == "2020-02-15"


def test_evaluation_reports_and_launching_a_run(mgmt: Mgmt, tmp_path: Path) -> None:
    report_dir = mgmt.settings.reports_dir / "evaluation" / MODEL / "1"
    report_dir.mkdir(parents=True)
    report = {"passed": True, "metrics": {"roc_auc": 0.61}}
    (report_dir / "evaluation_report.json").write_text(json.dumps(report))
    (report_dir / "evaluation_report.md").write_text("# Evaluation of version 1\n")
    with _api(mgmt) as api:
        runs = api.get("/api/v1/ml/evaluation/runs").json()["items"]
        assert [(r["id"], r["passed"]) for r in runs] == [(f"{MODEL}:1", True)]
        assert api.get(f"/api/v1/ml/evaluation/runs/{MODEL}:1/report").json()["report"] == report
        md = api.get(f"/api/v1/ml/evaluation/runs/{MODEL}:1/report", params={"format": "markdown"})
        assert md.text.startswith("# Evaluation of version 1")
        assert api.get(f"/api/v1/ml/evaluation/runs/{MODEL}:9/report").status_code == 404
        runs = "/api/v1/ml/evaluation/runs"
        assert api.post(runs, json={"version": "1"}, headers=VIEWER).status_code == 403
        r = api.post("/api/v1/ml/evaluation/runs", json={"version": "1"}, headers=APPROVER)
        assert r.status_code == 202, r.text
        assert r.json()["run_id"] == "run-123"
        add, launch = mgmt.dagster.requests[-2:]
        assert add["variables"]["partitionKey"] == "1"
        assert add["variables"]["partitionsDefName"] == "model_versions"
        params = launch["variables"]["executionParams"]
        assert params["selector"]["jobName"] == "evaluate_model_job"
        assert {"key": "dagster/partition", "value": "1"} in params["executionMetadata"]["tags"]
        assert {"key": "mlops/requested_by", "value": "bob"} in params["executionMetadata"]["tags"]
        assert api.post(runs, json={"version": "77"}, headers=APPROVER).status_code == 404


def test_launching_without_dagster_is_503_naming_the_url(world: World, tmp_path: Path) -> None:
    from serving.management.main import create_app

    url = f"http://127.0.0.1:{free_port()}/graphql"
    settings = world.settings_for(tmp_path / "home", dagster_graphql_url=url)
    with ThreadedServer(create_app(settings)) as server:
        r = httpx.post(f"{server.url}/api/v1/ml/evaluation/runs", json={"version": "1"}, headers=APPROVER)
    assert r.status_code == 503 and url in r.json()["detail"]


def test_features_from_code_then_from_read_models(mgmt: Mgmt) -> None:
    out = mgmt.settings.readmodels_dir
    with _api(mgmt) as api:
        listed = api.get("/api/v1/features").json()
        assert listed["source"] == "code"
        assert {f["feature"] for f in listed["items"]} == {f.name for v in FEATURE_VIEWS for f in v.features}
        base = catalog_rows(FEATURE_VIEWS)
        newer = base.filter(pl.col("view") == "price_returns").with_columns(pl.lit("1.1.0").alias("version"))
        extra = newer.head(1).with_columns(pl.lit("ret_2d").alias("feature"),
                                           pl.lit(9).cast(pl.Int32).alias("position"))
        readmodels.export_read_model(pl.concat([base, newer, extra]), out, readmodels.CATALOG)
        stats = pl.DataFrame({"feature": ["ret_1d"], "view": ["price_returns"], "version": ["1.1.0"],
                              "count": [10], "mean": [0.001], "std": [float("nan")]})
        readmodels.export_read_model(stats, out, readmodels.STATISTICS)
        listed = api.get("/api/v1/features", params={"tag": "momentum"}).json()
        assert listed["source"] == "read-model"
        assert {(f["feature"], f["version"]) for f in listed["items"]} == {
            ("ret_1d", "1.1.0"), ("ret_5d", "1.1.0"), ("ret_20d", "1.1.0"), ("momentum_60d", "1.1.0"),
            ("ret_2d", "1.1.0")}
        assert api.get("/api/v1/features", params={"owner": "nobody"}).json()["total"] == 0
        one = api.get("/api/v1/features/ret_1d").json()
        assert one["versions"] == ["1.0.0", "1.1.0"] and one["statistics"]["mean"] == 0.001
        assert one["statistics"]["std"] is None
        diff = api.get("/api/v1/features/ret_1d/diff", params={"from": "1.0.0", "to": "1.1.0"}).json()
        assert diff["added"] == ["ret_2d"] and diff["bump"] == "minor"
        assert len(api.get("/api/v1/features/ret_1d/versions").json()["items"]) == 2
        assert api.get("/api/v1/features/no_such_feature").status_code == 404
        for method in ("POST", "PUT", "DELETE"):
            r = api.request(method, "/api/v1/features/ret_1d", headers=ADMIN)
            assert r.status_code == 405 and "defined in code" in r.json()["detail"]
        assert api.post("/api/v1/features", json={}).status_code == 405


def test_dataset_samples_are_listed_shown_and_downloaded(mgmt: Mgmt, world: World) -> None:
    sample = world.data.head(30)
    name = readmodels.dataset_sample_name("training_dataset")
    readmodels.export_read_model(sample, mgmt.settings.readmodels_dir, name,
                                 extra={"fingerprint": "abc", "rows": 800, "features": world.features})
    with _api(mgmt) as api:
        items = api.get("/api/v1/features/datasets").json()["items"]
        assert [(d["id"], d["rows"], d["sample_rows"], d["fingerprint"]) for d in items] == [
            ("training_dataset", 800, 30, "abc")]
        detail = api.get("/api/v1/features/datasets/training_dataset", params={"limit": 5}).json()
        assert len(detail["sample"]) == 5 and detail["sample"][0]["symbol"] == sample["symbol"][0]
        csv = api.get("/api/v1/features/datasets/training_dataset/download")
        assert csv.headers["content-type"].startswith("text/csv") and len(csv.text.splitlines()) == 31
        parquet = api.get("/api/v1/features/datasets/training_dataset/download", params={"format": "parquet"})
        assert parquet.content[:4] == b"PAR1"
        assert api.get("/api/v1/features/datasets/nope").status_code == 404


def test_experiments_models_and_compare(mgmt: Mgmt, world: World) -> None:
    with _api(mgmt) as api:
        experiments = api.get("/api/v1/ml/lifecycle/experiments").json()["items"]
        assert "serving-tests" in {e["name"] for e in experiments}
        exp = api.get("/api/v1/ml/lifecycle/experiments/serving-tests", params={"history": "true"}).json()
        run = next(r for r in exp["runs"] if r["run_id"] == world.v1.run_id)
        assert "val_loss" in run["metric_history"] and len(run["epochs"]) >= 2
        one = api.get(f"/api/v1/ml/lifecycle/experiments/serving-tests/runs/{world.v1.run_id}").json()
        assert one["params"]["max_epochs"] == "2"
        assert api.get("/api/v1/ml/lifecycle/experiments/nope").status_code == 404
        models = {m["name"] for m in api.get("/api/v1/ml/lifecycle/models").json()["items"]}
        assert {MODEL, NAME} <= models
        model = api.get(f"/api/v1/ml/lifecycle/models/{NAME}").json()
        assert [v["version"] for v in model["versions"]] == list(reversed(mgmt.versions))
        version = api.get(f"/api/v1/ml/lifecycle/models/{MODEL}/{world.v1.version}").json()
        assert version["tags"][T.TAG_FEATURE_VIEWS] == '{"test_view": "1.0.0"}' and version["run"]["metrics"]
        cmp = api.get(f"/api/v1/ml/lifecycle/models/{MODEL}/compare",
                      params=[("versions", world.v1.version), ("versions", world.v2.version)]).json()
        row = next(m for m in cmp["metrics"] if m["metric"] == "val_loss")
        assert set(row) == {"metric", world.v1.version, world.v2.version}
        assert api.get(f"/api/v1/ml/lifecycle/models/{MODEL}/42").status_code == 404
        assert api.get("/api/v1/ml/lifecycle/models/no_such_model").status_code == 404


def test_model_listing_shows_each_versions_aliases(mgmt: Mgmt) -> None:
    """GET /models/{name} lists every version with the aliases that /models/{name}/{version} shows
    (MLflow 3's search_model_versions answers aliases=[] for every version)."""
    first, second = mgmt.versions[0], mgmt.versions[1]
    mgmt.client.set_registered_model_alias(NAME, "listing-a", first)
    mgmt.client.set_registered_model_alias(NAME, "listing-b", first)
    mgmt.client.set_registered_model_alias(NAME, "listing-c", second)
    try:
        with _api(mgmt) as api:
            model = api.get(f"/api/v1/ml/lifecycle/models/{NAME}").json()
            listed = {v["version"]: v["aliases"] for v in model["versions"]}
            assert {"listing-a", "listing-b"} <= set(listed[first]) and "listing-c" not in listed[first]
            assert "listing-c" in listed[second]
            for version, aliases in listed.items():
                one = api.get(f"/api/v1/ml/lifecycle/models/{NAME}/{version}").json()
                assert sorted(one["aliases"]) == sorted(aliases), version
            by_alias = {a: v for v, aliases in listed.items() for a in aliases}
            assert by_alias == model["aliases"]
    finally:
        for alias in ("listing-a", "listing-b", "listing-c"):
            mgmt.client.delete_registered_model_alias(NAME, alias)


def test_audit_verifies_and_prompts_are_listed(mgmt: Mgmt) -> None:
    with _api(mgmt) as api:
        verify = api.get("/api/v1/audit/verify").json()
        assert verify["ok"] is True and verify["entries"] >= 1
        templates = api.get("/api/v1/prompt-governance/templates").json()["items"]
        assert {"market_narrative", "risk_summary", "signal_explanation"} <= {t["id"] for t in templates}
        one = api.get("/api/v1/prompt-governance/templates/market_narrative").json()
        assert one["template"]["template"] and one["state"] is None
        r = api.put("/api/v1/prompt-governance/templates/market_narrative", json={}, headers=ADMIN)
        assert r.status_code == 405 and "prompts/" in r.json()["detail"]


def test_prompt_review_workflow_over_http(mgmt: Mgmt) -> None:
    base = "/api/v1/prompt-governance/templates"
    with _api(mgmt) as api:
        assert api.post(f"{base}/market_narrative/1.0.0/submit").status_code == 401
        listed = {t["id"]: t for t in api.get(base).json()["items"]}
        version = listed["market_narrative"]["version"]
        path = f"{base}/market_narrative/{version}"
        rendered = api.post(f"{path}/test", json={})
        assert rendered.status_code == 200 and "{{" not in rendered.json()["rendered"]
        missing = api.post(f"{path}/test", json={"variables": {"symbol": "AAA"}})  # MissingVariablesError
        assert missing.status_code == 422 and missing.json()["field"] == "variables", missing.text
        assert "needs variables" in missing.json()["reasons"][0] and missing.json()["detail"]
        r = api.post(f"{path}/submit", headers=ADMIN, json={"comment": "weekly narrative v1"}, timeout=180)
        assert r.status_code == 200, r.text
        assert r.json()["decision"]["state"] == "IN_REVIEW" and r.json()["evaluation"]["passed"]
        refused = api.post(f"{path}/approve", headers=ADMIN)  # the submitter may not approve
        assert refused.status_code == 409 and "submitted this version" in refused.text
        r = api.post(f"{path}/approve", headers=APPROVER, json={"comment": "grounded, on brand"})
        assert r.status_code == 200, r.text
        assert r.json()["decision"]["state"] == "APPROVED" and r.json()["decision"]["actor"] == "bob"
        assert api.get(f"{base}/market_narrative").json()["state"] == "APPROVED"
        assert api.get(f"{base}/no_such_prompt").status_code == 404
        assert api.post(f"{base}/no_such_prompt/1.0.0/submit", headers=ADMIN).status_code == 404
        assert api.put(f"{base}/market_narrative", json={}).status_code == 405
        assert api.get("/api/v1/prompt-governance/usage").status_code == 200
        audit = api.get("/api/v1/audit", params={"subject_id": f"market_narrative/{version}"}).json()["items"]
        assert {"prompt.submitted", "prompt.evaluated", "decision.approved"} <= {a["action"] for a in audit}
        assert api.get("/api/v1/audit/verify").json()["ok"]

"""The team's remaining management-API paths on a real uvicorn, each with real data and its refusals:
deployment requests through the alias mover, experiment creation, usage logged by other services
(the ``service`` role), template version history, the evaluation reports' parts (A/B, fairness, scenario
runs, side by side) with the approval's waivers, feature correlations, platform KPIs, and the 405s that
say why. Last, the OpenAPI documents of both apps against ``docs/api.md``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlops_assets.evaluation.compliance import CompliancePolicy
from mlops_assets.evaluation.report import EvaluationConfig, evaluate_version
from mlops_assets.features import readmodels
from mlops_assets.features.statistics import feature_correlations
from mlops_assets.models import gates as G
from mlops_assets.models import promotion
from mlops_assets.prompts.usage import list_segments, read_usage, usage_log_dir
from mlops_assets.reporting.kpis import HISTORY_READ_MODEL, platform_kpis
from mlops_assets.settings import PROJECT_ROOT
from mlops_assets_tests.evaluation.conftest import FEATURES, make_split, predictor
from mlops_assets_tests.models.governed import compliance_report
from mlops_assets_tests.serving import test_management_api as tm
from mlops_assets_tests.serving.conftest import KEYS, ThreadedServer, World, copy_version
from serving.auth import KeyRing

pytestmark = pytest.mark.xdist_group("serving")
NAME = "paths_model"  # its own registered model: the other API tests count their versions
SERVICE = {"X-API-Key": "service-key-0000000000000001"}
WHY = "regime change after the rate decision; retrain is scheduled"


@pytest.fixture(scope="module")
def mgmt(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tm.Mgmt]:
    """The management API on a real uvicorn, its own MLOPS_HOME, compliance required, plus a service key."""
    from serving.management.main import create_app

    settings = world.settings_for(tmp_path_factory.mktemp("paths_home"))
    settings = settings.model_copy(update={"evaluation": settings.evaluation.model_copy(
        update={"compliance_required": True})})
    settings.ensure_dirs()
    keys = {**KEYS, SERVICE["X-API-Key"]: {"owner": "research-bot", "role": "service"}}
    with ThreadedServer(create_app(settings, keyring=KeyRing.from_config(keys, environ={}))) as server:
        yield tm.Mgmt(server.url, settings, world.client(), None)  # type: ignore[arg-type]


def _version(m: tm.Mgmt, world: World, failed: dict[str, float] | None = None) -> str:
    """A new version of NAME with its evaluation gate and compliance result recorded in the store."""
    version = copy_version(world, NAME, world.v1)
    store = tm._store(m)
    G.record_evaluation(m.client, store, NAME, version, "test_auc", 0.7, 0.5)
    G.record_compliance(m.client, store, NAME, version, compliance_report(failed))
    return version


def test_deployment_request_moves_production_through_the_gates(mgmt: tm.Mgmt, world: World) -> None:
    version = _version(mgmt, world)
    path, body = "/api/v1/ml/lifecycle/deployments", {"model_name": NAME, "version": version, "reason": "weekly"}
    with tm._api(mgmt) as api:
        assert api.post(path, json=body).status_code == 401
        r = api.post(path, json=body, headers=tm.VIEWER)
        assert r.status_code == 403 and "approver" in r.json()["detail"]
        assert api.post(path, json=body, headers=SERVICE).status_code == 403  # a service key logs usage only
        r = api.post(path, json=body, headers=tm.APPROVER)  # not approved yet: the mover refuses, with reasons
        assert r.status_code == 409, r.text
        assert any("approv" in reason.lower() for reason in r.json()["reasons"]), r.json()
        assert "production" not in mgmt.client.get_registered_model(NAME).aliases
        missing = api.post(path, json={**body, "version": "999"}, headers=tm.APPROVER)
        assert missing.status_code == 404 and "999" in missing.json()["detail"]
        assert api.post(path, json={**body, "version": "1x"}, headers=tm.APPROVER).status_code == 422
        promotion.approve(mgmt.client, tm._store(mgmt), NAME, version, reviewer="carol", compliance_required=True)
        r = api.post(path, json=body, headers=tm.APPROVER)
        assert r.status_code == 201, r.text
        made = r.json()
        assert (made["kind"], made["version"], made["actor"], made["created"]) == ("promotion", version, "bob", True)
        assert str(mgmt.client.get_registered_model(NAME).aliases["production"]) == version
        again = api.post(path, json=body, headers=tm.APPROVER)
        assert again.status_code == 200 and again.json()["id"] == made["id"] and not again.json()["created"]
        listed = api.get(path, params={"model": NAME, "health": "false"}).json()["items"]
        assert [(d["id"], d["current"]) for d in listed] == [(made["id"], True)]


def test_experiments_are_created_once(mgmt: tm.Mgmt) -> None:
    path = "/api/v1/ml/lifecycle/experiments"
    body = {"name": "paths-exp", "description": "momentum features, weekly", "tags": {"team": "quant"}}
    with tm._api(mgmt) as api:
        assert api.post(path, json=body, headers=tm.VIEWER).status_code == 403
        assert api.post(path, json={**body, "name": "bad name!"}, headers=tm.APPROVER).status_code == 422
        r = api.post(path, json=body, headers=tm.APPROVER)
        assert r.status_code == 201, r.text
        assert r.json()["tags"] == {"team": "quant", "created_by": "bob",
                                    "mlflow.note.content": "momentum features, weekly"}
        experiment = mgmt.client.get_experiment_by_name("paths-exp")
        assert experiment.experiment_id == r.json()["experiment_id"]
        assert "paths-exp" in {e["name"] for e in api.get(path).json()["items"]}
        again = api.post(path, json=body, headers=tm.APPROVER)
        assert again.status_code == 409 and "already exists" in again.json()["detail"]
        entry = api.get("/api/v1/audit", params={"action": "experiment.created"}).json()["items"][0]
        assert (entry["actor"], entry["subject_id"]) == ("bob", "paths-exp")


def test_services_log_usage_and_nothing_else(mgmt: tm.Mgmt) -> None:
    base = "/api/v1/prompt-governance/templates"
    log_dir = usage_log_dir(mgmt.settings.serving_log_dir)
    call = {"prompt_tokens": 812, "completion_tokens": 164, "latency_ms": 930.5, "llm_latency_ms": 870.0,
            "cost_usd": 0.0042, "model": "gpt-4o-mini", "request_id": "ext-1"}
    with tm._api(mgmt) as api:
        version = {t["id"]: t for t in api.get(base).json()["items"]}["market_narrative"]["version"]
        path = f"{base}/market_narrative/{version}/usage"
        assert api.post(path, json=call).status_code == 401
        for who in (tm.VIEWER, tm.APPROVER):
            r = api.post(path, json=call, headers=who)
            assert r.status_code == 403 and "service" in r.json()["detail"]
        assert api.post(f"{base}/no_such_prompt/1.0.0/usage", json=call, headers=SERVICE).status_code == 404
        r = api.post(f"{base}/market_narrative/99.0.0/usage", json=call, headers=SERVICE)
        assert r.status_code == 404 and "99.0.0" in r.json()["detail"]
        assert api.post(path, json={**call, "prompt_tokens": -1}, headers=SERVICE).status_code == 422
        assert list_segments(log_dir) == []  # nothing written by any refusal
        r = api.post(path, json=call, headers=SERVICE)
        assert r.status_code == 201, r.text
        assert r.json()["logged"]["caller"] == "research-bot" and r.json()["reported_by"] == "research-bot"
        r = api.post(path, json={**call, "caller": "desk-app", "cost_usd": 0.001, "status": "blocked",
                                 "flags": ["ungrounded"]}, headers=tm.ADMIN)  # an admin may too
        assert r.status_code == 201, r.text
        logged = read_usage(log_dir).sort("caller")
        assert logged["caller"].to_list() == ["desk-app", "research-bot"]
        assert logged["cost_usd"].to_list() == [0.001, 0.0042] and logged["prompt_tokens"].to_list() == [812, 812]
        assert set(logged["template_version"]) == {version}
        one = api.get(path).json()
        assert one["summary"]["calls"] == 2 and one["summary"]["succeeded"] == 1 and one["summary"]["flagged"] == 1
        assert one["cost_usd"] == pytest.approx(0.0052)
        assert [(c["caller"], c["calls"]) for c in one["callers"]] == [("desk-app", 1), ("research-bot", 1)]
        every = api.get("/api/v1/prompt-governance/usage").json()["items"]
        assert [(u["template_id"], u["calls"], u["tokens_out"]) for u in every] == [("market_narrative", 2, 328)]
        refused = api.post(f"/api/v1/ml/lifecycle/models/{NAME}/1/approve", headers=SERVICE)
        assert refused.status_code == 403  # nothing else


def test_template_version_history(mgmt: tm.Mgmt) -> None:
    base = "/api/v1/prompt-governance/templates"
    with tm._api(mgmt) as api:
        version = api.get(f"{base}/risk_summary").json()["version"]
        before = api.get(f"{base}/risk_summary/versions").json()
        assert [(i["version"], i["state"], i["decisions"]) for i in before["items"]] == [(version, None, [])]
        assert before["items"][0]["in_library"] and before["items"][0]["evaluations"]["count"] == 0
        r = api.post(f"{base}/risk_summary/{version}/reject", json={"reason": "too vague on limits"},
                     headers=tm.APPROVER)
        assert r.status_code == 200, r.text
        after = api.get(f"{base}/risk_summary/versions").json()["items"]
        assert after[0]["state"] == "REJECTED"
        assert [(d["state"], d["actor"], d["comment"]) for d in after[0]["decisions"]] == [
            ("REJECTED", "bob", "too vague on limits")]
        missing = api.get(f"{base}/no_such_prompt/versions")
        assert missing.status_code == 404 and "no_such_prompt" in missing.json()["detail"]


def _report(m: tm.Mgmt, version: str, champion: bool) -> Path:
    """A real evaluation report of NAME ``version`` (small synthetic split), where the asset writes it."""
    out = m.settings.reports_dir / "evaluation" / NAME / version
    config = EvaluationConfig(explain=False, n_boot=100, stress_windows=1, stress_window_days=10,
                              scenarios=[{"name": "first_month", "start": "2023-01-02", "end": "2023-01-31"}])
    policy = CompliancePolicy(fairness_limits={"disparate_impact_ratio": 0.6, "equalized_odds_difference": 0.3})
    evaluate_version("binary", make_split("binary", seed=int(version)), FEATURES, predictor("binary"),
                     predictor("binary", np.array([0.6, 0.3, 1.0])) if champion else None,
                     make_split("binary", seed=50), policy, 0.1, out, config=config, model_version=version)
    return out


def test_evaluation_parts_side_by_side_and_waivers(mgmt: tm.Mgmt, world: World) -> None:
    a = _version(mgmt, world, failed={"drift_share": 0.62})
    b = _version(mgmt, world)
    import json

    docs = {v: json.loads((_report(mgmt, v, champion=v == a) / "evaluation_report.json").read_text())
            for v in (a, b)}
    base = "/api/v1/ml/evaluation"
    with tm._api(mgmt) as api:
        ab = api.get(f"{base}/ab-tests/{NAME}:{a}").json()
        assert ab["ab"]["verdict"] == docs[a]["ab"]["verdict"] and ab["ab"]["n"] == docs[a]["ab"]["n"] > 0
        r = api.get(f"{base}/ab-tests/{NAME}:{b}")  # evaluated without a champion
        assert r.status_code == 404 and f"version {b}" in r.json()["detail"] and "champion" in r.json()["detail"]
        r = api.get(f"{base}/fairness/{NAME}:999")
        assert r.status_code == 404 and "version 999" in r.json()["detail"]
        assert [i["version"] for i in api.get(f"{base}/ab-tests", params={"model": NAME}).json()["items"]] == [a]
        fair = api.get(f"{base}/fairness/{NAME}:{b}").json()
        assert {g["group"] for g in fair["fairness"]["by_group"]} == {"calm", "volatile"}
        assert fair["fairness"]["disparities"] == docs[b]["fairness"]["disparities"]
        assert {c["name"] for c in fair["compliance_checks"]} and all(
            c["name"].startswith("fairness") for c in fair["compliance_checks"])
        listed = api.get(f"{base}/fairness", params={"model": NAME}).json()["items"]
        assert sorted(i["version"] for i in listed) == sorted([a, b])
        bench = api.get(f"{base}/benchmarks/{NAME}:{a}").json()
        assert [s["name"] for s in bench["scenarios"]] == [s["name"] for s in docs[a]["backtest"]["scenarios"]]
        assert "first_month" in {s["name"] for s in bench["scenarios"]} and bench["backtest"]["cost_bps"] == 5.0
        cmp = api.get(f"{base}/compare", params={"a": f"{NAME}:{a}", "b": f"{NAME}:{b}"}).json()
        auc = next(m for m in cmp["metrics"] if m["metric"] == "roc_auc")
        assert auc["a"] == docs[a]["metrics"]["roc_auc"] and auc["b"] == docs[b]["metrics"]["roc_auc"]
        assert auc["difference"] == pytest.approx(auc["b"] - auc["a"])
        assert cmp["ab"] == {"a": docs[a]["ab"]["verdict"], "b": None}
        assert "first_month" in {s["scenario"] for s in cmp["scenarios"]}
        assert api.get(f"{base}/compare", params={"a": f"{NAME}:{a}", "b": f"{NAME}:999"}).status_code == 404
        for path in (f"{base}/ab-tests", f"{base}/fairness/{NAME}:{a}", f"{base}/benchmarks"):
            r = api.post(path, json={}, headers=tm.ADMIN)
            assert r.status_code == 405 and r.headers["allow"] == "GET" and "/runs" in r.json()["detail"]
        # the approval waives the failing drift check: the report served over the API shows it
        r = api.post(f"/api/v1/ml/lifecycle/models/{NAME}/{a}/approve", headers=tm.APPROVER,
                     json={"waivers": [{"check": "drift_share", "reason": WHY}]})
        assert r.status_code == 200, r.text
        report = api.get(f"{base}/runs/{NAME}:{a}/report").json()
        assert report["waivers"]["waivers"] == {"drift_share": WHY} and report["waivers"]["approved_by"] == "bob"
        assert report["report"]["compliance"]["waivers"] == {"drift_share": WHY}
        assert api.get(f"{base}/runs/{NAME}:{b}/report").json()["waivers"] == {}
        md = api.get(f"{base}/runs/{NAME}:{a}/report", params={"format": "markdown"}).text
        assert "## Waivers" in md and WHY in md


def test_feature_correlations(mgmt: tm.Mgmt, world: World) -> None:
    with tm._api(mgmt) as api:
        r = api.get("/api/v1/features/correlations")
        assert r.status_code == 404 and "feature_statistics" in r.json()["hint"]
        corr = feature_correlations(world.data, world.features)  # what the feature_statistics asset exports
        readmodels.export_read_model(corr, mgmt.settings.readmodels_dir, readmodels.CORRELATIONS)
        body = api.get("/api/v1/features/correlations").json()
        n = len(world.features)
        assert body["features"] == world.features and body["total_pairs"] == n * (n - 1) // 2
        reference = np.corrcoef(world.data.select(world.features).to_numpy(), rowvar=False)
        top = body["pairs"][0]
        i, j = world.features.index(top["a"]), world.features.index(top["b"])
        assert top["r"] == pytest.approx(reference[i, j])
        assert abs(top["r"]) == pytest.approx(np.abs(reference[np.triu_indices(n, 1)]).max())
        assert [abs(p["r"]) for p in body["pairs"]] == sorted((abs(p["r"]) for p in body["pairs"]), reverse=True)
        one = api.get("/api/v1/features/correlations", params={"feature": world.features[0]}).json()
        assert one["total_pairs"] == n - 1 and all(world.features[0] in (p["a"], p["b"]) for p in one["pairs"])
        assert api.get("/api/v1/features/correlations", params={"feature": "nope"}).status_code == 404
        r = api.delete("/api/v1/features/correlations", headers=tm.ADMIN)
        assert r.status_code == 405 and r.headers["allow"] == "GET" and "feature_statistics" in r.json()["detail"]
        r = api.post("/api/v1/features/datasets", json={})
        assert r.status_code == 405 and "training_dataset" in r.json()["detail"]


def test_platform_kpis_latest_and_trend(mgmt: tm.Mgmt, world: World) -> None:
    with tm._api(mgmt) as api:
        r = api.get("/api/v1/platform/kpis")
        assert r.status_code == 404 and "platform_kpis" in r.json()["hint"]
        t0 = datetime.now(UTC)
        first = platform_kpis(mgmt.settings, None, None, as_of=t0, model_names=[NAME])
        version = _version(mgmt, world)
        promotion.reject(mgmt.client, tm._store(mgmt), NAME, version, reviewer="bob", reason="drawdown")
        second = platform_kpis(mgmt.settings, None, None, as_of=t0 + timedelta(days=1), model_names=[NAME])
        history = pl.concat([first, second])  # what the platform_kpis asset keeps and exports
        readmodels.export_read_model(history, mgmt.settings.readmodels_dir, HISTORY_READ_MODEL)
        body = api.get("/api/v1/platform/kpis").json()
        assert body["history_points"] == 2 and [i["kpi"] for i in body["items"]] == second["kpi"].to_list()
        rejections = next(i for i in body["items"] if i["kpi"] == "violations_rejections")
        before, after = (f.filter(pl.col("kpi") == "violations_rejections")["value"][0] for f in (first, second))
        assert after == before + 1
        assert (rejections["value"], rejections["previous"], rejections["change"], rejections["direction"]) == (
            after, before, 1.0, "up")
        assert [p["value"] for p in rejections["trend"]] == [before, after]
        one = api.get("/api/v1/platform/kpis", params={"kpi": "violations_rejections", "points": 1}).json()
        assert one["total"] == 1 and [p["value"] for p in one["items"][0]["trend"]] == [after]
        assert api.get("/api/v1/platform/kpis", params={"kpi": "no_such_kpi"}).status_code == 404
        r = api.post("/api/v1/platform/kpis", json={}, headers=tm.ADMIN)
        assert r.status_code == 405 and "platform_kpis_job" in r.json()["detail"]


DOCUMENTED = re.compile(r"`(GET|POST|PUT|DELETE|PATCH) (/[^`?\s]*)")


def _operations(app) -> set[tuple[str, str]]:  # noqa: ANN001 - a FastAPI app
    return {(method.upper(), re.sub(r"\{[^}]+\}", "{}", path))
            for path, operations in app.openapi()["paths"].items() for method in operations}


def test_docs_list_every_operation_of_both_apps(world: World) -> None:
    """docs/api.md names every (method, path) of both OpenAPI documents in a table row, and nothing else."""
    from serving.inference.main import create_app as inference_app
    from serving.management.main import create_app as management_app

    documented = set()
    for line in (PROJECT_ROOT / "docs" / "api.md").read_text().splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            documented |= {(m, re.sub(r"\{[^}]+\}", "{}", p.rstrip("/") or "/"))
                           for m, p in DOCUMENTED.findall(first_cell)}
    served = _operations(inference_app(world.settings)) | _operations(management_app(world.settings))
    assert sorted(served - documented) == [], "in the OpenAPI documents but not in docs/api.md"
    assert sorted(documented - served) == [], "in docs/api.md but served by neither app"
    assert len(served) > 60

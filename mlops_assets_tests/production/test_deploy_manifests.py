"""The deployment files hold what the runbooks promise: probes on /ready and /health, the OpenAI key from a
Secret, an HPA on the serving Deployment, the chart's code location and warehouse pool, and a Grafana
dashboard whose queries only name metrics the serving apps export."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from mlops_assets.settings import PROJECT_ROOT

pytestmark = pytest.mark.xdist_group("production")
DEPLOY = PROJECT_ROOT / "docs" / "deploy"


def _docs(name: str) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text())}


def _container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_serving_manifests_probe_ready_and_health_and_read_the_key_from_a_secret() -> None:
    docs = _docs("serving.yaml")
    stable = docs[("Deployment", "mlops-serving")]
    canary = _docs("serving-canary.yaml")[("Deployment", "mlops-serving-canary")]
    for deployment, alias in ((stable, "production"), (canary, "challenger")):
        c = _container(deployment)
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/health"
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
        env = {e["name"]: e for e in c["env"]}
        assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "OPENAI_API_KEY"
        assert env["MLFLOW_MODEL_STAGE"]["value"] == alias
        assert "--workers" in c["command"] and "PROMETHEUS_MULTIPROC_DIR" in env
    service = docs[("Service", "mlops-serving")]
    assert service["spec"]["selector"] == {"app": "mlops-serving"}  # both tracks behind one Service
    hpa = docs[("HorizontalPodAutoscaler", "mlops-serving")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "mlops-serving" and hpa["spec"]["minReplicas"] >= 2
    api = _docs("management-api.yaml")
    assert ("Service", "mlops-management-api") in api
    api_env = {e["name"] for e in _container(api[("Deployment", "mlops-management-api")])["env"]}
    assert {"MLOPS_API_KEYS", "MLOPS_GOVERNANCE_URL", "MLOPS_AUDIT_KEY"} <= api_env


def test_helm_values_run_this_code_location_with_the_prod_instance_settings() -> None:
    values = yaml.safe_load((DEPLOY / "helm-values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "mlops_assets.definitions"]
    assert values["postgresql"]["enabled"] is False and values["runLauncher"]["type"] == "K8sRunLauncher"
    prod = yaml.safe_load((PROJECT_ROOT / "dagster.prod.yaml").read_text())
    pools, runs = values["concurrency"]["pools"], values["concurrency"]["runs"]
    assert pools["defaultLimit"] == prod["concurrency"]["pools"]["default_limit"] == 1
    assert runs["maxConcurrentRuns"] == prod["concurrency"]["runs"]["max_concurrent_runs"]
    assert runs["tagConcurrencyLimits"] == prod["concurrency"]["runs"]["tag_concurrency_limits"]
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] and prod["run_monitoring"]["enabled"]
    assert prod["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}


def test_grafana_dashboard_queries_name_only_exported_metrics() -> None:
    from prometheus_client import generate_latest

    from serving.metrics import ServingMetrics

    exported = set()
    for prefix in ("mlops_serving", "mlops_api"):
        metrics = ServingMetrics(prefix)
        metrics.observe_request("/predict", "POST", 200, "1", 0.001)
        metrics.observe_request("/predict", "POST", 503, "", 0.001)  # errors appear once one is counted
        metrics.count_predictions("m", "1", "production", 1)
        metrics.swaps.labels("model", "1").inc()
        exported |= {line.split("{")[0].split(" ")[0] for line in generate_latest(metrics.registry).decode().splitlines()
                     if line and not line.startswith("#")}
    dashboard = json.loads((DEPLOY / "grafana-serving.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    used = {name for e in exprs for name in re.findall(r"\b(mlops_[a-z_]+)\b", e)}
    assert used and used <= exported, f"unknown metrics in the dashboard: {sorted(used - exported)}"
    assert {"mlops_serving_ready", "mlops_serving_request_latency_seconds_bucket",
            "mlops_serving_predictions_total"} <= used

"""The deployment files hold what the runbooks promise: probes on /ready and /health, the OpenAI key from a
Secret, an HPA on the serving Deployment, the chart's code location and warehouse pool, and a Grafana
dashboard whose queries only name metrics the serving apps export."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

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


def _app_defined(target: str) -> bool:
    """``module:attr`` names a module of this project that assigns ``attr`` at its top level."""
    module, attr = target.split(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return False
    tree = ast.parse(Path(spec.origin).read_text())
    return any(isinstance(node, ast.Assign) and any(getattr(t, "id", None) == attr for t in node.targets)
               for node in tree.body)


def test_the_image_and_the_manifests_start_the_apps_by_module_from_the_project_root() -> None:
    dockerfile = (PROJECT_ROOT / "serving" / "Dockerfile").read_text()
    workdir = re.findall(r"^WORKDIR (\S+)$", dockerfile, re.M)[-1]
    assert workdir == "/app" and "COPY serving ./serving" in dockerfile  # the project root, as in a checkout
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert cmd[:2] == ["uvicorn", "serving.inference.main:app"]
    expected = {("serving.yaml", "mlops-serving"): "serving.inference.main:app",
                ("serving-canary.yaml", "mlops-serving-canary"): "serving.inference.main:app",
                ("management-api.yaml", "mlops-management-api"): "serving.management.main:app"}
    for (name, deployment), target in expected.items():
        c = _container(_docs(name)[("Deployment", deployment)])
        assert c.get("workingDir", workdir) == workdir, name
        assert c["command"][:2] == ["uvicorn", target], name
    for target in {cmd[1], *expected.values()}:
        assert _app_defined(target), f"{target} is not an app of this project"


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

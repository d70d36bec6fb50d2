"""Canary on live traffic: real uvicorn inference and management apps, a real registry and governance
store. A canary started through the management API gets its share of concurrent requests; a version
that answers a constant is rolled back by the platform's monitor (audited with the measured values) and
a good one is not (it becomes ready); no request fails through the start and the rollback."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest

from mlops_assets import stores
from mlops_assets.models import gates as G
from mlops_assets.models import promotion as P
from mlops_assets.models import tags as T
from mlops_assets_tests.serving.conftest import KEYS, MODEL, ThreadedServer, World, copy_version, wait_ready, wait_until

pytestmark = pytest.mark.xdist_group("serving")
APPROVER_KEY = next(k for k, v in KEYS.items() if v["owner"] == "bob")
CONSTANT_MODEL = Path(__file__).with_name("constant_model.py")  # answers P(up) = 0.99 for every row


def _constant_version(world: World, name: str) -> str:
    """A pyfunc (models-from-code) answering 0.99 for every row, with the champion's lineage tags."""
    client = world.client()
    experiment = mlflow.set_experiment("canary-tests")
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=str(CONSTANT_MODEL), pip_requirements=[])
    tags = dict(client.get_model_version(MODEL, world.v1.version).tags)
    tags.update({T.TAG_WRAPPER: "pyfunc", T.TAG_TASK_TYPE: "binary", T.TAG_REGISTERED_BY: "alice"})
    return str(client.create_model_version(name, source=info.model_uri, run_id=run.info.run_id, tags=tags,
                                           model_id=info.model_id).version)


def _setup(world: World, tmp_path: Path, name: str, candidate: str) -> tuple[Any, Any]:
    settings = world.settings_for(tmp_path / "home", model={"name": name})
    evaluation = settings.evaluation.model_copy(update={
        "canary_check_seconds": 0.5, "canary_min_requests": 30, "canary_window_seconds": 30,
        "canary_hold_seconds": 2.0})
    settings = settings.model_copy(update={"evaluation": evaluation})
    world.write_snapshot(settings.online_dir)
    client, store = world.client(), stores.governance_store(settings)
    champion = copy_version(world, name, world.v1)
    if candidate == "constant":
        version = _constant_version(world, name)
    else:
        version = copy_version(world, name, world.v1)  # the same model again: a good canary
    for v in (champion, version):
        client.set_model_version_tag(name, v, T.TAG_REGISTERED_BY, "alice")
        G.record_evaluation(client, store, name, v, "test_auc", 0.7, 0.5)
        P.approve(client, store, name, v, reviewer="bob", compliance_required=False)
    P.promote(client, store, name, champion, actor="bob", compliance_required=False)
    return settings, (client, store, champion, version)


class Load:
    """Clients posting /predict in threads; every answer (status, variant, version) is kept."""

    def __init__(self, url: str, clients: int = 3) -> None:
        self.url, self.results, self.stop = url, [], threading.Event()
        self.threads = [threading.Thread(target=self._hammer, args=(i,)) for i in range(clients)]

    def _hammer(self, i: int) -> None:
        symbols = ["AAA", "BBB", "CCC", "DDD"]
        with httpx.Client(base_url=self.url, timeout=30) as client:
            n = i
            while not self.stop.is_set():
                n += 1
                try:
                    r = client.post("/predict", json={"symbol": symbols[n % 4]})
                    body = r.json()
                    self.results.append((r.status_code, body.get("variant"), body.get("model_version")))
                except Exception as exc:  # a dropped connection is a failed request too
                    self.results.append((type(exc).__name__, None, None))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def _start_canary(api: str, name: str, version: str) -> dict:
    r = httpx.post(f"{api}/api/v1/ml/lifecycle/models/{name}/canary", timeout=30,
                   json={"version": version, "share": 0.3}, headers={"X-API-Key": APPROVER_KEY})
    assert r.status_code == 201, r.text
    return r.json()


def test_a_constant_canary_is_rolled_back_automatically_and_no_request_fails(world: World, tmp_path: Path) -> None:
    from serving.inference.main import create_app as inference_app
    from serving.management.main import create_app as management_app

    settings, (client, store, champion, broken) = _setup(world, tmp_path, "canary_bad", "constant")
    with ThreadedServer(inference_app(settings)) as inference, ThreadedServer(management_app(settings)) as api:
        wait_ready(inference.url)
        with Load(inference.url) as load:
            wait_until(lambda: len(load.results) >= 30)
            started = _start_canary(api.url, "canary_bad", broken)
            # the monitor checks every 0.5 s here: it may have rolled the canary back before the answer was built
            assert started["canary"]["state"] in ("running", "rolled_back") and started["canary"]["share"] == 0.3
            wait_until(lambda: any(v == "canary" for _, v, _ in load.results), timeout=30)
            wait_until(lambda: P.alias_target(client, "canary_bad", "canary") is None, timeout=60)
            # the server stops routing at its next registry poll; once /ready shows no canary, only requests
            # already in flight (one per client) may still carry the canary's answer
            wait_until(lambda: httpx.get(f"{inference.url}/ready", timeout=5).json().get("canary") is None,
                       timeout=60)
            after = len(load.results) + len(load.threads)
            wait_until(lambda: len(load.results) >= after + 100, timeout=60)
            tail = load.results[after:]
        status = httpx.get(f"{api.url}/api/v1/ml/lifecycle/models/canary_bad/canary", timeout=30).json()

    statuses = {s for s, _, _ in load.results}
    assert statuses == {200}, f"failed requests during the canary: {statuses}"
    assert {(v, m) for _, v, m in load.results} == {("production", champion), ("canary", broken)}
    assert {(v, m) for _, v, m in tail} == {("production", champion)}
    assert P.alias_target(client, "canary_bad", "production") == champion
    entry = next(e for e in store.list_audit(limit=20, action="alias.removed")
                 if e.subject_id == f"canary_bad/{broken}")
    assert entry.actor == "platform" and entry.details["kind"] == "rollback"
    checks = {c["name"]: c for c in entry.details["guardrails"]["checks"]}
    assert checks["prediction_shift"]["passed"] is False
    assert checks["prediction_shift"]["measured"]["canary_mean"] == pytest.approx(0.99)
    assert checks["prediction_shift"]["measured"]["ks_statistic"] > 0.3
    assert entry.details["guardrails"]["window"]["canary_requests"] >= 30
    assert status["state"] == "rolled_back" and status["ended"]["seq"] == entry.seq
    assert store.verify_audit().ok


def test_a_good_canary_holds_and_becomes_ready(world: World, tmp_path: Path) -> None:
    from serving.inference.main import create_app as inference_app
    from serving.management.main import create_app as management_app

    settings, (client, store, champion, good) = _setup(world, tmp_path, "canary_good", "same")
    with ThreadedServer(inference_app(settings)) as inference, ThreadedServer(management_app(settings)) as api:
        wait_ready(inference.url)
        with Load(inference.url) as load:
            wait_until(lambda: len(load.results) >= 30)
            _start_canary(api.url, "canary_good", good)
            ready = wait_until(lambda: store.list_audit(limit=1, action="canary.ready"), timeout=60)
            seen = len(load.results)
            wait_until(lambda: len(load.results) >= seen + 100, timeout=60)
        status = httpx.get(f"{api.url}/api/v1/ml/lifecycle/models/canary_good/canary", timeout=30).json()
        served = httpx.get(f"{inference.url}/ready", timeout=30).json()

    assert {s for s, _, _ in load.results} == {200}
    assert ready[0].actor == "platform" and ready[0].subject_id == f"canary_good/{good}"
    assert json.loads(json.dumps(ready[0].details))["guardrails"]["held"] is True
    assert P.alias_target(client, "canary_good", "canary") == good  # not rolled back; a person promotes
    assert status["state"] == "ready" and status["verdict"]["failed"] == []
    assert served["canary"]["version"] == good and served["canary"]["share"] == 0.3
    assert any(v == "canary" for _, v, _ in load.results[-100:])
    assert not store.list_audit(limit=5, action="alias.removed")

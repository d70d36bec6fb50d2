"""Fixtures for the serving tests: one real MLflow registry with two trained versions, a real
online snapshot, and real uvicorn servers on free ports (threads, or subprocesses where the test
is about the command line).

Training is the expensive part, so ``world`` trains two tiny versions once per session (planted
signal, 2 epochs) and every test reads from it. Tests that move the ``production`` alias of
``MODEL`` restore it; the management-API tests use their own registered model (``copy_version``).
"""

from __future__ import annotations

import os

os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import mlflow  # noqa: E402
import polars as pl  # noqa: E402
import pytest  # noqa: E402
import uvicorn  # noqa: E402
import yaml  # noqa: E402

from mlops_assets.features.online import write_online_snapshot  # noqa: E402
from mlops_assets.features.views import FeatureDef, FeatureView  # noqa: E402
from mlops_assets.models.lightning import TrainConfig  # noqa: E402
from mlops_assets.models.registration import RegisteredModel, train_and_register  # noqa: E402
from mlops_assets.settings import Settings, load_settings  # noqa: E402
from mlops_assets_tests.models.synthetic import make_dataset  # noqa: E402
from mlops_assets_tests.waiting import free_port, wait_until  # noqa: F401 - re-exported for the tests

MODEL = "serving_direction"
VIEW = "test_view"
VIEW_VERSION = "1.0.0"
KEYS = {
    "viewer-key-0000000000000001": {"owner": "victor", "role": "viewer"},
    "approver-key-00000000000001": {"owner": "bob", "role": "approver"},
    "admin-key-000000000000000001": {"owner": "ada", "role": "admin"},
}


def feature_view(features: list[str], version: str = VIEW_VERSION) -> FeatureView:
    return FeatureView(name=VIEW, version=version, owner="team:test",
                       description="planted-signal test features",
                       features=tuple(FeatureDef(f, pl.col("close") * i, f"test feature {f}")
                                     for i, f in enumerate(features)))


@dataclass
class World:
    home: Path
    config_path: Path
    settings: Settings
    data: pl.DataFrame
    features: list[str]
    v1: RegisteredModel
    v2: RegisteredModel

    def client(self) -> mlflow.MlflowClient:
        mlflow.set_tracking_uri(self.settings.mlflow_tracking_uri)
        return mlflow.MlflowClient(tracking_uri=self.settings.mlflow_tracking_uri,
                                   registry_uri=self.settings.mlflow_tracking_uri)

    def write_snapshot(self, online_dir: Path | None = None, version: str = VIEW_VERSION,
                       data: pl.DataFrame | None = None) -> Any:
        frame = (data if data is not None else self.data).select("symbol", "date", *self.features)
        return write_online_snapshot([frame], [feature_view(self.features, version)],
                                     online_dir or self.settings.online_dir)

    def settings_for(self, home: Path | None = None, model: dict[str, Any] | None = None,
                     **serving: Any) -> Settings:
        """Settings on this registry with another home (own snapshot and log dirs) and serving values."""
        return load_settings(env={}, config_path=self.config_for(home, model, **serving))

    def config_for(self, home: Path | None = None, model: dict[str, Any] | None = None,
                   **serving: Any) -> Path:
        """The YAML config file behind :meth:`settings_for` (for servers started as subprocesses)."""
        config = yaml.safe_load(self.config_path.read_text())
        config["serving"].update(serving)
        config["model"].update(model or {})
        if home is not None:  # own snapshot, logs, reports and governance store; the same registry
            config["home"] = str(home)
            config["tracking_uri"] = self.settings.mlflow_tracking_uri
        path = (home or self.home) / f"config-{time.monotonic_ns()}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        return path


def write_config(home: Path, **serving: Any) -> Path:
    config = {
        "home": str(home),
        "model": {"name": MODEL, "experiment_name": "serving-tests", "stage": "production"},
        "serving": {"poll_seconds": 0.2, "log_flush_seconds": 0.2, "log_flush_rows": 50, "access_log": False,
                    "api_keys": KEYS, "max_batch": 100, "max_body_bytes": 20_000, **serving},
        "evaluation": {"compliance_required": False},
    }
    path = home / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    home = tmp_path_factory.mktemp("serving_home")
    config_path = write_config(home)
    settings = load_settings(env={}, config_path=config_path)
    settings.ensure_dirs()
    data, features = make_dataset(n_rows=800, n_features=6, seed=0)
    config = TrainConfig(hidden_sizes=(8,), dropout=0.0, lr=5e-3, batch_size=256, max_epochs=2, patience=1)
    lineage = {"registered_by": "alice", "feature_views": {VIEW: VIEW_VERSION}}
    kwargs = dict(artifact_location=str(settings.artifacts_dir))
    uri = settings.mlflow_tracking_uri
    v1 = train_and_register(data, features, config, uri, "serving-tests", MODEL, lineage, **kwargs)
    v2 = train_and_register(data, features, config.model_copy(update={"seed": 7, "hidden_sizes": (4,)}), uri,
                            "serving-tests", MODEL, lineage, **kwargs)
    w = World(home, config_path, settings, data, features, v1, v2)
    w.client().set_registered_model_alias(MODEL, "production", v1.version)
    w.write_snapshot()
    return w


class FakeDagster:
    """A local stand-in for Dagster's GraphQL endpoint: answers the two mutations the API sends and
    records the requests."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                if "addDynamicPartition" in body["query"]:
                    data = {"addDynamicPartition": {"__typename": "AddDynamicPartitionSuccess",
                                                    "partitionKey": body["variables"]["partitionKey"]}}
                else:
                    data = {"launchRun": {"__typename": "LaunchRunSuccess",
                                          "run": {"runId": "run-123", "status": "QUEUED"}}}
                payload = json.dumps({"data": data}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/graphql"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class ThreadedServer:
    """A real uvicorn server for ``app`` on a free port, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def wait_ready(url: str, timeout: float = 30.0) -> dict:
    def ready() -> dict | None:
        try:
            r = httpx.get(f"{url}/ready", timeout=5)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    return wait_until(ready, timeout)


def copy_version(world: World, name: str, source: RegisteredModel, alias: str | None = None,
                 **tags: str) -> str:
    """Register the already-logged ``source`` model as a new version of ``name`` (no training)."""
    client = world.client()
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(name)
    src_tags = {**client.get_model_version(MODEL, source.version).tags, **tags}
    model_id = source.logged_model_uri.split("/")[-1]
    version = str(client.create_model_version(name, source=source.logged_model_uri, run_id=source.run_id,
                                              tags=src_tags, model_id=model_id).version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


@pytest.fixture()
def inference_server(world: World) -> Iterator[ThreadedServer]:
    """The inference app on the session registry and snapshot (production = v1)."""
    from serving.inference.main import create_app

    with ThreadedServer(create_app(world.settings)) as server:
        wait_ready(server.url)
        yield server

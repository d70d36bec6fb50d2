"""The apps as operators start them: ``uvicorn serving.inference.main:app --workers 2`` and
``uvicorn serving.management.main:app`` from the project root (no PYTHONPATH), as the Docker image
and the manifests do; Prometheus multiprocess metrics summed over workers, and a promotion that every
worker picks up within its poll interval. The seed's ``uvicorn main:app`` inside ``serving/`` still
names the same app."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mlops_assets.monitoring.served import read_closed_segments
from mlops_assets.settings import ENV_VARS, PROJECT_ROOT, load_settings
from mlops_assets_tests.serving.conftest import World, copy_version, free_port, wait_ready, wait_until

pytestmark = pytest.mark.xdist_group("serving")
POLL = 0.5


def _start(args: list[str], config: Path, tmp_path: Path, name: str) -> subprocess.Popen:
    # the config file is the one source: no setting inherited from this process's environment (another
    # test's MLFLOW_TRACKING_URI, the Makefile's MLOPS_HOME) may override it
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", *ENV_VARS)}
    env.update(MLOPS_CONFIG=str(config), PROMETHEUS_MULTIPROC_DIR=str(tmp_path / f"prom-{name}"))
    (tmp_path / f"prom-{name}").mkdir()
    return subprocess.Popen([sys.executable, "-m", "uvicorn", *args], cwd=PROJECT_ROOT, env=env,
                            stdout=(tmp_path / f"{name}.log").open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


class Client:
    """Counts predictions; every call is a new connection, so the kernel may pick either worker."""

    def __init__(self, url: str) -> None:
        self.url, self.served = url, 0

    def predict(self) -> dict:
        with httpx.Client(timeout=30) as fresh:
            r = fresh.post(f"{self.url}/predict", json={"symbol": "CCC"})
        assert r.status_code == 200, r.text
        self.served += 1
        return r.json()


def test_workers_swap_within_a_poll_and_metrics_add_up(world: World, tmp_path: Path) -> None:
    config = world.config_for(tmp_path / "home", model={"name": "cli_model"}, poll_seconds=POLL,
                              access_log=True)
    settings = load_settings(env={}, config_path=config)
    world.write_snapshot(settings.online_dir)
    old = copy_version(world, "cli_model", world.v1, alias="production")
    new = copy_version(world, "cli_model", world.v2)
    port, api_port = free_port(), free_port()
    inference = _start(["serving.inference.main:app", "--host", "127.0.0.1", "--port", str(port),
                        "--workers", "2"], config, tmp_path, "inference")
    api = _start(["serving.management.main:app", "--host", "127.0.0.1", "--port", str(api_port)],
                 config, tmp_path, "api")
    client = Client(f"http://127.0.0.1:{port}")
    try:
        wait_ready(client.url, timeout=120)  # one worker; then both (each request is a new connection)
        wait_until(lambda: all(httpx.get(f"{client.url}/ready", timeout=30).status_code == 200
                               for _ in range(10)), timeout=120)
        wait_until(lambda: all(client.predict()["model_version"] == old for _ in range(10)), timeout=60)
        world.client().set_registered_model_alias("cli_model", "production", new)
        wait_until(lambda: client.predict()["model_version"] == new, timeout=60)
        time.sleep(POLL + 2.0)  # one poll interval (plus the loading time) for the other worker too
        after = [client.predict() for _ in range(40)]
        assert {p["model_version"] for p in after} == {new}, f"a worker still serves {old}"
        bad = httpx.post(f"{client.url}/predict", json={"features": {"nope": 1.0}}, timeout=30)
        assert 400 <= bad.status_code < 500, bad.text
        metrics = httpx.get(f"{client.url}/metrics").text
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                      if line.startswith("mlops_serving_predictions_total{"))
        assert counted == client.served  # summed over the workers' memory-mapped files
        assert httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=30).status_code == 200
        models = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/ml/lifecycle/models", timeout=30).json()
        assert "cli_model" in {m["name"] for m in models["items"]}
    finally:
        _stop(inference)
        _stop(api)
    access = [json.loads(line) for line in (tmp_path / "inference.log").read_text().splitlines()
              if line.startswith("{") and '"path"' in line]
    # a successful /predict is in the prediction log, not the access log (access_log_predictions off)
    assert not [a for a in access if a["path"] == "/predict" and a["status"] == 200]
    assert [a for a in access if a["path"] == "/predict" and 400 <= a["status"] < 500] and \
        [a for a in access if a["path"] == "/ready" and a["status"] == 200]
    keys = {"ts", "method", "status", "latency_ms", "request_id", "model_version"}
    assert all(set(a) >= keys for a in access)
    logged = read_closed_segments(settings.serving_log_dir)  # each worker flushed its buffer at shutdown
    assert logged.height == client.served
    worker_pids = {name.split("-")[-2] for name in logged["segment"]}
    assert len(worker_pids) == 2, f"expected both workers to serve, log segments came from {worker_pids}"


def test_the_seeds_main_app_inside_serving_is_the_inference_app() -> None:
    """``uvicorn main:app`` run inside ``serving/`` imports the shim ``serving/main.py`` as ``main``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import main, serving.inference.main as real; "
            "print(main.__file__, main.app is real.app, type(main.app).__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT / "serving", env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    path, same, kind = out.stdout.split()
    assert Path(path) == PROJECT_ROOT / "serving" / "main.py" and same == "True" and kind == "InferenceApp"

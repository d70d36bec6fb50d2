"""``mlops serve``: the README's one command for both apps. A SIGTERM to it stops both apps gracefully
(the prediction log's last segment is written); an app that cannot start takes the other down and the
command fails naming it; several workers get a multiprocess metrics directory so their counts add up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mlops_assets.monitoring.served import read_closed_segments
from mlops_assets.settings import ENV_VARS, PROJECT_ROOT, load_settings
from mlops_assets_tests.serving.conftest import World, copy_version, free_port, wait_ready, wait_until

pytestmark = pytest.mark.xdist_group("serving")


def _serve(config: Path, tmp_path: Path, *args: str) -> subprocess.Popen:
    # the config file is the one source: no setting inherited from this process's environment (another
    # test's MLFLOW_TRACKING_URI, the Makefile's MLOPS_HOME) may override it
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", *ENV_VARS)}
    env["MLOPS_CONFIG"] = str(config)
    return subprocess.Popen([sys.executable, "-m", "mlops_assets.cli", "serve", *args], cwd=PROJECT_ROOT,
                            env=env, stdout=(tmp_path / "serve.out").open("wb"),
                            stderr=(tmp_path / "serve.err").open("wb"), start_new_session=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _cleanup(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_a_signal_stops_both_apps_and_the_log_is_flushed(world: World, tmp_path: Path, how: str) -> None:
    port, api_port = free_port(), free_port()
    config = world.config_for(tmp_path / "home", model={"name": "serve_cmd_model"}, port=port,
                              api_port=api_port, log_flush_seconds=600, log_flush_rows=100_000)
    settings = load_settings(env={}, config_path=config)
    world.write_snapshot(settings.online_dir)
    copy_version(world, "serve_cmd_model", world.v1, alias="production")
    proc = _serve(config, tmp_path, "--workers", "2")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout=120)  # one worker; then both (each request is a new connection)
        wait_until(lambda: all(httpx.get(f"{url}/ready", timeout=30).status_code == 200 for _ in range(10)),
                   timeout=120)
        assert wait_until(lambda: httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=5).status_code == 200
                          if _listening(api_port) else False, timeout=120)
        served = 0
        for _ in range(12):  # new connections: either worker may answer
            r = httpx.post(f"{url}/predict", json={"symbol": "CCC"}, timeout=30)
            assert r.status_code == 200, r.text
            served += 1
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in httpx.get(f"{url}/metrics").text.splitlines()
                      if line.startswith("mlops_serving_predictions_total{"))
        assert counted == served  # the workers' counts add up (the supervisor set the multiprocess dir)
        assert read_closed_segments(settings.serving_log_dir).height == 0  # nothing flushed yet

        if how == "sigterm":
            os.kill(proc.pid, signal.SIGTERM)  # the supervisor only, as a service manager would
        else:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
        assert proc.wait(timeout=60) == 0, (tmp_path / "serve.err").read_text()
    finally:
        _cleanup(proc)
    assert not _listening(port) and not _listening(api_port)
    # both workers ran their shutdown: every prediction is in a closed segment
    assert read_closed_segments(settings.serving_log_dir).height == served
    said = "SIGTERM: stopping both apps" if how == "sigterm" else "interrupted: stopping both apps"
    assert said in (tmp_path / "serve.err").read_text()


def test_an_app_that_cannot_start_stops_the_other(world: World, tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:  # the management API's port is in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        api_port = taken.getsockname()[1]
        config = world.config_for(tmp_path / "home", port=port, api_port=api_port)
        proc = _serve(config, tmp_path)
        try:
            code = proc.wait(timeout=120)
        finally:
            _cleanup(proc)
    assert code != 0
    err = (tmp_path / "serve.err").read_text()
    assert "the management API exited with code" in err, err
    assert not _listening(port)  # the inference app did not stay up on its own

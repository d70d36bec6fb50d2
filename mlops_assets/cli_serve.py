"""``mlops serve``: run the inference app and the management API as one unit.

Both apps are ``uvicorn`` child processes. The supervisor stops both when

* it gets SIGTERM or SIGHUP (a service manager, ``docker stop``, a closed terminal): each child gets
  SIGTERM, so uvicorn drains its requests and runs the apps' shutdown (the prediction log writes its
  last segment); a child still running after ``grace`` seconds is killed;
* Ctrl-C: the terminal already sent SIGINT to every process in the group, children included; they
  get SIGTERM as well (a second SIGINT would make uvicorn skip its graceful shutdown);
* either app exits on its own (a port in use, a bad setting): the other is stopped too, and the
  command fails naming the app and its exit code, so a half-running pair never passes for a
  running service.

With several inference workers, the workers' Prometheus metrics only add up in multiprocess mode:
unless ``PROMETHEUS_MULTIPROC_DIR`` is set, the supervisor gives them a fresh directory under
``$MLOPS_HOME/serving/prometheus`` (emptied at every start, as the client library requires).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mlops_assets.settings import PROJECT_ROOT, Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class App:
    name: str
    args: list[str]


class Stop(Exception):
    """A signal asked the supervisor to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def serving_apps(settings: Settings, workers: int) -> list[App]:
    """The two uvicorn commands ``mlops serve`` runs."""
    cfg, uvicorn = settings.serving, [sys.executable, "-m", "uvicorn"]
    return [
        App("inference app", [*uvicorn, "serving.inference.main:app", "--host", cfg.host,
                              "--port", str(cfg.port), "--workers", str(workers)]),
        App("management API", [*uvicorn, "serving.management.main:app", "--host", cfg.host,
                               "--port", str(cfg.api_port)]),
    ]


def serving_env(settings: Settings, workers: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The children's environment: a fresh multiprocess metrics directory for several workers, and no
    MLflow download progress bars in the logs."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in the server logs
    if workers > 1 and not env.get(MULTIPROC_ENV):
        directory = Path(settings.serving_log_dir) / "prometheus"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        env[MULTIPROC_ENV] = str(directory)
    return env


def run(apps: list[App], env: dict[str, str], *, grace: float = 30.0, poll: float = 0.2,
        echo: Callable[[str], None] = print) -> int:
    """Start ``apps``, wait until a signal or an app's exit, stop them all; the command's exit code."""
    def on_signal(signum: int, _frame: object) -> None:
        raise Stop(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    procs: list[tuple[App, subprocess.Popen]] = []
    code = 0
    try:
        for app in apps:
            procs.append((app, subprocess.Popen(app.args, cwd=PROJECT_ROOT, env=env)))
        while True:
            ended = [(app, proc.returncode) for app, proc in procs if proc.poll() is not None]
            if ended:
                app, rc = ended[0]
                echo(f"mlops serve: the {app.name} exited with code {rc}; stopping the others")
                code = rc if rc >= 0 else 128 - rc  # killed by signal N: 128 + N, as a shell reports it
                break
            time.sleep(poll)
    except Stop as stop:
        echo(f"mlops serve: {stop}: stopping both apps")
        code = 128 + stop.signum if stop.signum != signal.SIGTERM else 0
    except KeyboardInterrupt:
        echo("mlops serve: interrupted: stopping both apps")
        code = 0
    finally:
        # the children must end even if a second signal comes while they drain
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        try:
            _stop_all(procs, grace, echo)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    return code


def _stop_all(procs: list[tuple[App, subprocess.Popen]], grace: float, echo: Callable[[str], None]) -> None:
    """SIGTERM to each running child; kill whatever still runs after ``grace`` s (or a second Ctrl-C)."""
    for _, proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace
    try:
        for app, proc in procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                echo(f"mlops serve: the {app.name} did not stop in {grace:.0f} s; killing it")
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
        echo("mlops serve: interrupted again: killing both apps")
    for _, proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

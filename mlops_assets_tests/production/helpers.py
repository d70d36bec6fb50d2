"""Helpers of the production-readiness tests: the servers of ``.ci/services.sh``, throwaway Postgres
databases, server subprocesses on free loopback ports, and a small TCP forwarder.

The servers are required, not optional: when ``.ci/services.env`` (or the ``MLOPS_TEST_*`` variables)
is missing or a server does not answer, the tests FAIL and say to run ``bash .ci/services.sh``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mlops_assets.settings import PROJECT_ROOT
from mlops_assets_tests.waiting import free_port, wait_until  # noqa: F401 - re-exported for the tests

SERVICES_ENV = PROJECT_ROOT / ".ci" / "services.env"
SESSION = uuid.uuid4().hex[:8]  # names on the shared MLflow server are unique per test session
VARS = ("MLOPS_TEST_PG_URL", "MLOPS_TEST_GOVERNANCE_URL", "MLOPS_TEST_MLFLOW_URL",
        "MLOPS_TEST_MLFLOW_BACKEND_URL", "MLOPS_TEST_MLFLOW_ARTIFACTS")
HOW = "start them with `bash .ci/services.sh` (make test does it first)"

# Small data: the tests are about the stores and the processes, not about model quality.
SMALL_CONFIG: dict[str, Any] = {
    "data": {"n_symbols": 8, "n_days": 320, "seed": 7},
    "features": {"leakage_sample_dates": 1},
    "model": {"max_epochs": 2, "hidden_sizes": [8], "batch_size": 256, "gate_threshold": 0.0},
    "evaluation": {"compliance_required": False, "shap_sample": 20, "stress_windows": 1},
    "serving": {"poll_seconds": 0.5, "log_flush_seconds": 0.2, "log_flush_rows": 200},
}


@dataclass(frozen=True)
class Services:
    pg_url: str  # a role that may create databases (each test session makes its own)
    governance_url: str
    mlflow_url: str
    mlflow_backend_url: str
    mlflow_artifacts: Path


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def load_services() -> Services:
    """The servers' URLs from the environment or ``.ci/services.env``; fails (never skips) without them."""
    values = _read_env_file(SERVICES_ENV) if SERVICES_ENV.exists() else {}
    values.update({k: os.environ[k] for k in VARS if os.environ.get(k)})
    missing = [k for k in VARS if not values.get(k)]
    if missing:
        pytest.fail(f"the production tests need PostgreSQL and an MLflow server, but {', '.join(missing)} "
                    f"are not set and {SERVICES_ENV.relative_to(PROJECT_ROOT)} does not provide them: {HOW}",
                    pytrace=False)
    services = Services(values["MLOPS_TEST_PG_URL"], values["MLOPS_TEST_GOVERNANCE_URL"],
                        values["MLOPS_TEST_MLFLOW_URL"].rstrip("/"), values["MLOPS_TEST_MLFLOW_BACKEND_URL"],
                        Path(values["MLOPS_TEST_MLFLOW_ARTIFACTS"]))
    try:
        import psycopg2

        psycopg2.connect(dsn(services.pg_url), connect_timeout=5).close()
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {redact(services.pg_url)} does not answer ({type(exc).__name__}): {HOW}",
                    pytrace=False)
    try:
        httpx.get(f"{services.mlflow_url}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(f"the MLflow server at {services.mlflow_url} does not answer ({exc}): {HOW}", pytrace=False)
    return services


def dsn(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg2://``) as a libpq DSN for psycopg2."""
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def with_database(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


@contextmanager
def fresh_database(services: Services, prefix: str) -> Iterator[str]:
    """A new, empty Postgres database (SQLAlchemy URL); dropped afterwards."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(dsn(services.pg_url))
    admin.autocommit = True
    try:
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
        yield with_database(services.pg_url, name)
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def pg_query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(dsn(url)) as con, con.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def pg_find_text(url: str, needle: str) -> list[str]:
    """Every ``table.column`` of a Postgres database holding ``needle`` in any text, JSON or bytea value."""
    columns = pg_query(url, "SELECT table_name, column_name, data_type FROM information_schema.columns "
                            "WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', "
                            "'json', 'jsonb', 'bytea', 'character')")
    found = []
    for table, column, dtype in columns:
        expr = f"convert_from(\"{column}\", 'UTF8')" if dtype == "bytea" else f'"{column}"::text'
        try:
            hits = pg_query(url, f'SELECT count(*) FROM "{table}" WHERE position(%s in {expr}) > 0', (needle,))
        except Exception:  # bytea that is not UTF-8 text: search the raw bytes instead
            hits = pg_query(url, f'SELECT count(*) FROM "{table}" WHERE position(%s::bytea in "{column}") > 0',
                            (needle,))
        if hits[0][0]:
            found.append(f"{table}.{column}")
    return found


def write_config(path: Path, overrides: dict[str, dict[str, Any]] | None = None, **top: Any) -> Path:
    config = {k: dict(v) for k, v in SMALL_CONFIG.items()}
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    config.update(top)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def mlflow_globals_restored() -> Iterator[None]:
    """Put MLflow's process-wide tracking and registry URIs (module globals and the environment variables
    ``mlflow.set_*_uri`` also sets) back as they were: other test folders share the pytest worker."""
    import mlflow.tracking._model_registry.utils as registry
    import mlflow.tracking._tracking_service.utils as tracking

    saved = (tracking._tracking_uri, registry._registry_uri,
             {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")})
    try:
        yield
    finally:
        tracking._tracking_uri, registry._registry_uri = saved[0], saved[1]
        for key, value in saved[2].items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def child_env(**overrides: str | None) -> dict[str, str]:
    """The test process's environment for a child, without PYTHONPATH, with ``overrides`` (None unsets)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true",
               DAGSTER_DISABLE_TELEMETRY="1", PYTHONUNBUFFERED="1")
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class ServerProcess:
    """A server command in its own process group on a free loopback port; output to ``log``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [a.replace("{port}", str(self.port)) for a in args]
        self.env, self.log = env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.args, cwd=PROJECT_ROOT, env=self.env, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def uvicorn_server(app: str, env: dict[str, str], log: Path, workers: int = 1,
                   port: int | None = None) -> ServerProcess:
    return ServerProcess([sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "{port}",
                          "--workers", str(workers)], env, log, port)


def ready_state(url: str) -> tuple[int, dict]:
    try:
        r = httpx.get(f"{url}/ready", timeout=10)
    except httpx.HTTPError:
        return 0, {}
    return r.status_code, (r.json() if r.headers.get("content-type", "").startswith("application/json") else {})


def predict(url: str, body: dict | None = None) -> httpx.Response:
    """One ``/predict`` on a new connection (so the kernel may hand it to any worker)."""
    with httpx.Client(timeout=30) as fresh:
        return fresh.post(f"{url}/predict", json=body or {"symbol": "SYM0001"})


def worker_of(response: dict) -> str:
    """The worker that answered: request ids are ``<random per process>-<counter>``."""
    return response["request_id"].rsplit("-", 1)[0]


class TcpForwarder:
    """Listens on a loopback port and pipes every connection to ``target`` (a store becoming reachable)."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._stop = threading.Event()

    def __enter__(self) -> TcpForwarder:
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sock.close()

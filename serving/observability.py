"""Request ids, the JSON access log and the ASGI middleware that feeds metrics and the log.

The middleware is plain ASGI (no ``BaseHTTPMiddleware``): it times the request, reads the
status from ``http.response.start``, records the Prometheus metrics and queues one access-log
record. The access log is written by a daemon thread as JSON lines (one ``write`` per batch) to
stderr, so the request path only appends a tuple. Handlers put the request id and model version
they used into the ASGI scope (``SCOPE_REQUEST_ID``, ``SCOPE_MODEL_VERSION``). Header values and
bodies are never logged (API keys travel in headers).
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections import deque
from typing import Any, Awaitable, Callable, TextIO

import orjson

from serving.metrics import ServingMetrics

SCOPE_REQUEST_ID = "mlops.request_id"
SCOPE_MODEL_VERSION = "mlops.model_version"

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class RequestIds:
    """Unique, cheap request ids: ``<random per process>-<counter>`` (no uuid on the hot path)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"


class AccessLog:
    """Queue of finished requests written as JSON lines by a background thread."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 0.5, app: str = "inference") -> None:
        self.stream = stream
        self.interval_s = interval_s
        self.app = app
        self._queue: deque[tuple] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, entry: tuple) -> None:
        self._queue.append(entry)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"{self.app}-access-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> int:
        n = len(self._queue)
        if n == 0:
            return 0
        lines = []
        for _ in range(n):
            ts, method, path, status, ms, request_id, version, client = self._queue.popleft()
            lines.append(orjson.dumps({
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z",
                "app": self.app, "method": method, "path": path, "status": status,
                "latency_ms": round(ms, 3), "request_id": request_id, "model_version": version,
                "client": client,
            }))
        stream = self.stream or sys.stderr
        try:
            stream.write(b"\n".join(lines).decode() + "\n")
            stream.flush()
        except (OSError, ValueError):  # closed stream at interpreter exit
            pass
        return n

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()


class ObservabilityMiddleware:
    """Times each HTTP request; records metrics and an access-log entry."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, access_log: AccessLog | None,
                 endpoints: frozenset[str], request_ids: RequestIds) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.endpoints = endpoints
        self.request_ids = request_ids

    def endpoint_label(self, path: str) -> str:
        if path in self.endpoints:
            return path
        for prefix in self.endpoints:  # management API: "/api/v1/features" covers its sub-paths
            if prefix.endswith("/*") and path.startswith(prefix[:-2]):
                return prefix
        return "other"

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope[SCOPE_REQUEST_ID] = self.request_ids.next()
        status = 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - start
            path = scope["path"]
            version = scope.get(SCOPE_MODEL_VERSION, "")
            self.metrics.observe_request(self.endpoint_label(path), scope["method"], status, version, elapsed)
            if self.access_log is not None:
                client = scope.get("client")
                self.access_log.record((time.time(), scope["method"], path, status, elapsed * 1000.0,
                                        scope[SCOPE_REQUEST_ID], version, client[0] if client else None))


def install_json_logging(level: str = "INFO") -> None:
    """Route Python logging (app and uvicorn errors) through one JSON-lines handler on stderr and
    silence uvicorn's own access log (the middleware writes a JSON one instead)."""
    import logging

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            out: dict[str, Any] = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                                   "level": record.levelname, "logger": record.name,
                                   "message": record.getMessage()}
            if record.exc_info:
                out["exception"] = self.formatException(record.exc_info)
            return orjson.dumps(out).decode()

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("serving", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    access.disabled = True

"""Alerts posted to a real local HTTP server: the JSON body, the secret kept out of the logs, and failures
that are logged, never raised."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlops_assets.monitoring.alerts import ALERT_TIMEOUT_SECONDS, send_alert

T0 = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 200
    delay = 0.0

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append({"path": self.path, "type": self.headers["content-type"],
                                    "json": json.loads(body)})
        time.sleep(type(self).delay)
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def hook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"received": [], "status": 200, "delay": 0.0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token", handler
    finally:
        server.shutdown()
        server.server_close()


def test_alert_posts_json(hook, caplog):
    url, handler = hook
    event = {"ts": T0, "episode_id": "drift-1", "share": 0.5, "drifted_columns": ("a", "b")}
    with caplog.at_level(logging.INFO):
        assert send_alert(event, url, logging.getLogger("drift-test")) is True
    assert handler.received == [{
        "path": "/hooks/secret-token",
        "type": "application/json",
        "json": {"ts": "2025-03-03T06:00:00+00:00", "episode_id": "drift-1", "share": 0.5,
                 "drifted_columns": ["a", "b"]},
    }]
    ours = [r.getMessage() for r in caplog.records if r.name == "drift-test"]
    assert ours and not any("secret-token" in m for m in ours)  # (httpx's own INFO log has the URL)
    assert ALERT_TIMEOUT_SECONDS == 5.0


def test_alert_failures_are_logged_never_raised(hook, caplog):
    url, handler = hook
    logger = logging.getLogger("drift-test")
    handler.status = 500
    with caplog.at_level(logging.WARNING):
        assert send_alert({"a": 1}, url, logger) is False
    ours = " ".join(r.getMessage() for r in caplog.records if r.name == "drift-test")
    assert "HTTP 500" in ours and "secret-token" not in ours
    handler.status, handler.delay = 200, 1.0
    assert send_alert({"a": 2}, url, logger, timeout=0.2) is False  # timed out
    assert send_alert({"a": 3}, "http://127.0.0.1:9/unreachable", logger) is False  # connection refused
    assert send_alert({"a": 4}, None, logger) is False  # not configured: logged only
    assert send_alert({"a": {1, 2}}, url, logger) is True  # sets become lists
    assert [r["json"]["a"] for r in handler.received] == [1, 2, [1, 2]]

"""The alert a drift or live-performance decision sends: one JSON POST to the configured webhook
(``monitoring.webhook_url``), which never fails the run that sends it and never logs the hook's secret."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Protocol

import httpx

ALERT_TIMEOUT_SECONDS = 5.0


class _Logger(Protocol):
    def info(self, msg: str, *args: Any) -> Any: ...

    def warning(self, msg: str, *args: Any) -> Any: ...


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def send_alert(
    event: Mapping[str, Any] | Any,
    webhook_url: str | None,
    logger: _Logger | None = None,
    timeout: float = ALERT_TIMEOUT_SECONDS,
) -> bool:
    """POST ``event`` as JSON to ``webhook_url``; True when the hook answered 2xx.

    Never raises: no URL, a network error or an error status is logged (warning) and gives False, so a
    broken hook cannot fail the run that detected drift. ``event`` may be a mapping or a dataclass;
    datetimes are sent as ISO strings.
    """
    log = logger or logging.getLogger(__name__)
    try:
        body = json.dumps(event, default=_jsonable)
    except (TypeError, ValueError) as exc:
        log.warning(f"drift alert not sent: event is not JSON-serialisable ({exc})")
        return False
    if not webhook_url:
        log.info(f"drift alert not sent (no webhook configured): {body}")
        return False
    try:
        response = httpx.post(
            webhook_url, content=body, headers={"content-type": "application/json"}, timeout=timeout
        )
        response.raise_for_status()
    except Exception as exc:  # noqa: BLE001 - an alert must never fail the caller
        if isinstance(exc, httpx.HTTPStatusError):
            detail = f"HTTP {exc.response.status_code}"
        else:
            detail = f"{type(exc).__name__}: {str(exc).replace(webhook_url, _redact(webhook_url))}"
        log.warning(f"drift alert to {_redact(webhook_url)} failed: {detail}")
        return False
    log.info(f"drift alert sent to {_redact(webhook_url)} (HTTP {response.status_code})")
    return True


def _redact(url: str) -> str:
    """The URL without its path and query (webhook URLs often carry a secret token)."""
    try:
        parsed = httpx.URL(url)
        return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")
    except Exception:  # noqa: BLE001
        return "<webhook>"

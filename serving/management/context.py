"""Shared state of the management API: settings, keys, MLflow and governance clients.

The management API reads the exported read-models, MLflow and the governance store; it never
opens the DuckDB warehouse. Clients are created on first use, so the app starts (and answers
``/health``) even before anything has been produced.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from functools import cached_property
from typing import Any

import httpx
from fastapi import Request

from mlops_assets.settings import Settings
from serving.auth import KeyRing

log = logging.getLogger("serving.management")


class ApiContext:
    """One per management-API process (``app.state.ctx``)."""

    def __init__(self, settings: Settings, keyring: KeyRing | None = None) -> None:
        self.settings = settings
        self.keyring = keyring or KeyRing.from_config(settings.serving.api_keys)
        self._models: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._models_lock = threading.Lock()

    @cached_property
    def client(self) -> Any:
        from mlops_assets import stores

        return stores.mlflow_client(self.settings)

    @cached_property
    def store(self) -> Any:
        from mlops_assets import stores

        return stores.governance_store(self.settings)

    @property
    def inference_url(self) -> str:
        s = self.settings.serving
        if s.inference_url:
            return s.inference_url.rstrip("/")
        host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host
        return f"http://{host}:{s.port}"

    def model_wrapper(self, name: str, version: str) -> Any:
        """The loaded wrapper of ``name`` version ``version`` (a small LRU cache of 3)."""
        from mlops_assets.models.wrapper import load_wrapper

        key = (name, str(version))
        with self._models_lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        wrapper = load_wrapper(f"models:/{name}/{version}", self.client)
        with self._models_lock:
            self._models[key] = wrapper
            while len(self._models) > 3:
                self._models.popitem(last=False)
        return wrapper

    def inference_health(self, timeout_s: float = 1.0) -> dict[str, Any]:
        """The inference app's ``/ready`` answer and its request counts per model version (``/metrics``)."""
        url = self.inference_url
        try:
            ready = httpx.get(f"{url}/ready", timeout=timeout_s)
            metrics = httpx.get(f"{url}/metrics", timeout=timeout_s)
        except httpx.HTTPError as exc:
            return {"url": url, "reachable": False, "error": f"{type(exc).__name__}: {exc}"}
        try:
            state = ready.json()
        except ValueError:
            state = {}
        return {"url": url, "reachable": True, "ready": ready.status_code == 200,
                "serving": (state.get("model") or {}).get("version"), "problems": state.get("problems", []),
                "requests_by_version": _requests_by_version(metrics.text)}


def _requests_by_version(text: str) -> dict[str, dict[str, float]]:
    """{model_version: {"requests": n, "4xx": n, "5xx": n}} from the inference app's /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return out
    for family in families:
        if family.name != "mlops_serving_requests":
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            version = sample.labels.get("model_version") or "none"
            row = out.setdefault(version, {"requests": 0.0, "4xx": 0.0, "5xx": 0.0})
            row["requests"] += sample.value
            status = sample.labels.get("status", "")
            if status.startswith(("4", "5")):
                row[f"{status[0]}xx"] += sample.value
    return out


def ctx(request: Request) -> ApiContext:
    return request.app.state.ctx


def records(frame: Any, limit: int | None = None) -> list[dict[str, Any]]:
    """JSON-ready rows of a polars frame (NaN and infinities as null; dates and times as ISO text)."""
    import math
    from datetime import date, datetime

    import polars as pl

    if limit is not None:
        frame = frame.head(limit)
    floats = [c for c, t in frame.schema.items() if t.is_float()]
    if floats:
        frame = frame.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).alias(c)
                                   for c in floats)

    def plain(value: Any) -> Any:
        if isinstance(value, (datetime, date)):
            return value.isoformat()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return [{k: plain(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]

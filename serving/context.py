"""Shared state of the management API: settings, keys, MLflow and governance clients, error mapping.

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
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from mlflow.exceptions import MlflowException

from mlops_assets.settings import Settings
from serving.auth import KeyRing

log = logging.getLogger("serving.api")


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


def install_error_handlers(app: FastAPI) -> None:
    """Map the platform's errors onto HTTP answers that say what was wrong (never a 500 for bad input)."""
    from mlops_assets.evaluation.errors import EvaluationInputError
    from mlops_assets.features.atomic import PublicationNameError, PublicationNotFoundError
    from mlops_assets.governance.prompts import PromptLibraryError
    from mlops_assets.governance.records import GovernanceError
    from mlops_assets.models.registry import RegistryError

    def answer(status: int, detail: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"detail": detail, **{k: v for k, v in extra.items() if v is not None}}, status)

    @app.exception_handler(PromptLibraryError)
    async def prompt_library(_: Request, exc: PromptLibraryError) -> JSONResponse:
        missing = "no template" in str(exc) or "not found" in str(exc)
        return answer(404 if missing else 422, str(exc))

    @app.exception_handler(GovernanceError)
    async def governance(_: Request, exc: GovernanceError) -> JSONResponse:
        if exc.field == "template_id":  # an unknown prompt template
            return answer(404, str(exc), field=exc.field)
        return answer(409, str(exc), field=exc.field, reasons=getattr(exc, "reasons", None))

    @app.exception_handler(PublicationNotFoundError)
    async def not_published(_: Request, exc: PublicationNotFoundError) -> JSONResponse:
        return answer(404, str(exc))

    @app.exception_handler(PublicationNameError)
    async def bad_name(_: Request, exc: PublicationNameError) -> JSONResponse:
        return answer(422, str(exc))

    @app.exception_handler(RegistryError)
    async def registry(_: Request, exc: RegistryError) -> JSONResponse:
        return answer(422, str(exc), field=exc.field)

    @app.exception_handler(EvaluationInputError)
    async def evaluation(_: Request, exc: EvaluationInputError) -> JSONResponse:
        return answer(422, str(exc))

    @app.exception_handler(MlflowException)
    async def mlflow_error(_: Request, exc: MlflowException) -> JSONResponse:
        code = exc.error_code
        if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return answer(404, exc.message)
        if code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_ALREADY_EXISTS"):
            return answer(422, exc.message)
        log.error("MLflow error: %s", exc.message)
        return answer(502, f"the MLflow store failed: {exc.message}")


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

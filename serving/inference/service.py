"""The inference app's request handling, one :class:`InferenceService` per worker process.

The request path avoids pydantic and pandas: orjson in and out, hand validation against the model's
feature list (``payload.py``), the model's numpy/torch fast path, a deque append for the prediction
log (``predlog.py``) and cached metric children. The runtime (``runtime.py``) polls the registry and
the online snapshot and swaps in new versions. The app around it: ``main.py``.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from typing import Any

import numpy as np
import orjson
from fastapi import Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from mlops_assets.data.schema import ENTITY_KEY
from mlops_assets.errors import PlatformError
from mlops_assets.prompts.usage import UsageRecord
from mlops_assets.settings import Settings
from serving.auth import KeyRing
from serving.errors import error_body, status_of
from serving.inference.payload import PayloadError, build_matrix, parse_payload
from serving.inference.predlog import PredictionLog
from serving.inference.predlog_format import LogRecord
from serving.inference.predlog_shadow import ShadowConfig
from serving.inference.runtime import Runtime, RuntimeConfig
from serving.inference.state import choose
from serving.inference.schemas import InvokeRequest
from serving.metrics import ServingMetrics, mark_process_dead
from serving.observability import SCOPE_MODEL_VERSION, SCOPE_REQUEST_ID, AccessLog, RequestIds

log = logging.getLogger("serving.inference")
JSON = "application/json"
_DUMPS_OPTS = orjson.OPT_SERIALIZE_NUMPY
ENDPOINTS = frozenset({"/predict", "/invoke", "/health", "/ready", "/metrics"})
OVERRIDE_ROLE = "approver"  # the role a key needs to replace the online lookup with request features


def _jsonable(values: Any) -> Any:
    """Numeric C-contiguous arrays go to orjson as they are (fast); anything else as a list."""
    if values is None:
        return None
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf" and values.flags.c_contiguous:
        return values
    return np.asarray(values).tolist()


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, option=_DUMPS_OPTS), status_code=status, media_type=JSON)


def error_response(exc: PayloadError) -> Response:
    return json_response({"detail": exc.detail}, exc.status)


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


CLIENT_CLOSED = 499  # the status the metrics and access log record for a client that went away (nginx's)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes;
    :class:`ClientGone` when the client disconnects before sending all of it."""
    length = request.headers.get("content-length")
    try:
        if length is not None:
            if not length.isdigit():
                raise PayloadError(422, [{"loc": ["header", "content-length"], "msg": "must be an integer",
                                          "type": "int_parsing"}])
            if int(length) > limit:
                raise PayloadError(413, f"body of {length} bytes is over the limit of {limit} "
                                        "(serving.max_body_bytes)")
            return await request.body()
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadError(413, f"body is over the limit of {limit} bytes (serving.max_body_bytes)")
            chunks.append(chunk)
        return b"".join(chunks)
    except ClientDisconnect:
        raise ClientGone() from None


def client_gone() -> Response:
    """What a handler returns when the client went away: never sent, recorded as 499 (not a 500)."""
    return Response(status_code=CLIENT_CLOSED)


async def read_asgi_body(scope: dict, receive: Any, limit: int) -> bytes:
    """Raw-ASGI twin of :func:`read_body` for the ``/predict`` fast path."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            if not value.isdigit():
                raise PayloadError(422, [{"loc": ["header", "content-length"], "msg": "must be an integer",
                                          "type": "int_parsing"}])
            if int(value) > limit:
                raise PayloadError(413, f"body of {value.decode()} bytes is over the limit of {limit} "
                                        "(serving.max_body_bytes)")
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadError(413, f"body is over the limit of {limit} bytes (serving.max_body_bytes)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_JSON_HEADERS = [(b"content-type", JSON.encode())]
_INTERNAL_ERROR = b'{"detail":"internal error while scoring; see the server log"}'


class InferenceService:
    """The request handlers' shared objects (one per worker process)."""

    def __init__(self, settings: Settings, runtime: Runtime | None = None, *,
                 start_background: bool = True) -> None:
        from mlops_assets import stores

        self.settings = settings
        self.metrics = ServingMetrics("mlops_serving")
        self.runtime = runtime or Runtime(
            RuntimeConfig.from_settings(settings), client_factory=lambda: stores.mlflow_client(settings),
            on_swap=lambda kind, version: self.metrics.swaps.labels(kind, version).inc())
        self.predlog = PredictionLog(settings.serving_log_dir, settings.serving.log_flush_rows,
                                     settings.serving.log_flush_seconds,
                                     shadow=ShadowConfig.from_settings(settings))
        from mlops_assets.prompts.usage import UsageLogger, usage_log_dir

        self.usage = UsageLogger(usage_log_dir(settings.serving_log_dir))
        self.access_log = AccessLog(app="inference") if settings.serving.access_log else None
        self.log_successful_predictions = settings.serving.access_log_predictions
        self.request_ids = RequestIds()
        self.start_background = start_background
        self.max_body = settings.serving.max_body_bytes
        self.max_batch = settings.serving.max_batch
        self.challenger_share = settings.serving.challenger_traffic_percent / 100.0
        self.keyring = KeyRing.from_config(settings.serving.api_keys)
        from mlops_assets.monitoring.canary_guardrails import CanaryCounter

        self.canary_counts = CanaryCounter(settings.serving_log_dir)

    def start(self) -> None:
        # Background threads (log flushes, the poller loading a model) hold the GIL in bursts; a 1 ms
        # switch interval (default 5 ms) bounds how long a request waits for the event loop to get it.
        sys.setswitchinterval(0.001)
        try:
            import torch

            torch.set_num_threads(1)  # one intra-op thread per worker: scale with processes instead
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        self.predlog.start()
        self.usage.start()
        self.canary_counts.start()
        if self.access_log is not None:
            self.access_log.start()
        if self.start_background:
            self.runtime.start()

    def wait_first_poll(self) -> None:
        """Called by the app's startup after :meth:`start`: returns once the poller's first look at the
        registry has finished, or after ``serving.startup_wait_seconds`` (then the worker serves 503 with
        the reasons until a poll succeeds)."""
        if self.start_background and not self.runtime.wait_first_poll():
            log.warning("the first registry poll did not finish within %.0f s; accepting requests (503 until a "
                        "model is loaded)", self.runtime.config.startup_wait_seconds)

    def stop(self) -> None:
        self.runtime.stop()
        self.canary_counts.stop()
        self.predlog.close()
        self.usage.close()
        self.metrics.log_dropped.inc(self.predlog.rows_dropped)
        if self.access_log is not None:
            self.access_log.close()
        mark_process_dead()

    def score(self, body: bytes, request_id: str, started: float) -> tuple[int, bytes, str]:
        """The whole of ``/predict`` after the body is read: (status, JSON body, model version)."""
        state = self.runtime.state
        if not state.ready:
            raise PayloadError(503, "not ready: " + "; ".join(state.problems))
        payload = parse_payload(body, self.max_batch)
        model, online, variant = choose(state, random.random(), self.challenger_share)
        if variant != "canary":
            return self._score(state, payload, model, online, variant, request_id, started)
        try:
            answer = self._score(state, payload, model, online, variant, request_id, started)
        except PayloadError:
            raise
        except Exception:  # the canary's model failed: count it against the canary, answer with the champion
            log.exception("canary version %s failed (request %s); the champion answers", model.version, request_id)
            self.canary_counts.add(model.name, model.version, model.loaded_at, error=True)
            return self._score(state, payload, state.model, state.online, "production", request_id, started)
        self.canary_counts.add(model.name, model.version, model.loaded_at, error=False)
        return answer

    def _score(self, state: Any, payload: Any, model: Any, online: Any, variant: str, request_id: str,
               started: float) -> tuple[int, bytes, str]:
        supplied: list = []  # per row, the feature names the request gave (the log's request_features)
        try:
            x, entities = build_matrix(payload, model.features, model.index, online, ENTITY_KEY,
                                       state.snapshot_version, supplied)
        except PayloadError as exc:
            exc.model_version = model.version  # type: ignore[attr-defined]
            raise
        predictions, probabilities = model.predict(x)
        snapshot_version = state.snapshot_version
        latency_ms = (time.perf_counter() - started) * 1000.0
        self.predlog.append(LogRecord(request_id, time.time(), latency_ms, model.name, model.version,
                                      model.alias, variant, snapshot_version, entities, model.features, x,
                                      predictions, probabilities, supplied if any(supplied) else None))
        self.metrics.count_predictions(model.name, model.version, variant, len(entities))
        return 200, orjson.dumps({
            "request_id": request_id, "model_name": model.name, "model_version": model.version,
            "alias": model.alias, "variant": variant, "snapshot_version": snapshot_version,
            "predictions": _jsonable(predictions), "probabilities": _jsonable(probabilities),
        }, option=_DUMPS_OPTS), model.version

    async def predict_asgi(self, scope: dict, receive: Any, send: Any) -> None:
        """``POST /predict`` as a bare ASGI handler: no routing, no framework layers on the hot path."""
        started = time.perf_counter()
        request_id = self.request_ids.next()
        version = ""
        try:
            body = await read_asgi_body(scope, receive, self.max_body)
            status, payload, version = self.score(body, request_id, started)
        except PayloadError as exc:
            status, payload = exc.status, orjson.dumps({"detail": exc.detail})
            version = getattr(exc, "model_version", "")
        except ClientGone:  # nothing to answer; counted as its own outcome
            self.metrics.observe_request("/predict", "POST", CLIENT_CLOSED, version,
                                         time.perf_counter() - started)
            return
        except Exception:
            log.exception("scoring failed (request %s)", request_id)
            status, payload = 500, _INTERNAL_ERROR
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
        elapsed = time.perf_counter() - started
        self.metrics.observe_request("/predict", "POST", status, version, elapsed)
        if self.access_log is not None and (status != 200 or self.log_successful_predictions):
            client = scope.get("client")
            self.access_log.record((time.time(), "POST", "/predict", status, elapsed * 1000.0, request_id,
                                    version, client[0] if client else None))

    async def predict(self, request: Request) -> Response:
        """``POST /predict`` through FastAPI (same logic; used when the FastAPI app is mounted directly)."""
        scope = request.scope
        try:
            body = await read_body(request, self.max_body)
            status, payload, version = self.score(body, scope[SCOPE_REQUEST_ID], time.perf_counter())
        except PayloadError as exc:
            scope[SCOPE_MODEL_VERSION] = getattr(exc, "model_version", "")
            return error_response(exc)
        except ClientGone:
            return client_gone()
        scope[SCOPE_MODEL_VERSION] = version
        return Response(payload, status_code=status, media_type=JSON)

    def _check_override(self, request: Request, features: dict[str, float]) -> None:
        """Request features replace the online lookup, so they need a key with ``OVERRIDE_ROLE`` (401
        without a known key, 403 for a weaker role) and only the names the online snapshot serves
        (422 naming the others; the values are finite numbers by the request schema)."""
        presented = request.headers.get("x-api-key")
        if not presented:
            scheme, _, credentials = (request.headers.get("authorization") or "").partition(" ")
            presented = credentials.strip() if scheme.lower() == "bearer" else None
        if not presented:
            raise PayloadError(401, "'features' replaces the online lookup and needs an API key with the "
                                    f"{OVERRIDE_ROLE!r} role: send 'X-API-Key: <key>' or "
                                    "'Authorization: Bearer <key>', or leave 'features' out")
        identity = self.keyring.authenticate(presented)
        if identity is None:
            raise PayloadError(401, "unknown API key")
        if not identity.allows(OVERRIDE_ROLE):
            raise PayloadError(403, f"{identity.owner} has role {identity.role!r}; overriding 'features' "
                                    f"needs {OVERRIDE_ROLE!r} or higher")
        snapshot = self.runtime.state.snapshot
        if snapshot is None:
            raise PayloadError(503, "no online feature snapshot is loaded, so the chain's inputs are unknown")
        served = set(snapshot.feature_names or ())
        unknown = sorted(name for name in features if name not in served)
        if unknown:
            raise PayloadError(422, [{"loc": ["body", "features", name[:100]], "type": "extra_forbidden",
                                      "msg": "not a feature of the online snapshot the chain reads"}
                                     for name in unknown[:50]])

    async def invoke(self, request: Request) -> Response:
        try:
            body = await read_body(request, self.max_body)
            state = self.runtime.state
            llm = state.llm
            if llm is None:
                cfg = self.runtime.config
                missing = "; ".join(state.llm_problems) or "the first poll has not finished yet"
                raise PayloadError(503, f"the LLM chain {cfg.llm_model_name!r}@{cfg.alias} is not loaded: "
                                        f"{missing}")
            try:
                payload = InvokeRequest.model_validate_json(body)
            except ValidationError as exc:
                raise PayloadError(422, [{"loc": ["body", *(str(p)[:100] if isinstance(p, str) else p
                                                            for p in e.get("loc", ()))],
                                          "msg": e.get("msg", ""), "type": e.get("type", "value_error")}
                                         for e in exc.errors()[:50]]) from None
            if payload.features is not None:
                self._check_override(request, payload.features)
        except PayloadError as exc:
            return error_response(exc)
        except ClientGone:
            return client_gone()
        request.scope[SCOPE_MODEL_VERSION] = f"llm-{llm.version}"
        from mlops_assets.prompts.chat import LLMConfigError
        from mlops_assets.prompts.registry import PromptRegistryError

        started = time.perf_counter()
        request_id = request.scope[SCOPE_REQUEST_ID]
        try:
            answer = await run_in_threadpool(llm.wrapper.predict, payload.model_dump(exclude_none=True))
        except (LLMConfigError, PromptRegistryError) as exc:  # the server's set-up, not the request
            # (before the request's errors: a PromptNotFound is a NotFound, but the client named no prompt)
            return self._invoke_failed(llm, request_id, started, 503, f"the LLM chain cannot answer: {exc}")
        except PlatformError as exc:  # the request's fault, by type: no online features for the symbol
            # (NotFound, 404), a template variable it did not give (InvalidInput, 422)
            return self._invoke_failed(llm, request_id, started, status_of(exc), str(exc), error_body(exc))
        except LookupError as exc:
            return self._invoke_failed(llm, request_id, started, 404, str(exc))
        except ValueError as exc:
            return self._invoke_failed(llm, request_id, started, 422, str(exc))
        except Exception as exc:  # the provider failed (network, quota...): not the client's fault
            log.warning("LLM chain failed: %s: %s", type(exc).__name__, exc)
            return self._invoke_failed(llm, request_id, started, 502,
                                       f"the LLM provider failed: {type(exc).__name__}")
        answer = dict(answer)
        answer.update(request_id=request_id, model_name=llm.name, model_version=llm.version, alias=llm.alias)
        self.usage.log(UsageRecord.from_answer(answer, latency_ms=(time.perf_counter() - started) * 1000,
                                               request_id=request_id))
        return json_response(answer)

    def _invoke_failed(self, llm: Any, request_id: str, started: float, status: int, detail: str,
                       body: dict[str, Any] | None = None) -> Response:
        """Answer an /invoke failure (``body``: the error's ``field`` and ``reasons`` when it has them)
        and record it in the usage log (template, latency, status)."""
        config = getattr(llm.wrapper, "config", None)
        prompt_id = getattr(config, "prompt_id", None) or "unknown"
        self.usage.log(UsageRecord.failure(str(prompt_id), latency_ms=(time.perf_counter() - started) * 1000,
                                           http_status=status, error=detail, request_id=request_id,
                                           model=llm.name))
        return json_response(body or {"detail": detail}, status)

    def ready(self) -> Response:
        state = self.runtime.state
        self.metrics.ready.set(1 if state.ready else 0)
        return json_response(state.describe(), 200 if state.ready else 503)

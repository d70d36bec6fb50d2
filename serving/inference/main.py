"""The inference app: ``/predict`` (tabular model), ``/invoke`` (LLM chain), health, readiness, metrics.

Run it from the project root with ``uvicorn serving.inference.main:app --host 0.0.0.0 --port 8080``
(the Docker image and ``mlops serve`` do). It serves the version behind ``MLFLOW_MODEL_NAME`` +
``MLFLOW_MODEL_STAGE`` (an alias) and enriches requests from the online feature snapshot; a poller
swaps in new versions and snapshots (``runtime.py``). The handlers are in ``service.py``. See
``docs/api.md`` for the request and response shapes.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from mlops_assets.data.schema import ENTITY_KEY
from mlops_assets.settings import Settings, get_settings
from serving.errors import install_error_handlers
from serving.inference.runtime import Runtime
from serving.inference.schemas import Health, InvokeRequest, PredictResponse, Readiness, predict_body_schema
from serving.inference.service import ENDPOINTS, JSON, InferenceService, json_response
from serving.observability import ObservabilityMiddleware, install_json_logging
from serving.schemas import error_responses

_ERRORS = error_responses(404, 413, 422, 503)


class InferenceApp:
    """The ASGI app uvicorn runs: ``POST /predict`` goes straight to the service, the rest to FastAPI.

    FastAPI still declares ``/predict`` (the OpenAPI document, and the same handler when the
    FastAPI app is used on its own); skipping its routing and middleware for the hot path halves
    the CPU time per request.
    """

    def __init__(self, fastapi_app: FastAPI, service: InferenceService) -> None:
        self.fastapi = fastapi_app
        self.service = service
        self.state = fastapi_app.state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/predict" and scope["method"] == "POST":
            await self.service.predict_asgi(scope, receive, send)
        else:
            await self.fastapi(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        return self.fastapi.openapi()


def create_app(settings: Settings | None = None, runtime: Runtime | None = None, *,
               start_background: bool = True) -> InferenceApp:
    """Build the inference app (``settings`` default: ``get_settings()``)."""
    settings = settings or get_settings()
    service = InferenceService(settings, runtime, start_background=start_background)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        install_json_logging()
        service.start()
        await run_in_threadpool(service.wait_first_poll)  # accept connections after the first poll
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="MLOps inference", version="1", lifespan=lifespan,
                  description="Predictions from the model behind the serving alias, enriched from the online "
                              "feature snapshot; the LLM chain at /invoke. See docs/api.md.")
    app.state.service = service
    install_error_handlers(app)

    @app.post("/predict", response_model=PredictResponse, responses=_ERRORS,
              summary="Score one row or a batch",
              openapi_extra={"requestBody": {"required": True, "content": {JSON: {
                  "schema": predict_body_schema(ENTITY_KEY, settings.serving.max_batch)}}}})
    async def predict(request: Request) -> Response:
        return await service.predict(request)

    @app.post("/invoke", responses=error_responses(401, 403, 404, 413, 422, 502, 503),
              summary="Run the LLM chain",
              openapi_extra={"requestBody": {"required": True, "content": {JSON: {
                  "schema": InvokeRequest.model_json_schema()}}}})
    async def invoke(request: Request) -> Response:
        return await service.invoke(request)

    @app.get("/health", response_model=Health, summary="Liveness: the process answers")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}},
             summary="Readiness: a model and a matching snapshot are loaded")
    async def ready() -> Response:
        return service.ready()

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    app.add_middleware(ObservabilityMiddleware, metrics=service.metrics, access_log=service.access_log,
                       endpoints=ENDPOINTS, request_ids=service.request_ids)
    return InferenceApp(app, service)


app = create_app()

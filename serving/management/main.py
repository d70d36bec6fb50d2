"""The management API: what the team's front end calls (its own process and port).

    uvicorn serving.management.main:app --port 8081          (from the project root)

Routers: features and datasets (read-models, ``routes_features``), ML lifecycle (MLflow + governance
store, ``routes_lifecycle``), evaluation (reports, scenarios, Dagster launches, explanations,
``routes_evaluation``), audit (``routes_audit``), prompt governance (``routes_prompts``). Reads are
open; writes need an API key with a role (``serving/auth.py``). It never opens the DuckDB warehouse.
See ``docs/api.md``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI
from starlette.responses import Response

from mlops_assets.settings import Settings, get_settings
from serving.auth import KeyRing
from serving.errors import answer_413_as_json, install_error_handlers
from serving.management import (
    routes_audit,
    routes_canary,
    routes_evaluation,
    routes_features,
    routes_lifecycle,
    routes_live,
    routes_platform,
    routes_prompt_records,
    routes_prompts,
)
from serving.management.context import ApiContext
from serving.metrics import ServingMetrics
from serving.observability import AccessLog, ObservabilityMiddleware, RequestIds, install_json_logging

ENDPOINTS = frozenset({"/health", "/metrics", "/api/v1/features/*", "/api/v1/ml/lifecycle/*",
                       "/api/v1/ml/evaluation/*", "/api/v1/ml/replay/*", "/api/v1/audit/*", "/api/v1/prompt-governance/*"})


def _document_repeat_posts() -> None:
    """A drift event posted again (same source, window and share) is answered 200 with the recorded one,
    next to the route's 201: say so in the OpenAPI document (unless the route already does)."""
    from fastapi.routing import APIRoute

    for route in routes_lifecycle.router.routes:
        if isinstance(route, APIRoute) and route.path.endswith("/drift-events") and "POST" in route.methods:
            route.responses.setdefault(200, {"description": "The same event was already recorded: here it is"})


def create_app(settings: Settings | None = None, keyring: KeyRing | None = None) -> FastAPI:
    """Build the management API (``settings`` default: ``get_settings()``; keys from them and
    ``MLOPS_API_KEYS`` unless ``keyring`` is given)."""
    settings = settings or get_settings()
    context = ApiContext(settings, keyring)
    metrics = ServingMetrics("mlops_api")
    access_log = AccessLog(app="management") if settings.serving.access_log else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        install_json_logging()
        if access_log is not None:
            access_log.start()
        try:
            yield
        finally:
            if access_log is not None:
                access_log.close()

    app = FastAPI(title="MLOps management API", version="1", lifespan=lifespan,
                  max_body_size=settings.serving.max_body_bytes,
                  description="Features, datasets, experiments, models, deployments, drift events, "
                              "evaluation, audit and prompt governance. Reads are open; writes need an API "
                              "key (X-API-Key or Authorization: Bearer). See docs/api.md.")
    app.state.ctx = context
    install_error_handlers(app)
    answer_413_as_json(app, settings.serving.max_body_bytes)
    _document_repeat_posts()
    app.include_router(routes_live.router)  # before routes_lifecycle: its /models/{name}/{version} would take as-of
    for module in (routes_canary, routes_features, routes_lifecycle, routes_evaluation, routes_audit, routes_prompts):
        app.include_router(module.router)
    app.include_router(routes_prompt_records.router)
    app.include_router(routes_platform.router)

    @app.get("/health", tags=["service"], summary="Liveness")
    def health() -> dict[str, Any]:
        return {"status": "ok", "api_keys": len(context.keyring)}

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    app.add_middleware(ObservabilityMiddleware, metrics=metrics, access_log=access_log, endpoints=ENDPOINTS,
                       request_ids=RequestIds())
    return app


app = create_app()

"""One error mapping for both apps: the platform's error types to an HTTP status and one body shape.

Domain code raises the vocabulary of :mod:`mlops_assets.errors`; the status follows the *type*
(never the message text)::

    InvalidInput 422    NotFound 404    Conflict 409    Forbidden 403

Every error answer has the shape :class:`serving.schemas.ErrorMessage`: ``detail`` (a sentence, or
for request-validation errors one ``{loc, msg, type}`` item per bad field), plus ``field`` and
``reasons`` when the error names them. Each app installs :func:`install_error_handlers` once.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mlops_assets.errors import Conflict, Forbidden, InvalidInput, NotFound, PlatformError

log = logging.getLogger("serving.errors")

# the most specific type first: a class may inherit from two of them (e.g. a NotFound that is also
# a governance error); the first match in this order decides
STATUS_BY_TYPE: tuple[tuple[type[PlatformError], int], ...] = (
    (NotFound, 404), (Forbidden, 403), (InvalidInput, 422), (Conflict, 409))


def status_of(exc: PlatformError) -> int:
    """The HTTP status of a platform error, by its type."""
    for kind, status in STATUS_BY_TYPE:
        if isinstance(exc, kind):
            return status
    return 400


def error_body(exc: PlatformError) -> dict[str, Any]:
    """``{"detail": <message>, "field": ..., "reasons": [...], "hint": ...}`` (empty parts left out)."""
    body: dict[str, Any] = {"detail": str(exc)}
    field = getattr(exc, "field", None)
    reasons = getattr(exc, "reasons", None)
    hint = getattr(exc, "hint", None)
    if field:
        body["field"] = str(field)
    if reasons:
        body["reasons"] = [str(r) for r in reasons]
    if hint:
        body["hint"] = str(hint)
    return body


def error_response(exc: PlatformError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_of(exc))


def _legacy_status() -> dict[type[Exception], int]:
    """Domain errors outside the vocabulary that the apps still meet (file-publication errors)."""
    from mlops_assets.features.atomic import PublicationNameError, PublicationNotFoundError

    return {PublicationNotFoundError: 404, PublicationNameError: 422}


def allowed_methods(app: Any, path: str) -> list[str]:
    """The methods the app's OpenAPI document declares for ``path`` (for ``Allow`` on a 405); where
    several path templates match, the one with the most literal segments wins (``/models/{name}/rollback``
    over ``/models/{name}/{version}``)."""
    best, methods = -1, set()
    for template, operations in app.openapi().get("paths", {}).items():
        pattern = "^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"
        if not re.match(pattern, path):
            continue
        literal = sum(1 for part in template.split("/") if part and not part.startswith("{"))
        declared = {m.upper() for m in operations if m in ("get", "put", "post", "delete", "patch", "head")}
        if literal > best:
            best, methods = literal, declared
        elif literal == best:
            methods |= declared
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    """Map the platform's errors (and MLflow's, by error code) onto HTTP answers; never a 500 for input.

    Also answers every 405 with ``Allow`` listing all the methods of the path (Starlette lists only
    those of the first route that matched the path)."""
    from fastapi.exception_handlers import http_exception_handler
    from mlflow.exceptions import MlflowException
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(PlatformError)
    async def platform_error(_: Request, exc: PlatformError) -> JSONResponse:
        return error_response(exc)

    for kind, status in _legacy_status().items():
        async def legacy(_: Request, exc: Exception, status: int = status) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status)

        app.add_exception_handler(kind, legacy)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        if exc.status_code == 405:
            allow = ", ".join(allowed_methods(request.app, request.url.path))
            return JSONResponse({"detail": "Method Not Allowed"}, 405, headers={"Allow": allow})
        return await http_exception_handler(request, exc)

    @app.exception_handler(MlflowException)
    async def mlflow_error(_: Request, exc: MlflowException) -> JSONResponse:
        code = exc.error_code
        if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return JSONResponse({"detail": exc.message}, 404)
        if code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_ALREADY_EXISTS"):
            return JSONResponse({"detail": exc.message}, 422)
        log.error("MLflow error: %s", exc.message)
        return JSONResponse({"detail": f"the MLflow store failed: {exc.message}"}, 502)


class JsonTooLarge:
    """Outermost ASGI wrapper: the body-size limiter's plain-text 413 (FastAPI's ``max_body_size``,
    which answers before any handler runs) is re-sent as the one JSON error body."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.body = orjson_bytes({"detail": f"body is over the limit of {limit} bytes (serving.max_body_bytes)"})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] | None = None

        async def json_send(message: dict[str, Any]) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] == 413:
                kinds = [v for k, v in message.get("headers", []) if k.lower() == b"content-type"]
                if not kinds or kinds[0].startswith(b"text/plain"):
                    held = message
                    return
            if held is not None and message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                headers = [(k, v) for k, v in held.get("headers", [])
                           if k.lower() not in (b"content-type", b"content-length")]
                headers += [(b"content-type", b"application/json"),
                            (b"content-length", str(len(self.body)).encode())]
                held = None
                await send({"type": "http.response.start", "status": 413, "headers": headers})
                await send({"type": "http.response.body", "body": self.body})
                return
            await send(message)

        await self.app(scope, receive, json_send)


def answer_413_as_json(app: FastAPI, limit: int) -> None:
    """Wrap the app's middleware stack (built on first request) in :class:`JsonTooLarge`."""
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: JsonTooLarge(build(), limit)  # type: ignore[method-assign]


def orjson_bytes(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)

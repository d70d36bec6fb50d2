"""What both apps' OpenAPI documents share: the one error body and the error statuses' descriptions.

Each app's own request and response models sit beside it (``serving/inference/schemas.py``,
``serving/management/schemas.py``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """A request body that refuses unknown keys (422 naming them)."""

    model_config = ConfigDict(extra="forbid")


class ErrorItem(BaseModel):
    """One bad field of a request (FastAPI's validation items may carry more keys: input, ctx...)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorMessage(BaseModel):
    """Every error answer of both apps: ``detail`` is a message, or one item per bad field (422);
    errors raised by the platform also name the ``field`` and list the ``reasons``."""

    detail: str | list[ErrorItem]
    field: str | None = Field(None, description="the argument, path part or state the error is about")
    reasons: list[str] | None = Field(None, description="every rule or check that did not hold")
    hint: str | None = Field(None, description="what to do about it")


ERROR_DESCRIPTIONS = {
    400: "The body could not be parsed (e.g. bytes that are not UTF-8 text)",
    401: "No API key, or an unknown one",
    403: "The key's role may not do this",
    404: "The named thing does not exist",
    409: "Valid, but the current state refuses it (a governance rule or gate)",
    413: "The body or the batch is over the server's limits",
    422: "A value is missing, mis-shaped or out of range; `detail` names each field",
    502: "A dependency (MLflow, Dagster, the LLM provider) failed",
    503: "Not ready yet (no model, snapshot or chain loaded; Dagster unreachable)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses, all with the :class:`ErrorMessage` body."""
    return {code: {"model": ErrorMessage, "description": ERROR_DESCRIPTIONS[code]} for code in codes}

"""Request and response models of both apps.

The inference app validates ``/predict`` by hand (``payload.py``) for speed; the JSON schema of
its body is written out here (:func:`predict_body_schema`) so the OpenAPI document still
describes it. The management API uses these pydantic models directly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- inference app ---------------------------------------------------------------------------------


def predict_body_schema(entity_key: str, max_batch: int) -> dict[str, Any]:
    """JSON schema of a ``/predict`` body: one instance, or ``{"instances": [...]}``."""
    instance = {
        "type": "object",
        "title": "Instance",
        "properties": {
            entity_key: {"type": "string", "minLength": 1, "description": "entity key: features come from "
                         "the online snapshot"},
            "features": {"type": "object", "additionalProperties": {"type": "number"},
                         "description": "feature values; override the online ones"},
        },
        "additionalProperties": False,
        "example": {entity_key: "AAA"},
    }
    batch = {
        "type": "object",
        "title": "Batch",
        "properties": {"instances": {"type": "array", "items": instance, "minItems": 1,
                                     "maxItems": max_batch}},
        "required": ["instances"],
        "additionalProperties": False,
    }
    return {"anyOf": [instance, batch]}


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorMessage(BaseModel):
    """Every error answer: ``detail`` is a message, or one item per bad field (422)."""

    detail: str | list[ErrorItem]


class PredictResponse(BaseModel):
    request_id: str = Field(description="id of this request in the prediction log (explanations use it)")
    model_name: str
    model_version: str
    alias: str = Field(description="registry alias the version was loaded from")
    variant: Literal["production", "challenger"]
    snapshot_version: str | None = Field(description="online feature snapshot used for enrichment")
    predictions: list[float | int]
    probabilities: list[float] | list[list[float]] | None = Field(
        description="P(class 1) per instance (binary), class probabilities (multiclass), null (regression)")


class InvokeRequest(_Strict):
    symbol: str = Field(min_length=1)
    features: dict[str, Any] | None = None
    variables: dict[str, Any] | None = None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    model: dict[str, Any] | None
    challenger: dict[str, Any] | None
    snapshot: dict[str, Any] | None
    llm: dict[str, Any] | None
    problems: list[str]
    warnings: list[str]
    polled_at: float | None


# --- management API ---------------------------------------------------------------------------------


class WaiverIn(_Strict):
    """A governed exception: a failing non-critical check and why it may fail."""

    check: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")
    reason: str = Field(min_length=1, max_length=5000)


class DecisionIn(_Strict):
    comment: str | None = Field(None, max_length=5000)
    waivers: list[WaiverIn] = Field(default_factory=list, max_length=50,
                                    description="failing non-critical checks to waive (approver role or above)")


class RejectIn(_Strict):
    reason: str = Field(min_length=1, max_length=5000)


class RollbackIn(_Strict):
    to_version: str = Field(min_length=1, max_length=100, pattern=r"^[0-9]+$")
    reason: str = Field(min_length=1, max_length=5000)
    alias: str | None = Field(None, min_length=1, max_length=100)


class DriftEventIn(_Strict):
    source: str = Field(min_length=1, max_length=300)
    features: list[str] = Field(default_factory=list, max_length=1000)
    drifted_share: float = Field(ge=0.0, le=1.0)
    severity: str = Field(min_length=1, max_length=50)
    action_taken: str | None = Field(None, max_length=200)
    episode_id: str | None = Field(None, max_length=200)
    details: dict[str, Any] = Field(default_factory=dict)
    # the window the share was measured on: with source and share, what makes two posts the same event
    window_start: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="first day, YYYY-MM-DD")
    window_end: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="last day, YYYY-MM-DD")


class ScenarioIn(_Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\- ]+$")
    start: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="first day, YYYY-MM-DD")
    end: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="last day, YYYY-MM-DD")
    description: str | None = Field(None, max_length=2000)


class EvaluationRunIn(_Strict):
    model_name: str | None = Field(None, min_length=1, max_length=300,
                                   description="default: the served model")
    version: str = Field(min_length=1, max_length=100, pattern=r"^[0-9]+$")
    job_name: str | None = Field(None, min_length=1, max_length=200,
                                 description="Dagster job to launch (default: the evaluation job)")


class Page(BaseModel):
    items: list[dict[str, Any]]
    total: int

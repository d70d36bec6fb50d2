"""Request and response models of both apps.

The inference app validates ``/predict`` by hand (``payload.py``) for speed; the JSON schema of
its body is written out here (:func:`predict_body_schema`) so the OpenAPI document still
describes it. The management API uses these pydantic models directly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

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
        # no maxItems: a batch over serving.max_batch is refused with 413 (a limit of the server, like
        # the body size), not 422, so the document says so in words and declares the 413
        "properties": {"instances": {"type": "array", "items": instance, "minItems": 1,
                                     "description": f"at most {max_batch} instances (serving.max_batch); "
                                                    "a larger batch is answered 413"}},
        "required": ["instances"],
        "additionalProperties": False,
    }
    return {"anyOf": [instance, batch]}


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


FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]
MAX_INVOKE_FEATURES = 500


class InvokeRequest(_Strict):
    symbol: str = Field(min_length=1, max_length=100)
    features: dict[str, FiniteNumber] | None = Field(
        None, max_length=MAX_INVOKE_FEATURES,
        description="feature values that replace the online lookup: only names the online snapshot serves, "
                    "finite numbers; needs an API key with the approver role (401/403 otherwise)")
    variables: dict[str, str | int | float | bool] | None = Field(
        None, max_length=50, description="extra template variables (scalars)")


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


# a registry version number: 1 to 9 digits (SQLite and Postgres store it as a 64-bit integer; a longer
# number is refused with 422 naming the field instead of overflowing in the store)
VERSION_NUMBER = r"^[0-9]{1,9}$"


class RollbackIn(_Strict):
    to_version: str = Field(min_length=1, max_length=9, pattern=VERSION_NUMBER,
                            description="registry version number (1 to 9 digits)")
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
    version: str = Field(min_length=1, max_length=9, pattern=VERSION_NUMBER,
                         description="registry version number (1 to 9 digits)")
    job_name: str | None = Field(None, min_length=1, max_length=200,
                                 description="Dagster job to launch (default: the evaluation job)")


class Page(BaseModel):
    items: list[dict[str, Any]]
    total: int

"""Request and response models of the inference app.

``/predict`` is validated by hand (``payload.py``) for speed; the JSON schema of its body is written
out here (:func:`predict_body_schema`) so the OpenAPI document still describes it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from serving.schemas import Strict


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


class InvokeRequest(Strict):
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

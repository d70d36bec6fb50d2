"""Request bodies of the management API (pydantic models, validated by FastAPI)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from serving.schemas import Strict


class WaiverIn(Strict):
    """A governed exception: a failing non-critical check and why it may fail."""

    check: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")
    reason: str = Field(min_length=1, max_length=5000)


class DecisionIn(Strict):
    comment: str | None = Field(None, max_length=5000)
    waivers: list[WaiverIn] = Field(default_factory=list, max_length=50,
                                    description="failing non-critical checks to waive (approver role or above)")


class RejectIn(Strict):
    reason: str = Field(min_length=1, max_length=5000)


# a registry version number: 1 to 9 digits (SQLite and Postgres store it as a 64-bit integer; a longer
# number is refused with 422 naming the field instead of overflowing in the store)
VERSION_NUMBER = r"^[0-9]{1,9}$"


class RollbackIn(Strict):
    to_version: str = Field(min_length=1, max_length=9, pattern=VERSION_NUMBER,
                            description="registry version number (1 to 9 digits)")
    reason: str = Field(min_length=1, max_length=5000)
    alias: str | None = Field(None, min_length=1, max_length=100)


class DriftEventIn(Strict):
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


class ScenarioIn(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\- ]+$")
    start: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="first day, YYYY-MM-DD")
    end: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="last day, YYYY-MM-DD")
    description: str | None = Field(None, max_length=2000)


class EvaluationRunIn(Strict):
    model_name: str | None = Field(None, min_length=1, max_length=300,
                                   description="default: the served model")
    version: str = Field(min_length=1, max_length=9, pattern=VERSION_NUMBER,
                         description="registry version number (1 to 9 digits)")
    job_name: str | None = Field(None, min_length=1, max_length=200,
                                 description="Dagster job to launch (default: the evaluation job)")


class DeploymentIn(Strict):
    """A deployment request: move the production alias to an approved version."""

    version: str = Field(min_length=1, max_length=9, pattern=VERSION_NUMBER,
                         description="registry version number (1 to 9 digits)")
    model_name: str | None = Field(None, min_length=1, max_length=300, pattern=r"^[A-Za-z0-9_.\-]+$",
                                   description="default: the served model (MLFLOW_MODEL_NAME)")
    reason: str | None = Field(None, max_length=5000, description="note for the deployment record")


class ExperimentIn(Strict):
    name: str = Field(min_length=1, max_length=300, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = Field(None, max_length=5000)
    tags: dict[str, str] = Field(default_factory=dict, max_length=50,
                                 description="string tags (keys up to 250 characters, values up to 5000)")


class UsageIn(Strict):
    """One call of a prompt template by another service, for the LLM usage log."""

    prompt_tokens: int = Field(ge=0, le=10_000_000)
    completion_tokens: int = Field(ge=0, le=10_000_000)
    latency_ms: float = Field(ge=0, le=86_400_000, description="the whole call as the caller saw it")
    llm_latency_ms: float | None = Field(None, ge=0, le=86_400_000, description="the model round trip only")
    cost_usd: float | None = Field(None, ge=0, le=1_000_000, description="what the call cost, in US dollars")
    caller: str | None = Field(None, min_length=1, max_length=200,
                               description="the calling application (default: the API key's owner)")
    model: str | None = Field(None, min_length=1, max_length=200, description="the LLM that answered")
    status: Literal["ok", "blocked", "error"] = "ok"
    request_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")
    flags: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=50)
    error: str | None = Field(None, max_length=500)

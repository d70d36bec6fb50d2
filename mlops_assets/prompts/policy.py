"""Evaluation thresholds per risk level, and the result types of a prompt evaluation.

The defaults get stricter with risk: a high-risk template (signal explanations, risk reports) gets a
smaller length budget, a lower toxicity ceiling, stronger groundedness requirements and more
blocking checks than a low-risk one. Override any field through the settings / Dagster ``Config``:
``PromptPolicy.model_validate({"high": {"min_rouge_l": 0.3}})`` keeps the other defaults.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlops_assets.prompts.library import RiskLevel

# check names (stable: the Dagster checks, the CLI and the approval workflow refer to them)
CHECK_SCHEMA = "schema"
CHECK_UNDECLARED = "undeclared_variables"
CHECK_UNUSED = "unused_variables"
CHECK_MALFORMED = "malformed_placeholders"
CHECK_GOLDEN_INPUTS = "golden_inputs"
CHECK_GOLDEN_SIZE = "golden_set_size"
CHECK_TEMPLATE_CHARS = "template_length"
CHECK_PROMPT_TOKENS = "prompt_tokens"
CHECK_OUTPUT_BUDGET = "output_token_budget"
CHECK_TEMPLATE_TOXICITY = "template_toxicity"
CHECK_REFERENCE_GROUNDEDNESS = "reference_groundedness"
CHECK_REFERENCE_NUMBERS = "reference_numbers"
CHECK_OUTPUT_TOXICITY = "output_toxicity"
CHECK_OUTPUT_GROUNDEDNESS = "output_groundedness"
CHECK_OUTPUT_NUMBERS = "output_numbers"
CHECK_JUDGE = "judge_groundedness"
CHECK_EXACT = "exact_match"
CHECK_CONTAINS = "contains_rate"
CHECK_ROUGE = "rouge_l"
CHECK_BLEU = "bleu"


class RiskThresholds(BaseModel):
    """Thresholds for one risk level; checks named in ``advisory`` are reported but never block."""

    model_config = ConfigDict(extra="forbid")
    max_template_chars: int = Field(gt=0)
    max_prompt_tokens: int = Field(gt=0, description="approximate tokens (chars / 4) of a rendered prompt")
    max_output_tokens: int = Field(gt=0, description="cap on model_parameters.max_tokens")
    min_golden_cases: int = Field(default=3, ge=1)
    max_toxicity: float = Field(ge=0, le=1)
    min_sentence_similarity: float = Field(
        ge=-1, le=1, description="cosine for a sentence to count as supported"
    )
    min_semantic_groundedness: float = Field(ge=0, le=1, description="share of supported output sentences")
    max_unsupported_numbers: int = Field(default=0, ge=0)
    min_judge_score: float = Field(ge=0, le=1)
    min_exact_match: float = Field(default=0.0, ge=0, le=1)
    min_contains_rate: float = Field(ge=0, le=1)
    min_rouge_l: float = Field(ge=0, le=1)
    min_bleu: float = Field(ge=0, le=100)
    advisory: list[str] = Field(default_factory=list)


def _defaults(level: str) -> dict[str, Any]:
    return {
        "low": dict(
            max_template_chars=8000, max_prompt_tokens=3000, max_output_tokens=1024, max_toxicity=0.6,
            min_sentence_similarity=0.40, min_semantic_groundedness=0.5, min_judge_score=0.5,
            min_contains_rate=0.67, min_rouge_l=0.15, min_bleu=5.0,
            advisory=[CHECK_EXACT, CHECK_BLEU, CHECK_ROUGE, CHECK_JUDGE, CHECK_OUTPUT_GROUNDEDNESS],
        ),
        "medium": dict(
            max_template_chars=6000, max_prompt_tokens=2000, max_output_tokens=512, max_toxicity=0.5,
            min_sentence_similarity=0.45, min_semantic_groundedness=0.67, min_judge_score=0.7,
            min_contains_rate=0.8, min_rouge_l=0.2, min_bleu=10.0,
            advisory=[CHECK_EXACT, CHECK_BLEU, CHECK_JUDGE],
        ),
        "high": dict(
            max_template_chars=4000, max_prompt_tokens=1500, max_output_tokens=400, max_toxicity=0.4,
            min_sentence_similarity=0.50, min_semantic_groundedness=0.75, min_judge_score=0.8,
            min_contains_rate=1.0, min_rouge_l=0.25, min_bleu=10.0,
            advisory=[CHECK_EXACT, CHECK_BLEU],
        ),
    }[level]


class PromptPolicy(BaseModel):
    """Thresholds by risk level plus evaluation options; partial overrides keep the defaults."""

    model_config = ConfigDict(extra="forbid")
    low: RiskThresholds = Field(default_factory=lambda: RiskThresholds(**_defaults("low")))
    medium: RiskThresholds = Field(default_factory=lambda: RiskThresholds(**_defaults("medium")))
    high: RiskThresholds = Field(default_factory=lambda: RiskThresholds(**_defaults("high")))
    use_llm_judge: bool = True
    judge_model: str | None = Field(default=None, description="defaults to the template's model")
    moderation_model: str | None = None
    numeric_rel_tolerance: float = Field(default=0.0, ge=0, le=0.5)

    @model_validator(mode="before")
    @classmethod
    def _merge_partial(cls, data: Any) -> Any:
        """Let ``{"high": {"min_rouge_l": 0.3}}`` override one field and keep the other defaults."""
        if isinstance(data, dict):
            data = dict(data)
            for level in ("low", "medium", "high"):
                if isinstance(data.get(level), dict):
                    data[level] = {**_defaults(level), **data[level]}
        return data

    def for_level(self, level: RiskLevel) -> RiskThresholds:
        return getattr(self, level)


class CheckResult(BaseModel):
    """One check of one template version."""

    name: str
    passed: bool
    blocking: bool
    value: float | int | str | None = None
    threshold: float | int | str | None = None
    message: str = ""


class CaseReport(BaseModel):
    """What the model answered for one golden case, with the per-case scores."""

    name: str | None
    output: str
    toxicity: float
    semantic_groundedness: float
    unsupported_numbers: list[str]
    judge_score: float | None = None
    usage: dict[str, int] = Field(default_factory=dict)
    latency_ms: float | None = None


class PromptEvaluation(BaseModel):
    """The evaluation of one template version: checks, metrics and the scorers used."""

    template_id: str
    version: str
    content_hash: str
    risk_level: RiskLevel
    checks: list[CheckResult]
    metrics: dict[str, float] = Field(default_factory=dict)
    scorers: dict[str, str] = Field(default_factory=dict)
    cases: list[CaseReport] = Field(default_factory=list)

    @property
    def blocking_failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.blocking and not c.passed]

    @property
    def passed(self) -> bool:
        """True when no blocking check failed."""
        return not self.blocking_failures

    def check(self, name: str) -> CheckResult:
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(f"no check named {name!r}; checks run: {[c.name for c in self.checks]}")

"""Evaluate one prompt template version, and check the whole library before merge.

:func:`evaluate_template` runs, in order:

1. **static checks** (no model): undeclared, unused and malformed placeholders; golden inputs that
   do not cover the variables; golden-set size; length budgets (template characters, approximate
   prompt tokens of each rendered golden case, and the ``max_tokens`` cap) per risk level;
2. **offline checks** (local models only): toxicity of the template and the reference answers
   (``alt-profanity-check``), and groundedness of each reference answer against its case context
   (embeddings + numeric claims), so a golden set that contradicts its own context is caught;
3. **model checks**, only when an LLM client is given: each golden case goes through the model;
   the outputs get toxicity (moderation endpoint when the backend has one, else offline),
   groundedness (semantic + numeric, and an LLM judge unless disabled), and golden-set quality
   (exact match, contains, ROUGE-L, BLEU).

Thresholds and which checks block come from :class:`~mlops_assets.prompts.policy.PromptPolicy`
by the template's risk level. :func:`check_library` is the pre-merge gate (``mlops prompts check``):
it loads each file separately, so one broken file does not hide the others, and runs 1 and 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_assets.prompts import policy as P
from mlops_assets.prompts.golden import CaseRun, golden_metrics, run_golden_set
from mlops_assets.prompts.groundedness import (
    GroundednessReport,
    assess_groundedness,
    judge_groundedness,
    prime_embeddings,
)
from mlops_assets.prompts.policy import (
    CaseReport,
    CheckResult,
    PromptEvaluation,
    PromptPolicy,
    RiskThresholds,
)
from mlops_assets.prompts.library import (
    PromptLibraryError,
    PromptTemplate,
    content_hash,
    load_template,
    malformed_placeholders,
    placeholders,
    render,
    template_files,
)
from mlops_assets.prompts.toxicity import score_toxicity

Metrics = dict[str, float]


def approx_tokens(text: str) -> int:
    """Approximate token count (about 4 characters per token for English with a BPE tokenizer)."""
    return math.ceil(len(text) / 4)


def _check(
    name: str, passed: bool, th: RiskThresholds, value: Any = None, threshold: Any = None, message: str = ""
) -> CheckResult:
    return CheckResult(
        name=name, passed=bool(passed), blocking=name not in th.advisory, value=value,
        threshold=threshold, message=message or ("ok" if passed else "failed"),
    )


def _names(items: Sequence[str]) -> str:
    return ", ".join(sorted(items)) or "none"


def _variable_checks(template: PromptTemplate, th: RiskThresholds) -> list[CheckResult]:
    used = placeholders(template.template)
    declared = set(template.variables)
    undeclared, unused = used - declared, declared - used
    malformed = malformed_placeholders(template.template)
    gaps = {c.name or f"case {i}": sorted(used - set(c.inputs)) for i, c in enumerate(template.golden_set)}
    gaps = {k: v for k, v in gaps.items() if v}
    return [
        _check(P.CHECK_SCHEMA, True, th, message="the template file matches the schema"),
        _check(P.CHECK_UNDECLARED, not undeclared, th, len(undeclared), 0,
               f"placeholders without a declaration under `variables`: {_names(undeclared)}"
               if undeclared else "every placeholder is declared"),
        _check(P.CHECK_UNUSED, not unused, th, len(unused), 0,
               f"declared variables the template never uses: {_names(unused)}; use or remove them"
               if unused else "every declared variable is used"),
        _check(P.CHECK_MALFORMED, not malformed, th, len(malformed), 0,
               f"malformed placeholders {malformed}; write {{{{name}}}} with a Python identifier"
               if malformed else "no malformed placeholders"),
        _check(P.CHECK_GOLDEN_INPUTS, not gaps, th, len(gaps), 0,
               f"golden cases missing inputs: {gaps}" if gaps else "every golden case sets every variable"),
    ]


def _budget_checks(template: PromptTemplate, th: RiskThresholds) -> list[CheckResult]:
    used = placeholders(template.template)
    n = len(template.golden_set)
    chars = len(template.template)
    rendered = [render(template, c.inputs) for c in template.golden_set if not (used - set(c.inputs))]
    tokens = max((approx_tokens(r) for r in rendered), default=approx_tokens(template.template))
    max_tokens = template.model_parameters.max_tokens
    return [
        _check(P.CHECK_GOLDEN_SIZE, n >= th.min_golden_cases, th, n, th.min_golden_cases,
               f"{n} golden cases (at least {th.min_golden_cases} for risk level {template.risk_level})"),
        _check(P.CHECK_TEMPLATE_CHARS, chars <= th.max_template_chars, th, chars, th.max_template_chars,
               f"template has {chars} characters (budget {th.max_template_chars})"),
        _check(P.CHECK_PROMPT_TOKENS, tokens <= th.max_prompt_tokens, th, tokens, th.max_prompt_tokens,
               f"largest rendered golden prompt is about {tokens} tokens (budget {th.max_prompt_tokens})"),
        _check(P.CHECK_OUTPUT_BUDGET, max_tokens <= th.max_output_tokens, th, max_tokens,
               th.max_output_tokens,
               f"model_parameters.max_tokens={max_tokens} (cap {th.max_output_tokens})"),
    ]


def static_checks(template: PromptTemplate, th: RiskThresholds) -> list[CheckResult]:
    """Checks that need neither a model nor the embeddings: variables, golden inputs, budgets."""
    return _variable_checks(template, th) + _budget_checks(template, th)


def _groundedness_checks(
    prefix: str, triples: list[tuple[str, str, str]], th: RiskThresholds, policy: PromptPolicy, embedder: Any
) -> tuple[list[CheckResult], Metrics, list[GroundednessReport]]:
    """Semantic + numeric checks over (case name, text, context) triples; ``prefix`` names them."""
    prime_embeddings([text for _, out, ctx in triples for text in (out, ctx)], embedder)
    reports = [
        assess_groundedness(out, ctx, min_similarity=th.min_sentence_similarity,
                            rel_tolerance=policy.numeric_rel_tolerance, embedder=embedder)
        for _, out, ctx in triples
    ]
    names = [name for name, _, _ in triples]
    semantic = min((r.semantic_score for r in reports), default=1.0)
    weak = {n: r.ungrounded_sentences for n, r in zip(names, reports) if r.semantic_score < 1.0}
    unsupported = {n: r.numeric.unsupported for n, r in zip(names, reports) if r.numeric.unsupported}
    n_unsupported = sum(len(v) for v in unsupported.values())
    reference = prefix == "reference"
    sem_name = P.CHECK_REFERENCE_GROUNDEDNESS if reference else P.CHECK_OUTPUT_GROUNDEDNESS
    num_name = P.CHECK_REFERENCE_NUMBERS if reference else P.CHECK_OUTPUT_NUMBERS
    count = max(len(reports), 1)
    checks = [
        _check(sem_name, semantic >= th.min_semantic_groundedness, th, round(semantic, 4),
               th.min_semantic_groundedness,
               f"worst case: {semantic:.0%} of sentences reach cosine {th.min_sentence_similarity} "
               f"to the context" + (f"; weakly supported: {weak}" if weak else "")),
        _check(num_name, n_unsupported <= th.max_unsupported_numbers, th, n_unsupported,
               th.max_unsupported_numbers,
               f"numbers or dates not found in the context: {unsupported}" if unsupported
               else "every number and date is supported by the context"),
    ]
    metrics = {
        f"{prefix}_semantic_groundedness_min": round(semantic, 4),
        f"{prefix}_mean_similarity": round(sum(r.mean_similarity for r in reports) / count, 4),
        f"{prefix}_numeric_support_rate": round(sum(r.numeric.support_rate for r in reports) / count, 4),
        f"{prefix}_unsupported_numbers": float(n_unsupported),
    }
    return checks, metrics, reports


def offline_checks(
    template: PromptTemplate, th: RiskThresholds, policy: PromptPolicy, embedder: Any = None
) -> tuple[list[CheckResult], Metrics]:
    """Toxicity of the template and references; groundedness of references against their contexts."""
    references = [(c.name or f"case {i}", c.expected.output, c.grounding_context())
                  for i, c in enumerate(template.golden_set) if c.expected.output]
    tox = score_toxicity([template.template] + [r for _, r, _ in references], None, threshold=th.max_toxicity)
    checks = [_check(P.CHECK_TEMPLATE_TOXICITY, not tox.any_flagged, th, round(tox.max_score, 4),
                     th.max_toxicity,
                     f"highest toxicity of the template and references {tox.max_score:.3f} ({tox.scorer})")]
    metrics = {"template_toxicity_max": round(tox.max_score, 4)}
    if references:
        g_checks, g_metrics, _ = _groundedness_checks("reference", references, th, policy, embedder)
        checks += g_checks
        metrics.update(g_metrics)
    return checks, metrics


def _judge_checks(
    client: Any, model: str, triples: list[tuple[str, str, str]], th: RiskThresholds
) -> tuple[list[CheckResult], Metrics, list[float | None]]:
    verdicts = [judge_groundedness(client, model, ctx, out) for _, out, ctx in triples]
    scores = [v.score for v in verdicts]
    scored = [s for s in scores if s is not None]
    if not scored:
        errors = sorted({v.error for v in verdicts if v.error})
        return [CheckResult(name=P.CHECK_JUDGE, passed=False, blocking=False,
                            message=f"judge gave no score: {errors}")], {}, scores
    worst = min(scored)
    check = _check(P.CHECK_JUDGE, worst >= th.min_judge_score, th, round(worst, 4), th.min_judge_score,
                   f"lowest judge score {worst:.2f} over {len(scored)} cases ({model})")
    return [check], {"judge_score_min": round(worst, 4)}, scores


def _quality_checks(runs: list[CaseRun], th: RiskThresholds) -> tuple[list[CheckResult], Metrics]:
    quality = golden_metrics([r.output for r in runs], [r.case for r in runs])
    checks = []
    for name, key, minimum in ((P.CHECK_EXACT, "exact_match", th.min_exact_match),
                               (P.CHECK_CONTAINS, "contains_rate", th.min_contains_rate),
                               (P.CHECK_ROUGE, "rouge_l", th.min_rouge_l),
                               (P.CHECK_BLEU, "bleu", th.min_bleu)):
        if key in quality:
            value = quality[key]
            checks.append(_check(name, value >= minimum, th, round(value, 4), minimum,
                                 f"{key}={value:.3f} (min {minimum})"))
    return checks, {f"golden_{k}": round(v, 4) for k, v in quality.items()}


def model_checks(
    template: PromptTemplate, client: Any, th: RiskThresholds, policy: PromptPolicy,
    embedder: Any = None, use_moderation: bool = True,
) -> tuple[list[CheckResult], Metrics, dict[str, str], list[CaseReport]]:
    """Run the golden set through the model and score the outputs."""
    runs = run_golden_set(client, template.template, template.model_parameters, template.golden_set,
                          template_name=f"prompt template {template.name}")
    tox = score_toxicity([r.output for r in runs], client if use_moderation else None,
                         threshold=th.max_toxicity, moderation_model=policy.moderation_model)
    scorers = {"toxicity": tox.scorer}
    if tox.fallback_reason:
        scorers["toxicity_fallback_reason"] = tox.fallback_reason
    flagged = [r.case.name for r, f in zip(runs, tox.flagged) if f] or "none"
    checks = [_check(P.CHECK_OUTPUT_TOXICITY, not tox.any_flagged, th, round(tox.max_score, 4),
                     th.max_toxicity,
                     f"highest output toxicity {tox.max_score:.3f} ({tox.scorer}); flagged cases: {flagged}")]
    triples = [(r.case.name or f"case {i}", r.output, r.case.grounding_context()) for i, r in enumerate(runs)]
    g_checks, metrics, reports = _groundedness_checks("output", triples, th, policy, embedder)
    checks += g_checks
    metrics["output_toxicity_max"] = round(tox.max_score, 4)
    judge_scores: list[float | None] = [None] * len(runs)
    if policy.use_llm_judge:
        scorers["judge"] = policy.judge_model or template.model_parameters.model
        j_checks, j_metrics, judge_scores = _judge_checks(client, scorers["judge"], triples, th)
        checks += j_checks
        metrics.update(j_metrics)
    q_checks, q_metrics = _quality_checks(runs, th)
    checks += q_checks
    metrics.update(q_metrics)
    cases = [
        CaseReport(name=r.case.name, output=r.output, toxicity=round(t, 4),
                   semantic_groundedness=round(g.semantic_score, 4),
                   unsupported_numbers=g.numeric.unsupported, judge_score=j, usage=r.result.usage(),
                   latency_ms=r.result.latency_ms)
        for r, t, g, j in zip(runs, tox.scores, reports, judge_scores)
    ]
    return checks, metrics, scorers, cases


def evaluate_template(
    template: PromptTemplate,
    llm_client: Any = None,
    policy: PromptPolicy | None = None,
    *,
    embedder: Any = None,
    use_moderation: bool | None = None,
) -> PromptEvaluation:
    """Evaluate one template version (see the module doc). ``llm_client`` is an ``openai.OpenAI``.

    ``use_moderation`` defaults to "when a client is given": the client exists only when
    ``OPENAI_API_KEY`` is set, and a backend without ``/moderations`` falls back to the offline
    scorer (recorded in ``scorers``).
    """
    policy = policy or PromptPolicy()
    th = policy.for_level(template.risk_level)
    checks = static_checks(template, th)
    off_checks, metrics = offline_checks(template, th, policy, embedder)
    checks += off_checks
    scorers = {"template_toxicity": "alt-profanity-check", "embeddings": "all-MiniLM-L6-v2"}
    cases: list[CaseReport] = []
    if llm_client is not None:
        moderation = True if use_moderation is None else use_moderation
        m_checks, m_metrics, m_scorers, cases = model_checks(
            template, llm_client, th, policy, embedder, moderation
        )
        checks += m_checks
        metrics.update(m_metrics)
        scorers.update(m_scorers)
    metrics["blocking_failures"] = float(sum(c.blocking and not c.passed for c in checks))
    return PromptEvaluation(
        template_id=template.id, version=template.version, content_hash=content_hash(template),
        risk_level=template.risk_level, checks=checks, metrics=metrics, scorers=scorers, cases=cases,
    )


@dataclass(frozen=True)
class LibraryProblem:
    """A problem found by :func:`check_library`; ``severity`` is "error" (blocks merge) or "warning"."""

    file: str
    template_id: str | None
    check: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        who = f" [{self.template_id}]" if self.template_id else ""
        return f"{self.severity}: {self.file}{who} {self.check}: {self.message}"


def check_library(
    directory: str | Path, policy: PromptPolicy | None = None, *, embedder: Any = None
) -> list[LibraryProblem]:
    """The pre-merge gate: schema, static and offline checks of every template file in ``directory``."""
    policy = policy or PromptPolicy()
    try:
        files = template_files(directory)
    except PromptLibraryError as exc:
        return [LibraryProblem(str(directory), None, P.CHECK_SCHEMA, str(exc))]
    if not files:
        return [LibraryProblem(str(directory), None, P.CHECK_SCHEMA, "no *.yaml template files found")]
    problems: list[LibraryProblem] = []
    loaded: list[tuple[Path, PromptTemplate]] = []
    for path in files:
        try:
            loaded.append((path, load_template(path)))
        except PromptLibraryError as exc:
            problems.append(LibraryProblem(str(path), None, P.CHECK_SCHEMA, str(exc)))
    # one embedding batch for every reference and context of the library
    prime_embeddings([text for _, t in loaded for c in t.golden_set if c.expected.output
                      for text in (c.expected.output, c.grounding_context())], embedder)
    seen: dict[str, str] = {}
    for path, template in loaded:
        if template.id in seen:
            problems.append(LibraryProblem(str(path), template.id, "duplicate_id",
                                           f"id already used by {seen[template.id]}"))
        seen.setdefault(template.id, str(path))
        if path.stem != template.id:
            problems.append(LibraryProblem(str(path), template.id, "file_name",
                                           f"name the file {template.id}{path.suffix} after the template id"))
        th = policy.for_level(template.risk_level)
        checks = static_checks(template, th) + offline_checks(template, th, policy, embedder)[0]
        problems += [
            LibraryProblem(str(path), template.id, c.name, c.message, "error" if c.blocking else "warning")
            for c in checks if not c.passed
        ]
    return problems

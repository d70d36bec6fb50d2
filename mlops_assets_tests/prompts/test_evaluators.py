"""evaluate_template and check_library: static, offline and model checks with per-risk thresholds."""

from __future__ import annotations

from pathlib import Path

import yaml

from mlops_assets.prompts import policy as P
from mlops_assets.prompts.evaluators import check_library, evaluate_template, static_checks
from mlops_assets.prompts.policy import PromptPolicy
from mlops_assets.prompts.library import load_library, parse_template
from mlops_assets_tests.prompts.test_workflow import template_data

pytest_plugins = ["mlops_assets_tests.conftest_llm"]

LIBRARY = Path(__file__).resolve().parents[2] / "prompts"


def _template(**patch):
    data = template_data("fx_note")
    data.update(patch)
    return parse_template(data)


def test_static_checks_find_undeclared_unused_and_malformed_variables() -> None:
    template = _template(
        template="Write about {{pair}} and {{tenor}} with {{ bad-name }}.",
        variables={"pair": "currency pair", "figures": "never used"},
    )
    th = PromptPolicy().for_level("medium")
    checks = {c.name: c for c in static_checks(template, th)}
    assert not checks[P.CHECK_UNDECLARED].passed and "tenor" in checks[P.CHECK_UNDECLARED].message
    assert not checks[P.CHECK_UNUSED].passed and "figures" in checks[P.CHECK_UNUSED].message
    assert not checks[P.CHECK_MALFORMED].passed and "{{ bad-name }}" in checks[P.CHECK_MALFORMED].message
    assert not checks[P.CHECK_GOLDEN_INPUTS].passed and "tenor" in checks[P.CHECK_GOLDEN_INPUTS].message
    assert all(checks[n].blocking for n in (P.CHECK_UNDECLARED, P.CHECK_UNUSED, P.CHECK_MALFORMED))
    clean = {c.name: c for c in static_checks(_template(), th)}
    assert all(c.passed for c in clean.values())


def test_length_budget_and_golden_size_follow_the_risk_level() -> None:
    long_text = "Write one sentence on {{pair}}. " + "Be factual and neutral. " * 200 + "{{figures}}"
    medium = _template(template=long_text)
    high = _template(template=long_text, risk_level="high", golden_set=_template().golden_set[:2])
    th_medium, th_high = PromptPolicy().for_level("medium"), PromptPolicy().for_level("high")
    m = {c.name: c for c in static_checks(medium, th_medium)}
    h = {c.name: c for c in static_checks(high, th_high)}
    assert m[P.CHECK_TEMPLATE_CHARS].passed  # ~4.8k chars fit the medium budget (6000)...
    assert not h[P.CHECK_TEMPLATE_CHARS].passed  # ...not the high one (4000)
    assert h[P.CHECK_TEMPLATE_CHARS].value == len(long_text) and h[P.CHECK_TEMPLATE_CHARS].threshold == 4000
    assert not h[P.CHECK_GOLDEN_SIZE].passed and h[P.CHECK_GOLDEN_SIZE].value == 2


def test_policy_partial_override_keeps_defaults() -> None:
    policy = PromptPolicy.model_validate({"high": {"min_rouge_l": 0.4}, "use_llm_judge": False})
    assert policy.high.min_rouge_l == 0.4
    assert policy.high.max_toxicity == PromptPolicy().high.max_toxicity
    assert policy.high.max_toxicity < policy.medium.max_toxicity < policy.low.max_toxicity


def test_offline_evaluation_flags_a_reference_that_contradicts_its_context(embedder) -> None:
    good = evaluate_template(_template(), embedder=embedder)
    assert good.passed and good.cases == [] and good.metrics["reference_unsupported_numbers"] == 0
    wrong = {"output": "EURUSD spot was 1.18."}
    cases = [c.model_copy(update={"expected": c.expected.model_copy(update=wrong)})
             for c in _template().golden_set]
    bad = evaluate_template(_template(golden_set=cases), embedder=embedder)
    assert not bad.passed
    assert [c.name for c in bad.blocking_failures] == [P.CHECK_REFERENCE_NUMBERS]
    assert "1.18" in bad.check(P.CHECK_REFERENCE_NUMBERS).message


def test_model_evaluation_with_grounded_outputs(openai_client, fake_openai, embedder) -> None:
    policy = PromptPolicy.model_validate({"medium": {"min_rouge_l": 0.1, "min_contains_rate": 0.0}})
    result = evaluate_template(_template(), openai_client, policy, embedder=embedder)
    assert result.passed, [c for c in result.blocking_failures]
    assert len(result.cases) == 3 and result.cases[0].output == "The spot was 1.080. The change was 0.001."
    assert result.scorers["toxicity"] == "openai-moderation" and result.scorers["judge"] == "fake-gpt"
    assert result.metrics["output_unsupported_numbers"] == 0 and result.metrics["judge_score_min"] == 1.0
    for key in ("golden_rouge_l", "golden_bleu", "golden_exact_match", "golden_contains_rate"):
        assert 0 <= result.metrics[key] <= 100
    assert result.cases[0].usage["total_tokens"] > 0
    paths = [r["path"] for r in fake_openai.requests]
    assert paths.count("/v1/chat/completions") == 6  # 3 cases + 3 judge calls
    assert paths.count("/v1/moderations") == 1


def test_model_evaluation_blocks_hallucinated_and_toxic_outputs(openai_client, fake_openai, embedder) -> None:
    policy = PromptPolicy.model_validate({"medium": {"min_rouge_l": 0.0, "min_contains_rate": 0.0}})
    fake_openai.config.mode = "hallucinate"
    fake_openai.config.moderation_enabled = False
    result = evaluate_template(_template(), openai_client, policy, embedder=embedder)
    failed = {c.name for c in result.blocking_failures}
    assert P.CHECK_OUTPUT_NUMBERS in failed and not result.passed
    assert result.scorers["toxicity"] == "alt-profanity-check"
    assert "NotFoundError" in result.scorers["toxicity_fallback_reason"]
    assert result.check(P.CHECK_JUDGE).value == 0.5 and not result.check(P.CHECK_JUDGE).blocking  # advisory

    fake_openai.config.mode = "toxic"
    toxic = evaluate_template(_template(), openai_client, policy.model_copy(update={"use_llm_judge": False}),
                              embedder=embedder)
    # the abusive sentence is also unsupported by the context; the figures themselves are fine
    assert {c.name for c in toxic.blocking_failures} == {P.CHECK_OUTPUT_TOXICITY, P.CHECK_OUTPUT_GROUNDEDNESS}
    assert toxic.metrics["output_toxicity_max"] > 0.9


def test_shipped_library_passes_check_library(embedder) -> None:
    assert check_library(LIBRARY, embedder=embedder) == []
    for template in load_library(LIBRARY):
        evaluation = evaluate_template(template, embedder=embedder)
        assert evaluation.passed and evaluation.metrics["reference_semantic_groundedness_min"] == 1.0


def test_check_library_reports_each_broken_file(tmp_path: Path, embedder) -> None:
    (tmp_path / "broken.yaml").write_text("id: [\n")
    bad = _template(template="Write about {{pair}} and {{tenor}}.").model_dump(mode="json")
    (tmp_path / "other_name.yaml").write_text(yaml.safe_dump(bad))
    problems = check_library(tmp_path, embedder=embedder)
    by_check = {(Path(p.file).name, p.check) for p in problems}
    assert ("broken.yaml", P.CHECK_SCHEMA) in by_check
    assert {("other_name.yaml", "file_name"), ("other_name.yaml", P.CHECK_UNDECLARED),
            ("other_name.yaml", P.CHECK_UNUSED)} <= by_check
    assert all(p.severity == "error" for p in problems)
    assert "tenor" in str(next(p for p in problems if p.check == P.CHECK_UNDECLARED))

"""Groundedness and toxicity scorers on constructed texts (real models, real HTTP server)."""

from __future__ import annotations

import pytest

from mlops_assets.prompts.groundedness import (
    assess_groundedness,
    check_numeric_claims,
    extract_numbers,
    judge_groundedness,
    parse_judge_answer,
    split_sentences,
)
from mlops_assets.prompts.toxicity import MODERATION_SCORER, OFFLINE_SCORER, score_toxicity

pytest_plugins = ["mlops_assets_tests.conftest_llm"]

CONTEXT = (
    "AAPL closed at 187.42 on 2024-05-02. The one-day return was 0.0131, a gain of 1.31%. "
    "Annualised 20-day volatility was 0.241. Volume was 1.45 times its 20-day average. "
    "Daily traded value was USD 1,840,000,000."
)
PARAPHRASE = (
    "AAPL ended the session at 187.42 on 2024-05-02, up 1.3% on the day. "
    "Its annualised 20-day volatility stood at 24.1%, and volume ran 1.45 times the 20-day average."
)
FLIPPED = PARAPHRASE.replace("up 1.3%", "up 1.8%")
CLEAN = "The stock closed higher on strong volume after the earnings release."
TOXIC = "Whoever bought this garbage is a fucking idiot, shut up."


def test_numeric_claims_tolerate_rounding_units_and_scale() -> None:
    assert check_numeric_claims(PARAPHRASE, CONTEXT).passed
    assert check_numeric_claims("Traded value was USD 1.84 billion, or 1,840M.", CONTEXT).passed
    assert check_numeric_claims("The return was 0.0131 (131 bp).", CONTEXT).passed
    report = check_numeric_claims(FLIPPED, CONTEXT)
    assert report.unsupported == ["1.8%"] and report.support_rate == pytest.approx(1 - 1 / len(report.claims))
    # 187.42 rounds to 187.4, not 187.5
    assert check_numeric_claims("It closed at 187.5.", CONTEXT).unsupported == ["187.5"]
    assert check_numeric_claims("It closed at 187.", CONTEXT).passed  # integer rounding of 187.42
    assert check_numeric_claims("Data as of 2024-05-03.", CONTEXT).unsupported == ["2024-05-03"]
    assert check_numeric_claims("On May 2, 2024 it rose.", CONTEXT).passed  # parts of the ISO date
    assert check_numeric_claims("On May 3, 2024 it rose.", CONTEXT).unsupported == ["3"]
    assert check_numeric_claims("No figures here.", CONTEXT).support_rate == 1.0


def test_number_extraction_reads_units_and_skips_identifiers() -> None:
    found = {(n.text, n.kind) for n in extract_numbers("a 2.5% move, 25bp, $1.2M, rsi_14", identifiers=False)}
    assert found == {("2.5%", "percent"), ("25bp", "bp"), ("$1.2M", "scaled")}
    assert 14.0 in [n.value for n in extract_numbers("rsi_14: 61.8")]  # the context keeps them
    sentences = split_sentences("One. Two 2.5% up!\n- three\n\n* Four?")
    assert sentences == ["One.", "Two 2.5% up!", "three", "Four?"]


def test_semantic_groundedness_separates_paraphrase_from_unrelated(embedder) -> None:
    grounded = assess_groundedness(PARAPHRASE, CONTEXT, min_similarity=0.5, embedder=embedder)
    assert grounded.semantic_score == 1.0 and grounded.numeric.passed and not grounded.ungrounded_sentences
    unrelated = assess_groundedness(
        "The central bank raised interest rates by surprise. Oil prices collapsed after the OPEC meeting.",
        CONTEXT, min_similarity=0.5, embedder=embedder,
    )
    assert unrelated.semantic_score == 0.0 and len(unrelated.ungrounded_sentences) == 2
    assert unrelated.mean_similarity < grounded.mean_similarity - 0.3


def test_flipped_number_paraphrase_is_flagged_although_embeddings_match(embedder) -> None:
    report = assess_groundedness(FLIPPED, CONTEXT, min_similarity=0.5, embedder=embedder)
    assert report.semantic_score == 1.0  # embeddings alone would call it grounded...
    assert report.numeric.unsupported == ["1.8%"]  # ...the numeric check does not
    flagged = [s for s in report.sentences if s.unsupported_numbers]
    assert len(flagged) == 1 and "1.8%" in flagged[0].sentence
    assert report.ungrounded_sentences == [flagged[0].sentence]


def test_offline_toxicity_separates_toxic_from_clean() -> None:
    report = score_toxicity([CLEAN, TOXIC, "", f"{CLEAN} {TOXIC}"], threshold=0.5)
    assert report.scorer == OFFLINE_SCORER and report.fallback_reason is None
    assert report.flagged == [False, True, False, True]  # worst sentence counts in a long text
    assert report.scores[0] < 0.2 and report.scores[1] > 0.8 and report.scores[2] == 0.0


def test_moderation_endpoint_is_used_when_available(openai_client, fake_openai) -> None:
    report = score_toxicity([CLEAN, TOXIC], openai_client)
    assert report.scorer == MODERATION_SCORER and report.flagged == [False, True]
    assert [r["path"] for r in fake_openai.requests] == ["/v1/moderations"]


def test_moderation_falls_back_offline_when_backend_has_none(openai_client, fake_openai) -> None:
    fake_openai.config.moderation_enabled = False  # like vLLM / Ollama
    report = score_toxicity([CLEAN, TOXIC], openai_client)
    assert report.scorer == OFFLINE_SCORER and report.flagged == [False, True]
    assert report.fallback_reason is not None and "NotFoundError 404" in report.fallback_reason


def test_llm_judge_through_openai_client(openai_client) -> None:
    good = judge_groundedness(openai_client, "fake-gpt", CONTEXT, "It closed at 187.42.")
    bad = judge_groundedness(openai_client, "fake-gpt", CONTEXT, "It closed at 199.99.")
    assert good.score == 1.0 and good.error is None
    assert bad.score == 0.0 and bad.unsupported_claims == ["199.99"]
    assert parse_judge_answer("no json", "m").score is None
    assert parse_judge_answer('Sure: {"score": 1.7, "unsupported_claims": []}', "m").score == 1.0

"""Toxicity scores for prompt texts and model outputs, with the scorer that produced them.

Two scorers:

- ``openai-moderation``: ``client.moderations.create`` on an OpenAI-compatible backend; a text's
  score is its highest category score and it is flagged when the endpoint flags it or the score
  reaches the threshold. Backends such as vLLM and Ollama have no moderation endpoint; any API or
  connection error falls back to the offline scorer and the reason is recorded.
- ``alt-profanity-check`` (offline, always available): a linear SVM over TF-IDF n-grams trained on
  toxic/offensive comments. It is applied per sentence and a text scores its worst sentence, so a
  single abusive sentence in a long, clean text is not diluted. It detects profane and abusive
  language, not polite threats or subtle bias; the moderation endpoint, where available, covers more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlops_assets.prompts.groundedness import split_sentences

OFFLINE_SCORER = "alt-profanity-check"
MODERATION_SCORER = "openai-moderation"


@dataclass(frozen=True)
class ToxicityReport:
    """Scores in [0, 1], one per text, and which scorer produced them."""

    scores: list[float]
    flagged: list[bool]
    scorer: str
    threshold: float
    fallback_reason: str | None = None

    @property
    def max_score(self) -> float:
        return max(self.scores, default=0.0)

    @property
    def any_flagged(self) -> bool:
        return any(self.flagged)


def offline_toxicity(texts: list[str]) -> list[float]:
    """Worst-sentence profanity probability per text (``alt-profanity-check``)."""
    from profanity_check import predict_prob  # imported lazily: loads a scikit-learn model

    units: list[str] = []
    owners: list[int] = []
    for i, text in enumerate(texts):
        parts = split_sentences(text) or [text]
        units.extend(parts)
        owners.extend([i] * len(parts))
    scores = [0.0] * len(texts)
    if units:
        for owner, prob in zip(owners, predict_prob(units)):
            scores[owner] = max(scores[owner], float(prob))
    return scores


def moderation_toxicity(
    client: Any, texts: list[str], model: str | None = None
) -> tuple[list[float], list[bool]]:
    """Highest category score and the flag per text from ``client.moderations.create``."""
    kwargs: dict[str, Any] = {"input": texts}
    if model:
        kwargs["model"] = model
    response = client.moderations.create(**kwargs)
    if len(response.results) != len(texts):
        raise ValueError(f"moderation returned {len(response.results)} results for {len(texts)} inputs")
    scores, flags = [], []
    for result in response.results:
        raw = result.category_scores.model_dump() if hasattr(result.category_scores, "model_dump") else {}
        values = [float(v) for v in raw.values() if isinstance(v, (int, float))]
        scores.append(max(values, default=0.0))
        flags.append(bool(result.flagged))
    return scores, flags


def score_toxicity(
    texts: list[str],
    client: Any = None,
    *,
    threshold: float = 0.5,
    moderation_model: str | None = None,
) -> ToxicityReport:
    """Score ``texts`` with the moderation endpoint of ``client`` if given, else (or on error) offline.

    Scores stay aligned with ``texts``; blank texts score 0 and are not sent anywhere.
    """
    keep = [i for i, t in enumerate(texts) if t and t.strip()]
    scores = [0.0] * len(texts)
    flagged = [False] * len(texts)
    if not keep:
        return ToxicityReport(scores, flagged, OFFLINE_SCORER, threshold)
    batch = [texts[i] for i in keep]
    fallback_reason = None
    if client is not None:
        try:
            batch_scores, batch_flags = moderation_toxicity(client, batch, moderation_model)
            for i, s, f in zip(keep, batch_scores, batch_flags):
                scores[i], flagged[i] = s, f or s >= threshold
            return ToxicityReport(scores, flagged, MODERATION_SCORER, threshold)
        except Exception as exc:  # NotFound on vLLM/Ollama, connection errors, odd payloads
            status = getattr(exc, "status_code", None)
            detail = f"{type(exc).__name__} {status}" if status else type(exc).__name__
            fallback_reason = f"moderation endpoint unavailable ({detail})"
    for i, s in zip(keep, offline_toxicity(batch)):
        scores[i], flagged[i] = s, s >= threshold
    return ToxicityReport(scores, flagged, OFFLINE_SCORER, threshold, fallback_reason)

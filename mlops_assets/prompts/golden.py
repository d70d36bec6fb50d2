"""Golden-set quality: run each case through the model and compare with the expectation.

Metrics over a golden set (each over the cases that define the expectation it needs):

- ``exact_match``: share of cases whose output equals ``expected.output`` (case and whitespace
  insensitive);
- ``contains_rate``: share of cases whose output contains every ``expected.contains`` string
  (case-insensitive);
- ``rouge_l``: mean ROUGE-L F1 against ``expected.output`` (``rouge-score``, Porter stemming);
- ``bleu``: corpus BLEU (``sacrebleu``, 0-100) against ``expected.output``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlops_assets.prompts.chat import ChatResult, chat_complete
from mlops_assets.prompts.library import GoldenCase, ModelParameters, render_text


@dataclass(frozen=True)
class CaseRun:
    """One golden case run through the model."""

    case: GoldenCase
    prompt: str
    result: ChatResult

    @property
    def output(self) -> str:
        return self.result.text


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def exact_match(output: str, reference: str) -> bool:
    return _normalise(output) == _normalise(reference)


def contains_all(output: str, needles: Sequence[str]) -> bool:
    text = _normalise(output)
    return all(_normalise(n) in text for n in needles)


def rouge_l(output: str, reference: str) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(scorer.score(reference, output)["rougeL"].fmeasure)


def corpus_bleu(outputs: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(outputs), [list(references)]).score)


def golden_metrics(outputs: Sequence[str], cases: Sequence[GoldenCase]) -> dict[str, float]:
    """Quality metrics of ``outputs`` (aligned with ``cases``); metrics without cases are omitted."""
    if len(outputs) != len(cases):
        raise ValueError(f"got {len(outputs)} outputs for {len(cases)} golden cases")
    metrics: dict[str, float] = {"n_cases": float(len(cases))}
    with_output = [(o, c.expected.output) for o, c in zip(outputs, cases) if c.expected.output]
    with_contains = [(o, c.expected.contains) for o, c in zip(outputs, cases) if c.expected.contains]
    if with_output:
        metrics["exact_match"] = sum(exact_match(o, r) for o, r in with_output) / len(with_output)
        metrics["rouge_l"] = sum(rouge_l(o, r) for o, r in with_output) / len(with_output)
        metrics["bleu"] = corpus_bleu([o for o, _ in with_output], [r for _, r in with_output])
    if with_contains:
        metrics["contains_rate"] = sum(contains_all(o, n) for o, n in with_contains) / len(with_contains)
    return metrics


def as_cases(golden_set: Sequence[GoldenCase | Mapping[str, Any]]) -> list[GoldenCase]:
    """Accept golden cases as models or as plain mappings (e.g. parsed YAML / JSON)."""
    return [c if isinstance(c, GoldenCase) else GoldenCase.model_validate(dict(c)) for c in golden_set]


def run_golden_set(
    client: Any,
    template_text: str,
    model_parameters: ModelParameters | Mapping[str, Any],
    cases: Sequence[GoldenCase],
    *,
    template_name: str = "template",
) -> list[CaseRun]:
    """Render each case's inputs into the template and call the model once per case."""
    runs = []
    for case in cases:
        prompt = render_text(template_text, case.inputs, template_name=template_name)
        runs.append(CaseRun(case=case, prompt=prompt, result=chat_complete(client, prompt, model_parameters)))
    return runs

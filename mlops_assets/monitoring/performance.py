"""Live performance: the test of a version's live metric against its own evaluation, and the episode.

The labelled outcomes come from ``monitoring.live_outcomes`` (the join of served predictions with their
realised labels), the metrics from ``monitoring.live_metrics``.

**The performance episode** (:func:`compare_live_metric`, :func:`performance_tick`). A version's live
metric over a trailing window is compared with the value its evaluation gate recorded in the
governance store, one-sided (H1: live is worse):

* ROC AUC: ``z = (AUC_live - AUC_eval) / SE``, ``SE`` from Hanley & McNeil (1982) under the null
  (``AUC = AUC_eval``) with the observed class counts; ``p = Phi(z)``.
* accuracy: the exact binomial test of the live hit count against ``p = accuracy_eval``
  (``scipy.stats.binomtest``, ``alternative="less"``).

A verdict is given only from ``n_required`` labelled predictions on: the sample size at which the test,
at level ``alpha``, detects a fall of ``min_degradation`` with probability ``power``
(``statsmodels.stats.power.NormalIndPower``, one sample; for accuracy with Cohen's h from
``proportion_effectsize``, for AUC with the per-observation Hanley-McNeil standard deviation at the
observed positive rate). Below it the test is underpowered and says ``insufficient_data``.

A degraded version opens a *performance episode* through the drift-episode code
(``events.record_observation``): the same rules (one retraining request per episode, the cooldown
before the next), its own history (drift events of source :data:`SOURCE` only, so a stable live
metric ends a performance episode and never a drift episode).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy import stats

from mlops_assets.errors import InvalidInput
from mlops_assets.features.datasets import LABEL
from mlops_assets.monitoring.live_metrics import direction_score, roc_auc
from mlops_assets.monitoring.live_outcomes import LABELLED, as_utc

SOURCE = "live_performance"
Verdict = Literal["degraded", "ok", "insufficient_data", "untestable"]


# --- the test against the version's own evaluation ----------------------------------------------------


@dataclass(frozen=True)
class PerformancePolicy:
    """The one-sided test: level ``alpha``, ``power`` to detect a fall of ``min_degradation``;
    labelled outcomes of the last ``window_days`` days; episodes under ``cooldown_hours``."""

    alpha: float = 0.01
    power: float = 0.8
    min_degradation: float = 0.05
    window_days: int = 20
    cooldown_hours: float = 24.0

    def __post_init__(self) -> None:
        for field, value, low, high in (("alpha", self.alpha, 0.0, 0.5), ("power", self.power, 0.5, 1.0),
                                        ("min_degradation", self.min_degradation, 0.0, 0.5)):
            if not low < value < high:
                raise InvalidInput(field, f"must be in ({low}, {high}), got {value}")
        if self.window_days < 1:
            raise InvalidInput("window_days", f"must be >= 1, got {self.window_days}")
        if self.cooldown_hours < 0:
            raise InvalidInput("cooldown_hours", f"must be >= 0, got {self.cooldown_hours}")


def live_metric_name(evaluated_metric: str) -> str | None:
    """The live metric a recorded evaluation metric is tested with (``test_auc`` -> ``roc_auc``)."""
    name = evaluated_metric.lower().removeprefix("test_").removeprefix("val_")
    if name in ("auc", "roc_auc"):
        return "roc_auc"
    if name in ("accuracy", "acc"):
        return "accuracy"
    return None


def _auc_q(a: float) -> tuple[float, float]:
    return a / (2 - a), 2 * a * a / (1 + a)


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC from ``n_pos`` positives and ``n_neg`` negatives."""
    q1, q2 = _auc_q(auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc ** 2) + (n_neg - 1) * (q2 - auc ** 2)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def required_sample_size(metric: str, evaluated: float, policy: PerformancePolicy,
                         positive_rate: float = 0.5) -> int:
    """Labelled predictions needed for the one-sided test at ``policy.alpha`` to detect a fall of
    ``policy.min_degradation`` from ``evaluated`` with probability ``policy.power`` (statsmodels)."""
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    target = evaluated - policy.min_degradation
    if metric == "accuracy":
        effect = abs(float(proportion_effectsize(evaluated, max(target, 1e-6))))
    elif metric == "roc_auc":
        q1, q2 = _auc_q(evaluated)
        pi = min(max(positive_rate, 0.05), 0.95)
        sd_one = math.sqrt((q1 - evaluated ** 2) / (1 - pi) + (q2 - evaluated ** 2) / pi)
        effect = policy.min_degradation / sd_one
    else:
        raise InvalidInput("metric", f"{metric!r} has no live test; use roc_auc or accuracy")
    n = NormalIndPower().solve_power(effect_size=effect, alpha=policy.alpha, power=policy.power, ratio=0.0,
                                     alternative="larger")
    return math.ceil(float(n))


@dataclass(frozen=True)
class PerformanceTest:
    """One version's live metric against its evaluated value."""

    model_name: str
    model_version: str
    metric: str
    evaluated: float | None
    live: float | None
    n: int
    n_required: int | None
    p_value: float | None
    alpha: float
    power: float
    min_degradation: float
    verdict: Verdict
    reason: str
    test: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> PerformanceTest:
        return cls(**{k: value.get(k) for k in cls.__dataclass_fields__ if k in value})


def compare_live_metric(y: np.ndarray, score: np.ndarray, *, model_name: str, model_version: str,
                     evaluated_metric: str, evaluated: float | None, policy: PerformancePolicy) -> PerformanceTest:
    """The one-sided test of the live metric against the evaluated one (module docstring)."""
    y, score = np.asarray(y, dtype=int), np.asarray(score, dtype=float)
    common = {"model_name": model_name, "model_version": str(model_version), "alpha": policy.alpha,
              "power": policy.power, "min_degradation": policy.min_degradation, "n": len(y)}
    metric = live_metric_name(evaluated_metric)
    if metric is None or evaluated is None or not math.isfinite(float(evaluated)):
        return PerformanceTest(metric=metric or evaluated_metric, evaluated=evaluated, live=None, n_required=None,
                               p_value=None, verdict="untestable", reason=f"no recorded evaluation value of a "
                               f"testable metric ({evaluated_metric}={evaluated!r}; testable: AUC, accuracy)", **common)
    evaluated = float(evaluated)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    rate = n_pos / len(y) if len(y) else 0.5
    n_required = required_sample_size(metric, evaluated, policy, rate)
    if metric == "roc_auc":
        live = roc_auc(y, score)
        test = "one-sided z-test of AUC, Hanley-McNeil SE under H0"
    else:
        live = float(((score >= 0.5).astype(int) == y).mean()) if len(y) else math.nan
        test = "one-sided exact binomial test of accuracy"
    if len(y) < n_required or (metric == "roc_auc" and min(n_pos, n_neg) == 0):
        return PerformanceTest(metric=metric, evaluated=evaluated, live=live, n_required=n_required, p_value=None,
                               verdict="insufficient_data", test=test,
                               reason=f"{len(y)} labelled predictions; the test needs {n_required} to detect a fall "
                                      f"of {policy.min_degradation} with power {policy.power} at alpha {policy.alpha}",
                               **common)
    if metric == "roc_auc":
        se = auc_standard_error(evaluated, n_pos, n_neg)
        p = float(stats.norm.cdf((live - evaluated) / se)) if se > 0 else (0.0 if live < evaluated else 1.0)
    else:
        p = float(stats.binomtest(round(live * len(y)), len(y), evaluated, alternative="less").pvalue)
    degraded = p < policy.alpha
    relation = "significantly below" if degraded else "not significantly below"
    return PerformanceTest(metric=metric, evaluated=evaluated, live=live, n_required=n_required, p_value=p,
                           verdict="degraded" if degraded else "ok", test=test,
                           reason=f"live {metric} {live:.4f} over {len(y)} predictions is {relation} the evaluated "
                                  f"{evaluated:.4f} (p={p:.3g}, alpha {policy.alpha})", **common)


def evaluated_value(store: Any, name: str, version: str) -> tuple[str, float | None]:
    """The metric and value the version's evaluation gate recorded in the governance store."""
    record = store.gate_results(name, version).get("evaluation")
    if record is None:
        return "", None
    metric = str(record.details.get("metric") or next(iter(record.values), ""))
    value = record.values.get(metric)
    return metric, (None if value is None else float(value))


def compare_versions(outcomes: pl.DataFrame, store: Any, policy: PerformancePolicy) -> list[PerformanceTest]:
    """The test for every (model, version) among labelled ``outcomes`` (the trailing window)."""
    labelled = outcomes.filter(pl.col("label_status") == LABELLED)
    out = []
    for (name, version), part in sorted(labelled.group_by("model_name", "model_version"),
                                        key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        metric, value = evaluated_value(store, str(name), str(version))
        out.append(compare_live_metric(part[LABEL].to_numpy().astype(int), direction_score(part),
                                       model_name=str(name), model_version=str(version),
                                       evaluated_metric=metric or "none", evaluated=value, policy=policy))
    return out


def window_start(day: date, policy: PerformancePolicy) -> date:
    """First request date of the trailing window that ends on ``day``."""
    return day - timedelta(days=policy.window_days - 1)


# --- the episode -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PerformanceTick:
    """What one sensor evaluation decided: the observation, the decision, and the new episode's event."""

    degraded: tuple[PerformanceTest, ...]
    tested: tuple[PerformanceTest, ...]
    decision: Any
    event_id: Any | None
    alert: dict[str, Any]

    @property
    def retrain(self) -> bool:
        return self.decision.action == "retrain"

    @property
    def new_episode(self) -> bool:
        return bool(self.decision.new_episode)


def episode_name(episode_id: str | None) -> str | None:
    """A performance episode's id: the drift-episode id of the same start time, named for its source."""
    if episode_id is None:
        return None
    return "performance-" + str(episode_id).removeprefix("drift-").removeprefix("performance-")


def _episode_log(store: Any, actor: str, tests: Sequence[PerformanceTest]) -> Any:
    from mlops_assets.monitoring import events as E

    class SourceEpisodeLog(E.StoreEpisodeLog):
        """The drift-episode log over the store, restricted to this source's events, with the tests."""

        def last_episode(self) -> E.EpisodeEvent | None:
            for event in self.store.list_drift_events(SOURCE, limit=200):
                if event.episode_id and event.action_taken == E.RETRAIN_REQUESTED:
                    observed = (event.details or {}).get("observed_at") or event.ts
                    return E.EpisodeEvent(event.id, E.as_utc(observed, "observed_at"), event.episode_id,
                                          float(event.drifted_share), E.event_resolved(event))
            return None

        def open_episode(self, observation: Any, decision: Any, source: str, event_id: Any | None) -> Any:
            event = self.store.record_drift_event(
                source=SOURCE, features=list(observation.drifted_columns), drifted_share=observation.share_drifted,
                severity=decision.severity, action_taken=E.ACTION_TEXT[decision.action],
                episode_id=episode_name(decision.episode_id),
                details={"observed_at": observation.ts.isoformat(), "reason": "live performance is significantly "
                         "worse than the version's own evaluation", "tests": [t.to_dict() for t in tests]},
                actor=self.actor)
            return event.id

    return SourceEpisodeLog(store, actor)


def performance_tick(store: Any, tests: Iterable[PerformanceTest], policy: PerformancePolicy,
                     now: datetime | str, *, actor: str = "live_performance_sensor") -> PerformanceTick | None:
    """Decide on the latest tests and record the decision (module docstring); ``None`` when no version
    has a verdict (every test insufficient or untestable), which leaves any open episode as it is."""
    from mlops_assets.monitoring import events as E

    tests = tuple(tests)
    decided = tuple(t for t in tests if t.verdict in ("degraded", "ok"))
    if not decided:
        return None
    degraded = tuple(t for t in decided if t.verdict == "degraded")
    observation = E.DriftObservation(1.0 if degraded else 0.0,
                                     tuple(f"{t.model_name}/{t.model_version}:{t.metric}" for t in degraded),
                                     as_utc(now, "now"))
    rules = E.DriftPolicy(threshold_share=1.0, cooldown_hours=policy.cooldown_hours, high_share=1.0)
    outcome = E.record_observation(_episode_log(store, actor, degraded or decided), observation, rules, source=SOURCE)
    decision = outcome.decision
    alert = {"source": SOURCE, "ts": observation.ts.isoformat(), "action": decision.action,
             "new_episode": decision.new_episode, "ends_episode": decision.ends_episode,
             "episode_id": episode_name(decision.episode_id), "severity": decision.severity if degraded else "low",
             "degraded": [t.to_dict() for t in degraded], "tested": [t.to_dict() for t in decided],
             "reason": "; ".join(t.reason for t in (degraded or decided))}
    return PerformanceTick(degraded, decided, decision, outcome.event_id, alert)

"""Live performance: served predictions joined with their realised outcomes, and the performance episode.

**The outcome join** (:func:`join_outcomes`). Each served prediction (one row of the prediction log:
request id, time, symbol, model version, variant, output) is labelled with the training dataset's own
label (``features.datasets.forward_labels``: 1 if ``close[t + h] > close[t]``, the forward return
beside it), where ``t``, the prediction's *decision date*, is the symbol's last trading date strictly
before the request's UTC date (the last close the daily refresh had ingested when the request was
served) and ``t + h`` counts the symbol's trading rows. The label is given only once its horizon has
passed: the market data must hold the close at ``t + h`` (its *outcome date*) and that date must be
on or before ``now`` (the time the join runs); otherwise the row is ``pending``, never labelled. A
symbol with no market data before the request is ``no_market_data``.

**Per model version and day** (:func:`daily_metrics`): ROC AUC and accuracy of ``probability``
(regression: RMSE and MAE of ``prediction``), the information coefficient (Spearman correlation of the
score with the realised forward return), the Brier score, a reliability table
(:func:`reliability_table`) and the hit rate per volatility regime (the platform's own ``vol_regime``
feature at the decision date).

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
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy import stats

from mlops_assets.data.schema import ENTITY_KEY, TIME_KEY
from mlops_assets.errors import InvalidInput
from mlops_assets.features.datasets import FWD_RETURN, LABEL, forward_labels

SOURCE = "live_performance"
LABELLED, PENDING, NO_MARKET_DATA = "labelled", "pending", "no_market_data"
LabelKind = Literal["direction", "return"]
Verdict = Literal["degraded", "ok", "insufficient_data", "untestable"]
REGIMES = ("low", "mid", "high")

OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(), "request_id": pl.String(), "row": pl.Int32(), "ts": pl.Datetime("us", "UTC"),
    ENTITY_KEY: pl.String(), "model_name": pl.String(), "model_version": pl.String(), "alias": pl.String(),
    "variant": pl.String(), "prediction": pl.Float64(), "probability": pl.Float64(),
    "latency_ms": pl.Float64(), "decision_date": pl.Date(), "outcome_date": pl.Date(), LABEL: pl.Float64(),
    FWD_RETURN: pl.Float64(), "vol_regime": pl.String(), "label_status": pl.String(),
}
METRIC_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(), "model_name": pl.String(), "model_version": pl.String(), "served": pl.Int64(),
    "labelled": pl.Int64(), "pending": pl.Int64(), "accuracy": pl.Float64(), "roc_auc": pl.Float64(),
    "brier": pl.Float64(), "rmse": pl.Float64(), "mae": pl.Float64(), "ic": pl.Float64(),
    "hit_rate_low": pl.Float64(), "hit_rate_mid": pl.Float64(), "hit_rate_high": pl.Float64(),
    "measured_at": pl.Datetime("us", "UTC"),
}


def _utc(value: datetime | str, field: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(field, f"{value!r} is not an ISO timestamp") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- the outcome join ------------------------------------------------------------------------------


def outcome_labels(market: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """symbol, date, label, fwd_return (``forward_labels``, the training label) and ``outcome_date``
    (the date of the close at ``t + horizon`` trading rows; null when the data does not reach it)."""
    if not isinstance(horizon, int) or horizon < 1:
        raise InvalidInput("horizon", f"must be an integer >= 1, got {horizon!r}")
    labels = forward_labels(market, horizon)
    dates = (market.select(ENTITY_KEY, TIME_KEY).sort(ENTITY_KEY, TIME_KEY)
             .with_columns(pl.col(TIME_KEY).shift(-horizon).over(ENTITY_KEY).alias("outcome_date")))
    return labels.join(dates, on=[ENTITY_KEY, TIME_KEY], how="left")


def volatility_regimes(market: pl.DataFrame) -> pl.DataFrame:
    """symbol, date, vol_regime: the ``volatility_regime`` feature view's own label on ``market``."""
    from mlops_assets.features.compute import compute_view
    from mlops_assets.features.views import REGIME_COLUMN, VOLATILITY_REGIME

    needed = {"close", "high", "low"}
    if not needed <= set(market.columns) or market.is_empty():
        return pl.DataFrame(schema={ENTITY_KEY: pl.String(), TIME_KEY: pl.Date(), "vol_regime": pl.String()})
    df = compute_view(VOLATILITY_REGIME, market).df
    return df.select(ENTITY_KEY, TIME_KEY, pl.col(REGIME_COLUMN).alias("vol_regime"))


def join_outcomes(served: pl.DataFrame, market: pl.DataFrame, *, horizon: int, now: datetime | str,
                  regimes: pl.DataFrame | None = None) -> pl.DataFrame:
    """Each served prediction with its realised label once the horizon has passed (module docstring).

    ``served``: prediction-log rows (``request_id``, ``row``, ``ts``, ``entity`` or ``symbol``, ``model_name``,
    ``model_version``, ``alias``, ``variant``, ``prediction``, ``probability``, ``latency_ms``);
    ``market``: raw market data (``symbol``, ``date``, ``close``; ``high``/``low`` for the regimes).
    Returns :data:`OUTCOME_SCHEMA` (``date`` is the request's UTC date), ``label`` null unless
    ``label_status == "labelled"``.
    """
    now = _utc(now, "now")
    if ENTITY_KEY not in served.columns and "entity" in served.columns:
        served = served.rename({"entity": ENTITY_KEY})
    missing = [c for c in ("request_id", "ts", ENTITY_KEY, "model_version") if c not in served.columns]
    if missing:
        raise InvalidInput("served", f"missing column(s) {missing}; pass prediction-log rows")
    if served.is_empty():
        return pl.DataFrame(schema=OUTCOME_SCHEMA)
    frame = served.with_columns(
        *(pl.lit(None, dtype=OUTCOME_SCHEMA[c]).alias(c) for c in OUTCOME_SCHEMA
          if c not in served.columns and c in ("row", "model_name", "alias", "variant", "prediction",
                                               "probability", "latency_ms")),
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    frame = frame.with_columns(pl.col("ts").dt.date().alias("date"))  # UTC: ts is UTC-zoned
    trading = market.select(pl.col(ENTITY_KEY).cast(pl.String), pl.col(TIME_KEY).alias("decision_date")) \
        .unique().sort("decision_date")
    frame = (frame.sort("date")
             .join_asof(trading, left_on="date", right_on="decision_date", by=ENTITY_KEY,
                        strategy="backward", allow_exact_matches=False, check_sortedness=False))
    labels = outcome_labels(market, horizon).rename({TIME_KEY: "decision_date"})
    frame = frame.join(labels, on=[ENTITY_KEY, "decision_date"], how="left")
    regimes = volatility_regimes(market) if regimes is None else regimes
    frame = frame.join(regimes.rename({TIME_KEY: "decision_date"}), on=[ENTITY_KEY, "decision_date"], how="left")
    passed = (pl.col("outcome_date").is_not_null() & pl.col(LABEL).is_not_null()
              & (pl.col("outcome_date") <= pl.lit(now.date())) & (pl.col("outcome_date") >= pl.col("date")))
    status = (pl.when(pl.col("decision_date").is_null()).then(pl.lit(NO_MARKET_DATA))
              .when(passed).then(pl.lit(LABELLED)).otherwise(pl.lit(PENDING)))
    frame = frame.with_columns(status.alias("label_status"))
    hide = pl.col("label_status") != LABELLED  # no label (nor return) before its horizon has passed
    frame = frame.with_columns(
        pl.when(hide).then(None).otherwise(pl.col(LABEL)).cast(pl.Float64).alias(LABEL),
        pl.when(hide).then(None).otherwise(pl.col(FWD_RETURN)).cast(pl.Float64).alias(FWD_RETURN),
        pl.when(hide).then(None).otherwise(pl.col("outcome_date")).alias("outcome_date"),
    )
    return frame.select(pl.col(c).cast(t) for c, t in OUTCOME_SCHEMA.items()).sort("ts", "request_id", "row")


# --- metrics ---------------------------------------------------------------------------------------


def _score(frame: pl.DataFrame) -> np.ndarray:
    """P(up) for a direction model: ``probability``, else ``prediction``."""
    prob = frame["probability"].to_numpy().astype(float)
    pred = frame["prediction"].to_numpy().astype(float)
    return np.where(np.isfinite(prob), prob, pred)


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney U / n1 n2, ties count half); nan when one class is absent."""
    pos, neg = score[y == 1], score[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan
    return float(stats.spearmanr(a[ok], b[ok]).statistic)


def version_metrics(labelled: pl.DataFrame, label_kind: LabelKind = "direction") -> dict[str, float]:
    """Metrics of labelled outcomes of one version (``nan`` where undefined)."""
    nan = math.nan
    out = dict.fromkeys(("accuracy", "roc_auc", "brier", "rmse", "mae", "ic",
                         *(f"hit_rate_{r}" for r in REGIMES)), nan)
    if labelled.is_empty():
        return out
    fwd = labelled[FWD_RETURN].to_numpy().astype(float)
    if label_kind == "direction":
        y, score = labelled[LABEL].to_numpy().astype(int), _score(labelled)
        hit = (score >= 0.5).astype(int) == y
        out.update(accuracy=float(hit.mean()), roc_auc=roc_auc(y, score),
                   brier=float(np.mean((score - y) ** 2)), ic=_spearman(score, fwd))
    else:
        pred = labelled["prediction"].to_numpy().astype(float)
        err = pred - fwd
        hit = np.sign(pred) == np.sign(fwd)
        out.update(rmse=float(np.sqrt(np.mean(err ** 2))), mae=float(np.mean(np.abs(err))),
                   accuracy=float(hit.mean()), ic=_spearman(pred, fwd))
    regimes = labelled["vol_regime"].to_list()
    for regime in REGIMES:
        mask = np.array([r == regime for r in regimes], dtype=bool)
        if mask.any():
            out[f"hit_rate_{regime}"] = float(hit[mask].mean())
    return out


def daily_metrics(outcomes: pl.DataFrame, day: date, *, label_kind: LabelKind = "direction",
                  measured_at: datetime | None = None) -> pl.DataFrame:
    """One row per (model name, version) served on ``day``: :data:`METRIC_SCHEMA`."""
    measured_at = _utc(measured_at or datetime.now(UTC), "measured_at")
    rows = []
    todays = outcomes.filter(pl.col("date") == day)
    for (name, version), part in sorted(todays.group_by("model_name", "model_version"),
                                        key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        labelled = part.filter(pl.col("label_status") == LABELLED)
        rows.append({"date": day, "model_name": name, "model_version": version, "served": part.height,
                     "labelled": labelled.height, "pending": part.filter(pl.col("label_status") == PENDING).height,
                     **version_metrics(labelled, label_kind), "measured_at": measured_at})
    return pl.DataFrame(rows, schema=METRIC_SCHEMA) if rows else pl.DataFrame(schema=METRIC_SCHEMA)


def reliability_table(labelled: pl.DataFrame, bins: int = 10) -> pl.DataFrame:
    """Predicted P(up) against the observed up-rate in ``bins`` equal-width bins (empty bins left out)."""
    if labelled.is_empty():
        return pl.DataFrame(schema={"bin": pl.Int64(), "mean_predicted": pl.Float64(),
                                    "observed_rate": pl.Float64(), "count": pl.Int64()})
    score = _score(labelled)
    idx = np.clip((score * bins).astype(int), 0, bins - 1)
    frame = pl.DataFrame({"bin": idx.astype(np.int64), "score": score,
                          "y": labelled[LABEL].to_numpy().astype(float)})
    return (frame.group_by("bin").agg(pl.col("score").mean().alias("mean_predicted"),
                                      pl.col("y").mean().alias("observed_rate"), pl.len().cast(pl.Int64).alias("count"))
            .sort("bin"))


def regime_table(labelled: pl.DataFrame, label_kind: LabelKind = "direction") -> pl.DataFrame:
    """Per model version and volatility regime: labelled predictions and hit rate."""
    rows = []
    for (version,), part in sorted(labelled.group_by("model_version"), key=lambda kv: str(kv[0][0])):
        m = version_metrics(part, label_kind)
        for regime in REGIMES:
            n = part.filter(pl.col("vol_regime") == regime).height
            rows.append({"model_version": version, "vol_regime": regime, "labelled": n,
                         "hit_rate": m[f"hit_rate_{regime}"]})
    return pl.DataFrame(rows, schema={"model_version": pl.String(), "vol_regime": pl.String(),
                                      "labelled": pl.Int64(), "hit_rate": pl.Float64()})


def champion_vs_shadow(outcomes: pl.DataFrame, shadow_rows: pl.DataFrame) -> list[Any]:
    """The served (champion) predictions of ``outcomes`` against the shadow model's predictions on the
    identical requests (``shadow_rows``: the log's ``shadow-`` segments): agreement, and McNemar's test
    on the labelled pairs (``monitoring.shadow.compare_shadow``; one comparison per version pair)."""
    from mlops_assets.monitoring.shadow import compare_shadow

    if outcomes.is_empty() or shadow_rows.is_empty():
        return []
    return compare_shadow(outcomes, shadow_rows, outcomes)


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
        out.append(compare_live_metric(part[LABEL].to_numpy().astype(int), _score(part), model_name=str(name),
                                    model_version=str(version), evaluated_metric=metric or "none",
                                    evaluated=value, policy=policy))
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
                    return E.EpisodeEvent(event.id, E._as_utc(observed, "observed_at"), event.episode_id,
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
                                     _utc(now, "now"))
    rules = E.DriftPolicy(threshold_share=1.0, cooldown_hours=policy.cooldown_hours, high_share=1.0)
    outcome = E.record_observation(_episode_log(store, actor, degraded or decided), observation, rules, source=SOURCE)
    decision = outcome.decision
    alert = {"source": SOURCE, "ts": observation.ts.isoformat(), "action": decision.action,
             "new_episode": decision.new_episode, "ends_episode": decision.ends_episode,
             "episode_id": episode_name(decision.episode_id), "severity": decision.severity if degraded else "low",
             "degraded": [t.to_dict() for t in degraded], "tested": [t.to_dict() for t in decided],
             "reason": "; ".join(t.reason for t in (degraded or decided))}
    return PerformanceTick(degraded, decided, decision, outcome.event_id, alert)

"""Live metrics: how each model version's served predictions did, from ``monitoring.live_outcomes``.

**Per model version and day** (:func:`daily_metrics`): ROC AUC and accuracy of ``probability``
(regression: RMSE and MAE of ``prediction``), the information coefficient (Spearman correlation of the
score with the realised forward return), the Brier score, a reliability table
(:func:`reliability_table`) and the hit rate per volatility regime (the platform's own ``vol_regime``
feature at the decision date; :func:`regime_table`). :func:`champion_vs_shadow` compares the served
predictions with the shadow model's on the same requests (``monitoring.shadow``: agreement, McNemar's
test, and the paired IC test when the caller passes it).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy import stats

from mlops_assets.features.datasets import FWD_RETURN, LABEL
from mlops_assets.monitoring.live_outcomes import LABELLED, PENDING, as_utc

LabelKind = Literal["direction", "return"]
REGIMES = ("low", "mid", "high")

METRIC_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(), "model_name": pl.String(), "model_version": pl.String(), "served": pl.Int64(),
    "labelled": pl.Int64(), "pending": pl.Int64(), "accuracy": pl.Float64(), "roc_auc": pl.Float64(),
    "brier": pl.Float64(), "rmse": pl.Float64(), "mae": pl.Float64(), "ic": pl.Float64(),
    "hit_rate_low": pl.Float64(), "hit_rate_mid": pl.Float64(), "hit_rate_high": pl.Float64(),
    "measured_at": pl.Datetime("us", "UTC"),
}


def direction_score(frame: pl.DataFrame) -> np.ndarray:
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
        y, score = labelled[LABEL].to_numpy().astype(int), direction_score(labelled)
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
    measured_at = as_utc(measured_at or datetime.now(UTC), "measured_at")
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
    score = direction_score(labelled)
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


def champion_vs_shadow(outcomes: pl.DataFrame, shadow_rows: pl.DataFrame, ic_test: Any = None) -> list[Any]:
    """The served (champion) predictions of ``outcomes`` against the shadow model's predictions on the
    identical requests (``shadow_rows``: the log's ``shadow-`` segments): agreement, McNemar's test on the
    labelled pairs of a classifier and, given ``ic_test`` (``evaluation.shadow_ic.paired_ic_test``), the
    paired IC test on them (``monitoring.shadow.compare_shadow``; one comparison per version pair)."""
    from mlops_assets.monitoring.shadow import compare_shadow

    if outcomes.is_empty() or shadow_rows.is_empty():
        return []
    return compare_shadow(outcomes, shadow_rows, outcomes, ic_test=ic_test)

"""Skill or luck: one assessment of a version's out-of-sample predictions.

:func:`assess_skill` takes pooled out-of-sample predictions (walk-forward folds, or the single test
split when the version cannot be retrained) and returns a :class:`SkillAssessment`: the primary
metric per fold and pooled with a date-block bootstrap interval, the baselines on the same rows,
the information coefficient, the strategy's Sharpe with its Deflated Sharpe Ratio under the number
of trials the experiment ran, and (when several candidates have returns on the same dates) the
probability of backtest overfitting. The compliance gate reads it (``metric_ci_vs_baseline``,
``deflated_sharpe``); the report renders it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.errors import InvalidInput
from mlops_assets.evaluation.backtest import BUY_AND_HOLD, CANDIDATE, backtest, positions_from_scores
from mlops_assets.evaluation.baselines import majority_class_baseline, momentum_baseline
from mlops_assets.evaluation.skill import (
    TRADING_DAYS,
    BacktestOverfitting,
    DeflatedSharpe,
    InformationCoefficient,
    MetricInterval,
    date_block_bootstrap_ci,
    deflated_sharpe_ratio,
    higher_is_better,
    ic_series,
    information_coefficient,
    metric_function,
    probability_of_backtest_overfitting,
    sharpe_stats,
)

WALK_FORWARD, SINGLE_SPLIT = "walk_forward", "single_split"


class SkillConfig(BaseModel):
    """Knobs of the skill assessment (see ``EvaluationSettings`` for the configured values)."""

    model_config = ConfigDict(extra="forbid")

    n_boot: int = Field(500, ge=10)
    alpha: float = Field(0.05, gt=0, lt=1)
    block_length: int | None = Field(None, ge=1)
    seed: int = 0
    ic_min_symbols: int = Field(5, ge=3)
    ic_window_days: int = Field(63, ge=10)
    pbo_splits: int = Field(10, ge=2)
    threshold: float = Field(0.5, gt=0, lt=1)
    mode: str = "long_flat"
    cost_bps: float = Field(5.0, ge=0)
    horizon: int = Field(1, ge=1)
    momentum_col: str = "ret_5d"


@dataclass
class TrialsInfo:
    """How many trials the experiment ran and the variance of their (per-period) Sharpe ratios."""

    n_trials: int
    sharpe_variance: float | None = None   # per period; None -> null sampling variance 1/T
    source: str = ""
    n_with_sharpe: int = 0


@dataclass
class SkillAssessment:
    mode: str                            # walk_forward | single_split
    note: str
    task_type: str
    metric: str
    higher_is_better: bool
    interval: MetricInterval
    baselines: dict[str, float]
    per_fold: pl.DataFrame               # fold, n_rows, metric, ci_low, ci_high, ic_mean (+ layout columns)
    ic: InformationCoefficient
    dsr: DeflatedSharpe
    pbo: BacktestOverfitting | None
    pbo_note: str
    daily_returns: pl.DataFrame          # date, ret of the strategy on the pooled predictions
    extra: dict[str, float] = field(default_factory=dict)

    def best_baseline(self) -> tuple[str, float] | None:
        scored = {k: v for k, v in self.baselines.items() if math.isfinite(v)}
        if not scored:
            return None
        return (max if self.higher_is_better else min)(scored.items(), key=lambda kv: kv[1])

    def summary_metrics(self) -> dict[str, float]:
        """Flat numbers (``wf_*``) for MLflow and the summary row."""
        out = {
            f"wf_{self.metric}": self.interval.value, f"wf_{self.metric}_ci_low": self.interval.low,
            f"wf_{self.metric}_ci_high": self.interval.high, "wf_ic_mean": self.ic.mean, "wf_ic_t_stat": self.ic.t_stat,
            "wf_icir": self.ic.icir, "wf_sharpe": self.dsr.sharpe_annualised, "wf_sharpe_per_period": self.dsr.sharpe,
            "wf_deflated_sharpe": self.dsr.dsr, "wf_probabilistic_sharpe": self.dsr.psr,
            "wf_expected_max_sharpe": self.dsr.expected_max_sharpe, "wf_n_trials": float(self.dsr.n_trials),
            "wf_n_folds": float(self.per_fold.height), **self.extra,
        }
        if self.pbo is not None:
            out["wf_pbo"] = self.pbo.pbo
        return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode, "note": self.note, "task_type": self.task_type, "metric": self.metric,
            "higher_is_better": self.higher_is_better, "interval": self.interval.to_dict(),
            "baselines": self.baselines, "per_fold": self.per_fold.to_dicts(), "ic": self.ic.to_dict(),
            "deflated_sharpe": self.dsr.to_dict(), "pbo": self.pbo.to_dict() if self.pbo else None,
            "pbo_note": self.pbo_note,
        }


def _scores(predictions: pl.DataFrame, task: str) -> np.ndarray:
    col = predictions.get_column("score")
    if task == "multiclass":
        return np.asarray(col.to_list(), dtype=np.float64)
    return col.cast(pl.Float64).to_numpy()


def strategy_daily_returns(predictions: pl.DataFrame, task: str, cfg: SkillConfig) -> pl.DataFrame:
    """``date, ret``: the strategy's daily *active* return (long/flat or long/short on the scores, after
    costs) over buy-and-hold of the same symbols on the same days.

    Skill is what the model adds to holding the market it trades: a long/flat strategy on a rising index
    earns the index's drift whatever its scores are, and its raw Sharpe would pass a Deflated Sharpe
    gate on real prices for no skill at all (measured on the S&P 500 / NASDAQ slice: raw DSR 0.99 for a
    model whose walk-forward ROC AUC interval straddles 0.5). An always-long model's active return is
    zero, so its Sharpe is undefined and the gate fails closed.
    """
    positions = positions_from_scores(task, _scores(predictions, task), cfg.mode, cfg.threshold)
    bt = backtest(predictions, positions=positions, mode=cfg.mode, cost_bps=cfg.cost_bps, threshold=cfg.threshold,
                  horizon=cfg.horizon, stress_windows=0)
    held = bt.returns(BUY_AND_HOLD).rename({"ret": "held"})
    return (bt.returns(CANDIDATE).join(held, on="date", how="left")
            .select("date", (pl.col("ret") - pl.col("held").fill_null(0.0)).alias("ret")))


def _baselines(task: str, predictions: pl.DataFrame, y: np.ndarray, metric_fn, cfg: SkillConfig,
               train_labels: np.ndarray | None) -> dict[str, float]:
    n_classes = _scores(predictions, task).shape[1] if task == "multiclass" else None
    reference = train_labels if train_labels is not None and len(train_labels) else y
    out = {"majority_class": metric_fn(y, majority_class_baseline(reference, len(y), task, n_classes))}
    if task == "binary" and cfg.momentum_col in predictions.columns:
        out["momentum"] = metric_fn(y, momentum_baseline(predictions, cfg.momentum_col))
    return {k: float(v) for k, v in out.items()}


def _per_fold(task: str, predictions: pl.DataFrame, metric: str, metric_fn, cfg: SkillConfig,
              layout: pl.DataFrame | None) -> pl.DataFrame:
    rows = []
    for (fold,), part in predictions.partition_by("fold", as_dict=True, maintain_order=True).items():
        part = part.sort("date", "symbol")
        y = part.get_column("label").to_numpy()
        s = _scores(part, task)
        ci = date_block_bootstrap_ci(part.get_column("date").to_numpy(), y, s, metric_fn, metric=metric,
                                     n_boot=max(50, cfg.n_boot // 4), alpha=cfg.alpha, seed=cfg.seed + int(fold))
        fold_ic = information_coefficient(part["symbol"].to_numpy(), part["date"].to_numpy(),
                                          s if s.ndim == 1 else s[:, -1] - s[:, 0], part["fwd_return"].to_numpy(),
                                          min_symbols=cfg.ic_min_symbols, window=cfg.ic_window_days)
        rets = strategy_daily_returns(part, task, cfg).get_column("ret").to_numpy()
        sr = sharpe_stats(rets)
        rows.append({"fold": int(fold), "n_rows": part.height, metric: ci.value, "ci_low": ci.low,
                     "ci_high": ci.high, "ic_mean": fold_ic.mean, "sharpe": sr.annualised})
    table = pl.DataFrame(rows).sort("fold")
    if layout is not None and layout.height:
        table = layout.join(table, on="fold", how="right").select("fold", pl.exclude("fold"))
    return table


def assess_skill(
    task_type: str,
    predictions: pl.DataFrame,
    *,
    metric: str,
    trials: TrialsInfo,
    mode: str = WALK_FORWARD,
    note: str = "",
    config: SkillConfig | None = None,
    layout: pl.DataFrame | None = None,
    train_labels: np.ndarray | None = None,
    candidate_returns: pl.DataFrame | None = None,
    candidates_note: str = "",
) -> SkillAssessment:
    """Assess pooled out-of-sample ``predictions`` (``symbol, date, fold, score, label,
    fwd_return`` [+ momentum column]).

    ``trials`` gives N and the variance of the trials' Sharpe ratios; without a variance the null
    sampling variance of a Sharpe estimate, ``1 / T``, is used (every trial a zero-skill strategy
    over the same T days). ``candidate_returns`` (``date`` + one column per candidate, the candidate
    under assessment included) feeds the PBO; it is reported, not gated.
    """
    cfg = config or SkillConfig()
    for column in ("symbol", "date", "fold", "score", "label", "fwd_return"):
        if column not in predictions.columns:
            raise InvalidInput("predictions", f"missing column {column!r}")
    if predictions.height == 0:
        raise InvalidInput("predictions", "is empty")
    predictions = predictions.sort("date", "symbol")
    task = task_type
    metric_fn = metric_function(task, metric, cfg.threshold)
    y = predictions.get_column("label").to_numpy()
    s = _scores(predictions, task)
    interval = date_block_bootstrap_ci(predictions.get_column("date").to_numpy(), y, s, metric_fn, metric=metric,
                                       n_boot=cfg.n_boot, alpha=cfg.alpha, block_length=cfg.block_length,
                                       seed=cfg.seed)
    baselines = _baselines(task, predictions, y, metric_fn, cfg, train_labels)
    signal = s if s.ndim == 1 else s[:, -1] - s[:, 0]
    ic = information_coefficient(predictions["symbol"].to_numpy(), predictions["date"].to_numpy(), signal,
                                 predictions["fwd_return"].to_numpy(), min_symbols=cfg.ic_min_symbols,
                                 window=cfg.ic_window_days)
    daily = strategy_daily_returns(predictions, task, cfg)
    sr = sharpe_stats(daily.get_column("ret").to_numpy())
    if trials.sharpe_variance is not None and math.isfinite(trials.sharpe_variance):
        variance, source = trials.sharpe_variance, trials.source
    else:
        variance = 1.0 / max(sr.n, 1)
        source = (f"{trials.source}; " if trials.source else "") + (
            f"fewer than 2 trials with a logged Sharpe ({trials.n_with_sharpe}), so the null sampling variance of "
            f"a Sharpe estimate, 1/T = 1/{sr.n}, stands in for the variance across trials")
    dsr = deflated_sharpe_ratio(sr.sharpe, sr.n, sr.skew, sr.kurtosis, max(1, trials.n_trials), variance, source)
    pbo, pbo_note = None, candidates_note or "fewer than 2 candidates with returns on the same dates"
    if candidate_returns is not None and candidate_returns.width >= 3:
        matrix = candidate_returns.sort("date").drop("date").fill_null(0.0).to_numpy()
        try:
            pbo = probability_of_backtest_overfitting(matrix, [c for c in candidate_returns.columns if c != "date"],
                                                      cfg.pbo_splits)
            pbo_note = candidates_note or f"{pbo.n_candidates} candidates over {pbo.n_periods} common dates"
        except InvalidInput as exc:
            pbo_note = f"not computed: {exc.problem}"
    per_fold = _per_fold(task, predictions, metric, metric_fn, cfg, layout)
    return SkillAssessment(mode, note, task, metric, higher_is_better(metric), interval, baselines, per_fold, ic,
                           dsr, pbo, pbo_note, daily)


def ic_by_period(predictions: pl.DataFrame, task: str, cfg: SkillConfig) -> pl.DataFrame:
    """``date, ic`` series (for the plot)."""
    s = _scores(predictions, task)
    signal = s if s.ndim == 1 else s[:, -1] - s[:, 0]
    _, values, keys, _ = ic_series(predictions["symbol"].to_numpy(), predictions["date"].to_numpy(), signal,
                                   predictions["fwd_return"].to_numpy(), min_symbols=cfg.ic_min_symbols,
                                   window=cfg.ic_window_days)
    return pl.DataFrame({"date": keys, "ic": values})


def annualised(sharpe_per_period: float) -> float:
    return sharpe_per_period * math.sqrt(TRADING_DAYS)

"""The compliance verdict: every policy threshold checked, one report per model version.

Checks (a threshold set to ``None`` disables its check, which is then listed as skipped):

* ``metric_vs_baseline`` - the task's primary metric (ROC AUC / macro F1 / RMSE by default)
  must beat the best naive baseline by ``metric_margin`` (in the metric's own units; "beat"
  means larger, or smaller for a loss);
* ``metric_limit:<name>`` - absolute limits (a floor for scores, a ceiling for losses);
* ``max_drawdown`` and ``min_sharpe`` of the candidate's whole-period backtest;
* ``fairness:<disparity>`` - each fairness limit; ``warn`` passes, ``fail`` blocks;
* ``drift_share`` - share of drifted features between the candidate's training window and
  current data (computed by the monitoring domain and passed in);
* ``champion_ab`` - blocks a candidate that the A/B test found significantly worse than the
  champion (skipped when there is no champion);
* ``metric_ci_vs_baseline`` - the lower bound (upper, for a loss) of the bootstrap interval of the
  primary metric over the pooled out-of-sample predictions (walk-forward folds, or the test split
  of a version that cannot be retrained) must beat the best baseline on the same rows by
  ``metric_ci_margin``: a point estimate that beats the baseline by luck does not pass;
* ``deflated_sharpe`` - the Deflated Sharpe Ratio of the strategy (Bailey & Lopez de Prado 2014,
  correcting for the number of trials the experiment ran) must be at least ``min_deflated_sharpe``.

Both read a :class:`~mlops_assets.evaluation.assess.SkillAssessment` (``skill=``); they are off
(``None``) in a bare ``CompliancePolicy()`` and on in the configured policy (settings).

The gate fails closed: a check whose input is missing (no baseline, no backtest, no fairness
audit, no drift share) fails with a message saying what to supply or which threshold to disable.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.evaluation.ab import ABResult
from mlops_assets.evaluation.assess import SkillAssessment
from mlops_assets.evaluation.backtest import BacktestResult
from mlops_assets.evaluation.errors import EvaluationInputError
from mlops_assets.evaluation.fairness import DEFAULT_FAIRNESS_LIMITS, FairnessReport, severity_for
from mlops_assets.evaluation.metrics import HIGHER_IS_BETTER, METRIC_NAMES, TASK_TYPES
from mlops_assets.evaluation.serialize import dumps, fmt, json_safe


class CompliancePolicy(BaseModel):
    """Thresholds of the compliance gate (sensible defaults for a daily direction model)."""

    model_config = ConfigDict(extra="forbid")

    primary_metric: dict[str, str] = Field(
        default_factory=lambda: {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "rmse"},
        description="metric compared to the baselines, per task type",
    )
    metric_margin: float | None = Field(0.0, description="required improvement over the best baseline")
    metric_limits: dict[str, float] = Field(
        default_factory=dict, description="absolute limits, e.g. {'roc_auc': 0.52, 'log_loss': 0.70}"
    )
    max_drawdown: float | None = Field(
        0.35, ge=0, description="largest allowed peak-to-trough loss (0.35 = 35 %)"
    )
    min_sharpe: float | None = Field(None, description="smallest allowed annualised Sharpe of the backtest")
    fairness_limits: dict[str, float] | None = Field(default_factory=lambda: dict(DEFAULT_FAIRNESS_LIMITS))
    fairness_warn_margin: float = Field(0.2, ge=0, le=1)
    max_drift_share: float | None = Field(
        0.5, ge=0, le=1, description="largest allowed share of drifted features"
    )
    block_if_worse_than_champion: bool = True
    metric_ci_margin: float | None = Field(
        None, description="required margin of the interval's lower bound over the best baseline (None: off)"
    )
    min_deflated_sharpe: float | None = Field(
        None, ge=0, le=1, description="smallest allowed Deflated Sharpe Ratio (None: off)"
    )


class PolicyCheck(BaseModel):
    name: str
    passed: bool
    value: float | None = None
    threshold: float | None = None
    message: str = ""
    skipped: bool = False


class ComplianceReport(BaseModel):
    passed: bool
    task_type: str
    checks: list[PolicyCheck]
    policy: dict[str, object]
    model_version: str | None = None
    created_at: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    @property
    def failed_checks(self) -> list[PolicyCheck]:
        return [c for c in self.checks if not c.passed]

    def to_json(self, indent: int | None = 2) -> str:
        return dumps(self.model_dump(), indent=indent)

    def to_markdown(self) -> str:
        title = f"Compliance report{f' - version {self.model_version}' if self.model_version else ''}"
        verdict = "PASSED" if self.passed else f"FAILED ({len(self.failed_checks)} blocking check(s))"
        lines = [
            f"## {title}", "", f"**Verdict: {verdict}** - task `{self.task_type}`, {self.created_at}", "",
            "| check | result | value | threshold | message |", "| --- | --- | --- | --- | --- |",
        ]
        for c in self.checks:
            result = "skipped" if c.skipped else ("pass" if c.passed else "**FAIL**")
            message = c.message.replace("|", "\\|")
            lines.append(f"| {c.name} | {result} | {fmt(c.value)} | {fmt(c.threshold)} | {message} |")
        return "\n".join(lines) + "\n"


def infer_task_type(metrics: Mapping[str, float]) -> str:
    """Guess the task type from the metric names :func:`compute_metrics` returns."""
    for task in ("regression", "multiclass", "binary"):
        if set(METRIC_NAMES[task]) <= set(metrics):
            return task
    raise EvaluationInputError(
        "metrics", f"cannot tell the task type from {sorted(metrics)}", "pass task_type="
    )


def _finite(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _skipped(name: str, why: str) -> PolicyCheck:
    return PolicyCheck(name=name, passed=True, skipped=True, message=why)


def _metric_vs_baseline(
    policy: CompliancePolicy,
    task: str,
    metrics: Mapping[str, float],
    baselines: Mapping[str, Mapping[str, float]],
) -> PolicyCheck:
    metric = policy.primary_metric.get(task)
    name = "metric_vs_baseline"
    if policy.metric_margin is None:
        return _skipped(name, "disabled (metric_margin is None)")
    if metric is None:
        return PolicyCheck(
            name=name, passed=False, message=f"no primary metric for task {task!r} in the policy"
        )
    value = _finite(metrics.get(metric))
    if value is None:
        return PolicyCheck(name=name, passed=False, message=f"candidate {metric} is missing or undefined")
    higher = HIGHER_IS_BETTER.get(metric, True)
    scored = {b: v for b, m in baselines.items() if (v := _finite(m.get(metric))) is not None}
    if not scored:
        return PolicyCheck(
            name=name, passed=False, value=value,
            message=f"no baseline {metric} to compare with; pass baseline metrics or set metric_margin=None",
        )
    best_name, best = (max if higher else min)(scored.items(), key=lambda kv: kv[1])
    threshold = best + policy.metric_margin if higher else best - policy.metric_margin
    passed = value >= threshold if higher else value <= threshold
    relation = ">=" if higher else "<="
    return PolicyCheck(
        name=name, passed=passed, value=value, threshold=threshold,
        message=f"{metric} {fmt(value)} must be {relation} best baseline '{best_name}' {fmt(best)}"
        f" {'+' if higher else '-'} margin {policy.metric_margin:g}",
    )


def _metric_limits(policy: CompliancePolicy, metrics: Mapping[str, float]) -> list[PolicyCheck]:
    checks = []
    for metric, limit in policy.metric_limits.items():
        value = _finite(metrics.get(metric))
        higher = HIGHER_IS_BETTER.get(metric, True)
        name = f"metric_limit:{metric}"
        if value is None:
            checks.append(PolicyCheck(
                name=name, passed=False, threshold=limit, message=f"{metric} is missing or undefined"
            ))
            continue
        passed = value >= limit if higher else value <= limit
        checks.append(PolicyCheck(
            name=name, passed=passed, value=value, threshold=limit,
            message=f"{metric} must be {'>=' if higher else '<='} {limit:g}",
        ))
    return checks


def _backtest_checks(
    policy: CompliancePolicy, backtest: BacktestResult | Mapping[str, float] | None
) -> list[PolicyCheck]:
    stats = backtest.stats("candidate") if isinstance(backtest, BacktestResult) else backtest
    out = []
    for name, limit, key, upper in (
        ("max_drawdown", policy.max_drawdown, "max_drawdown", True),
        ("min_sharpe", policy.min_sharpe, "sharpe", False),
    ):
        if limit is None:
            out.append(_skipped(name, f"disabled ({name} is None)"))
            continue
        value = _finite(stats.get(key)) if stats is not None else None
        if value is None:
            out.append(PolicyCheck(
                name=name, passed=False, threshold=limit,
                message=f"backtest {key} unavailable; run the backtest or set {name}=None",
            ))
            continue
        passed = value <= limit if upper else value >= limit
        out.append(PolicyCheck(
            name=name, passed=passed, value=value, threshold=limit,
            message=f"backtest {key} must be {'<=' if upper else '>='} {limit:g}",
        ))
    return out


def _fairness_checks(policy: CompliancePolicy, fairness: FairnessReport | None) -> list[PolicyCheck]:
    if policy.fairness_limits is None:
        return [_skipped("fairness", "disabled (fairness_limits is None)")]
    if fairness is None:
        message = "no fairness audit; run it or set fairness_limits=None"
        return [PolicyCheck(name="fairness", passed=False, message=message)]
    checks = []
    for metric, limit in policy.fairness_limits.items():
        if metric not in fairness.disparities:
            checks.append(PolicyCheck(name=f"fairness:{metric}", passed=False, threshold=limit,
                                      message=f"{metric} is not in the fairness audit"))
            continue
        graded = severity_for(metric, fairness.disparities[metric], limit, policy.fairness_warn_margin)
        checks.append(PolicyCheck(
            name=f"fairness:{metric}", passed=graded.severity != "fail", value=_finite(graded.value),
            threshold=limit, message=f"{graded.message} (segment '{fairness.sensitive_name}')",
        ))
    return checks


def _drift_check(policy: CompliancePolicy, drift_share: float | None) -> PolicyCheck:
    if policy.max_drift_share is None:
        return _skipped("drift_share", "disabled (max_drift_share is None)")
    value = _finite(drift_share)
    if value is None:
        return PolicyCheck(
            name="drift_share", passed=False, threshold=policy.max_drift_share,
            message="drift share not computed; run the drift report or set max_drift_share=None",
        )
    return PolicyCheck(
        name="drift_share", passed=value <= policy.max_drift_share, value=value,
        threshold=policy.max_drift_share,
        message="share of drifted features, training window vs current data",
    )


def _ab_check(policy: CompliancePolicy, ab: ABResult | None) -> PolicyCheck:
    if not policy.block_if_worse_than_champion:
        return _skipped("champion_ab", "disabled (block_if_worse_than_champion is False)")
    if ab is None:
        return _skipped("champion_ab", "no champion to compare with")
    return PolicyCheck(
        name="champion_ab", passed=ab.verdict != "candidate_worse", value=_finite(ab.p_value),
        threshold=ab.alpha,
        message=f"{ab.verdict}: {ab.reason}",
    )


def _skill_checks(policy: CompliancePolicy, skill: SkillAssessment | None) -> list[PolicyCheck]:
    out = []
    if policy.metric_ci_margin is None:
        out.append(_skipped("metric_ci_vs_baseline", "disabled (metric_ci_margin is None)"))
    elif skill is None:
        out.append(PolicyCheck(name="metric_ci_vs_baseline", passed=False,
                               message="no out-of-sample interval; run the walk-forward evaluation or set "
                                       "metric_ci_margin=None"))
    else:
        iv, best = skill.interval, skill.best_baseline()
        higher = skill.higher_is_better
        bound = iv.low if higher else iv.high
        level = f"{iv.level:.0%}"
        if best is None or not math.isfinite(bound):
            out.append(PolicyCheck(name="metric_ci_vs_baseline", passed=False, value=_finite(bound),
                                   message=f"{skill.metric} interval or baseline undefined on the "
                                           f"out-of-sample rows ({skill.mode})"))
        else:
            name, value = best
            threshold = value + policy.metric_ci_margin if higher else value - policy.metric_ci_margin
            passed = bound > threshold if higher else bound < threshold
            side = "lower" if higher else "upper"
            verdict = "skill beyond the baseline" if passed else "not distinguishable from the baseline (could be luck)"
            out.append(PolicyCheck(
                name="metric_ci_vs_baseline", passed=passed, value=bound, threshold=threshold,
                message=f"{side} bound of the {level} interval of {skill.metric} [{fmt(iv.low)}, {fmt(iv.high)}] "
                        f"(point {fmt(iv.value)}, {skill.mode}, {iv.n_dates} dates) must be "
                        f"{'above' if higher else 'below'} best baseline '{name}' {fmt(value)}"
                        f" {'+' if higher else '-'} margin {policy.metric_ci_margin:g}: {verdict}"))
    if policy.min_deflated_sharpe is None:
        out.append(_skipped("deflated_sharpe", "disabled (min_deflated_sharpe is None)"))
    elif skill is None:
        out.append(PolicyCheck(name="deflated_sharpe", passed=False, threshold=policy.min_deflated_sharpe,
                               message="no out-of-sample returns; run the walk-forward evaluation or set "
                                       "min_deflated_sharpe=None"))
    else:
        d = skill.dsr
        value = _finite(d.dsr)
        out.append(PolicyCheck(
            name="deflated_sharpe", passed=value is not None and value >= policy.min_deflated_sharpe, value=value,
            threshold=policy.min_deflated_sharpe,
            message=f"probability that the strategy's true Sharpe exceeds the best of {d.n_trials} trial(s) by luck "
                    f"(annualised Sharpe {fmt(d.sharpe_annualised)} vs expected maximum "
                    f"{fmt(d.expected_max_sharpe * math.sqrt(252))}, {d.n_returns} days, skew {fmt(d.skew)}, "
                    f"kurtosis {fmt(d.kurtosis)}) must be >= {policy.min_deflated_sharpe:g}"))
    return out


def compliance_verdict(
    policy: CompliancePolicy | None,
    metrics: Mapping[str, float],
    baseline_metrics: Mapping[str, Mapping[str, float]],
    backtest: BacktestResult | Mapping[str, float] | None,
    fairness: FairnessReport | None,
    candidate_drift_share: float | None,
    *,
    task_type: str | None = None,
    ab: ABResult | None = None,
    model_version: str | None = None,
    skill: SkillAssessment | None = None,
) -> ComplianceReport:
    """Check every threshold of ``policy`` (defaults when None) and return the report.

    ``baseline_metrics`` maps a baseline name to its metrics; ``backtest`` is a result or the
    candidate's whole-period statistics (``max_drawdown``, ``sharpe``). ``skill`` is the
    out-of-sample assessment the interval and Deflated Sharpe checks read.
    """
    policy = policy or CompliancePolicy()
    task = task_type or infer_task_type(metrics)
    if task not in TASK_TYPES:
        raise EvaluationInputError(
            "task_type", f"unknown task type {task!r}", f"use one of {', '.join(TASK_TYPES)}"
        )
    checks = [
        _metric_vs_baseline(policy, task, metrics, baseline_metrics),
        *_metric_limits(policy, metrics),
        *_backtest_checks(policy, backtest),
        *_fairness_checks(policy, fairness),
        _drift_check(policy, candidate_drift_share),
        _ab_check(policy, ab),
        *_skill_checks(policy, skill),
    ]
    return ComplianceReport(
        passed=all(c.passed for c in checks), task_type=task, checks=checks,
        policy=json_safe(policy.model_dump()), model_version=model_version,  # type: ignore[arg-type]
    )

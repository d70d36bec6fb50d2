"""The compliance policy and evaluation knobs as the settings configure them (one place for the
evaluation assets and the audit export)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops_assets.evaluation.assess import SkillConfig
from mlops_assets.evaluation.compliance import CompliancePolicy
from mlops_assets.evaluation.report import EvaluationConfig
from mlops_assets.evaluation.scenarios import saved_scenarios

if TYPE_CHECKING:
    from mlops_assets.settings import Settings


def compliance_policy(settings: Settings) -> CompliancePolicy:
    e = settings.evaluation
    return CompliancePolicy(
        primary_metric={"binary": settings.model.gate_metric, "multiclass": "f1_macro", "regression": "rmse"},
        metric_margin=e.metric_margin_over_baseline,
        max_drawdown=e.max_drawdown_limit,
        fairness_limits={"demographic_parity_difference": e.fairness_dp_limit,
                         "equalized_odds_difference": e.fairness_eo_limit},
        max_drift_share=e.candidate_drift_limit,
        metric_ci_margin=e.metric_ci_margin_over_baseline,
        min_deflated_sharpe=e.min_deflated_sharpe,
    )


def evaluation_config(settings: Settings) -> EvaluationConfig:
    """The evaluation knobs; stress scenarios are the configured ones plus those saved over the API."""
    e = settings.evaluation
    saved = [{k: s[k] for k in ("name", "start", "end")} for s in saved_scenarios(settings.home)]
    return EvaluationConfig(
        segment_col=e.fairness_attribute, cost_bps=e.cost_bps, stress_windows=e.stress_windows,
        stress_window_days=e.stress_window_days, scenarios=[*e.scenarios, *saved], shap_max_rows=e.shap_sample,
        horizon=settings.features.horizon_days,
    )


def skill_config(settings: Settings) -> SkillConfig:
    """The knobs of the skill assessment (interval, IC, PBO; the strategy as the backtest runs it)."""
    e = settings.evaluation
    return SkillConfig(
        n_boot=e.bootstrap_samples, alpha=1 - e.interval_level, ic_min_symbols=e.ic_min_symbols,
        cost_bps=e.cost_bps, horizon=settings.features.horizon_days,
    )

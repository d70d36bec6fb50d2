"""Evaluation harness: metrics vs baselines, backtest replay with scenarios, SHAP explanations,
fairness audit, A/B significance and the compliance verdict.

Plain Python (no Dagster). The entry point for one model version is
:func:`mlops_assets.evaluation.report.evaluate_version`; each piece is usable on its own.
Names are re-exported lazily so importing one light module (e.g. ``metrics``) does not pay for
SHAP, Fairlearn and matplotlib.
"""

from __future__ import annotations

from mlops_assets.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "compute_metrics": "metrics",
    "compare_to_baselines": "metrics",
    "majority_class_baseline": "baselines",
    "momentum_baseline": "baselines",
    "backtest": "backtest",
    "BacktestResult": "backtest",
    "positions_from_scores": "backtest",
    "find_stress_windows": "scenarios",
    "explain": "explain",
    "explain_one": "explain",
    "save_explanation": "explain",
    "Explanation": "explain",
    "fairness_audit": "fairness",
    "FairnessReport": "fairness",
    "ab_test": "ab",
    "ab_test_frame": "ab",
    "ABResult": "ab",
    "compliance_verdict": "compliance",
    "CompliancePolicy": "compliance",
    "ComplianceReport": "compliance",
    "PolicyCheck": "compliance",
    "evaluate_version": "report",
    "EvaluationConfig": "report",
    "EvaluationReport": "report",
    "EvaluationInputError": "errors",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)

"""Compliance verdict: pass and fail cases, fail-closed on missing inputs, JSON and markdown."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlops_assets.evaluation.ab import ab_test
from mlops_assets.evaluation.compliance import CompliancePolicy, compliance_verdict
from mlops_assets.evaluation.errors import EvaluationInputError
from mlops_assets.evaluation.fairness import fairness_audit

GOOD = {"accuracy": 0.56, "precision": 0.55, "recall": 0.6, "f1": 0.57, "roc_auc": 0.58, "log_loss": 0.68,
        "brier": 0.24}
BASELINES = {
    "majority_class": {"roc_auc": 0.5, "accuracy": 0.52},
    "momentum": {"roc_auc": 0.53, "accuracy": 0.51},
}


def fair_report():
    y = np.array([1, 1, 0, 0] * 10)
    return fairness_audit(y, y, np.array(["calm", "volatile"] * 20))


def unfair_report():
    y = np.array([1, 0, 1, 0] * 10)
    groups = np.array(["calm"] * 20 + ["volatile"] * 20)
    pred = np.concatenate([np.ones(20), np.zeros(20)]).astype(int)
    return fairness_audit(y, pred, groups)


def test_all_checks_pass() -> None:
    report = compliance_verdict(
        CompliancePolicy(metric_margin=0.02, metric_limits={"log_loss": 0.69}), GOOD, BASELINES,
        {"max_drawdown": 0.12, "sharpe": 1.1}, fair_report(), 0.1, model_version="7",
    )
    assert report.passed, report.to_markdown()
    assert report.task_type == "binary"
    by_name = {c.name: c for c in report.checks}
    assert by_name["metric_vs_baseline"].threshold == pytest.approx(0.55)  # momentum 0.53 + 0.02
    assert by_name["metric_limit:log_loss"].passed
    assert by_name["min_sharpe"].skipped and by_name["champion_ab"].skipped
    doc = json.loads(report.to_json())
    assert doc["passed"] is True and doc["model_version"] == "7"
    assert "**Verdict: PASSED**" in report.to_markdown()


def test_each_threshold_can_fail() -> None:
    y = np.ones(60, dtype=int)
    ab = ab_test(y, y, np.r_[np.zeros(30, dtype=int), np.ones(30, dtype=int)])
    report = compliance_verdict(
        CompliancePolicy(metric_margin=0.1, min_sharpe=0.5, metric_limits={"roc_auc": 0.6}),
        GOOD, BASELINES, {"max_drawdown": 0.5, "sharpe": 0.2}, unfair_report(), 0.8, ab=ab,
    )
    assert not report.passed
    failed = {c.name for c in report.failed_checks}
    assert {
        "metric_vs_baseline", "metric_limit:roc_auc", "max_drawdown", "min_sharpe", "drift_share",
        "champion_ab", "fairness:demographic_parity_difference", "fairness:disparate_impact_ratio",
    } <= failed
    md = report.to_markdown()
    assert "**FAIL**" in md and "FAILED" in md


def test_lower_is_better_metric_for_regression() -> None:
    metrics = {"mae": 0.01, "rmse": 0.011, "r2": 0.1, "direction_accuracy": 0.55}
    baselines = {"majority_class": {"rmse": 0.012}}
    ok = compliance_verdict(CompliancePolicy(fairness_limits=None), metrics, baselines, {"max_drawdown": 0.1},
                            None, 0.0)
    assert ok.task_type == "regression" and ok.passed
    stricter = CompliancePolicy(fairness_limits=None, metric_margin=0.002)
    worse = compliance_verdict(stricter, metrics, baselines, {"max_drawdown": 0.1}, None, 0.0)
    check = next(c for c in worse.checks if c.name == "metric_vs_baseline")
    assert not check.passed and check.threshold == pytest.approx(0.010)


def test_missing_inputs_fail_closed_and_disabled_checks_skip() -> None:
    report = compliance_verdict(None, GOOD, {}, None, None, None)
    failed = {c.name for c in report.failed_checks}
    assert failed == {"metric_vs_baseline", "max_drawdown", "fairness", "drift_share"}
    assert all("set" in c.message or "pass" in c.message for c in report.failed_checks)
    relaxed = CompliancePolicy(
        metric_margin=None, max_drawdown=None, fairness_limits=None, max_drift_share=None
    )
    report = compliance_verdict(relaxed, GOOD, {}, None, None, None)
    assert report.passed and all(c.skipped for c in report.checks)


def test_policy_validation() -> None:
    with pytest.raises(Exception, match="max_drawdown"):
        CompliancePolicy(max_drawdown=-1)
    with pytest.raises(Exception, match="extra"):
        CompliancePolicy(max_drawdwn=0.2)
    with pytest.raises(EvaluationInputError, match="task_type"):
        compliance_verdict(None, {"foo": 1.0}, {}, None, None, None)

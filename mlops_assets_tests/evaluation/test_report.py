"""evaluate_version end to end on small synthetic frames, one per task type."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlops_assets.evaluation.compliance import CompliancePolicy
from mlops_assets.evaluation.errors import EvaluationInputError
from mlops_assets.evaluation.metrics import compute_metrics
from mlops_assets.evaluation.report import EvaluationConfig, evaluate_version
from mlops_assets_tests.evaluation.conftest import FEATURES, make_split, predictor

CONFIG = EvaluationConfig(
    shap_max_rows=40, n_boot=200, stress_windows=2, stress_window_days=10,
    scenarios=[{"name": "first_month", "start": "2023-01-02", "end": "2023-01-31"}],
)
POLICY = CompliancePolicy(fairness_limits={"disparate_impact_ratio": 0.6, "equalized_odds_difference": 0.3})
CHAMPION_WEIGHTS = np.array([0.6, 0.3, 1.0])  # leans on the useless feature


def _strict_json(path: Path) -> dict:
    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token} in {path.name}")
    return json.loads(path.read_text(), parse_constant=reject)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_evaluate_version_each_task(task: str, tmp_path: Path) -> None:
    test_df, train_df = make_split(task, seed=1), make_split(task, seed=2)
    model = predictor(task)
    report = evaluate_version(
        task, test_df, FEATURES, model, predictor(task, CHAMPION_WEIGHTS), train_df, POLICY, 0.1,
        tmp_path / "eval", config=CONFIG, model_version="4",
    )
    X = test_df.select(FEATURES).to_numpy()
    expected = compute_metrics(task, test_df["label"].to_numpy(), model(X))
    assert report.metrics == pytest.approx(expected)
    models = report.comparison["model"].to_list()
    assert models[0] == "candidate" and models[-1] == "champion" and "majority_class" in models
    assert ("momentum" in models) == (task == "binary")
    assert report.backtest.strategies == ["candidate", "champion", "buy_and_hold"]
    assert [s.kind for s in report.backtest.scenarios] == ["full", "stress", "stress", "configured"]
    assert report.explanation is not None
    assert report.explanation.top_features(3) == ["f_strong", "f_medium", "f_weak"]
    assert report.fairness is not None and set(report.fairness.by_group["group"]) == {"calm", "volatile"}
    assert report.ab is not None and report.ab.verdict == "candidate_better"
    assert report.passed, report.compliance.to_markdown()
    assert all(len(png) < 100_000 and png[:4] == b"\x89PNG" for png in report.plots.values())
    assert {"equity_curve", "shap_summary"} <= set(report.plots)
    name, value = report.headline()
    assert name == {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "rmse"}[task]
    assert value == pytest.approx(expected[name])
    summary = report.summary_metrics()
    assert summary["compliance_passed"] == 1.0 and all(math.isfinite(v) for v in summary.values())

    out = tmp_path / "eval"
    for name in ("evaluation_report.json", "evaluation_report.md", "compliance.json", "compliance.md",
                 "metrics_comparison.csv", "backtest_scenarios.csv", "fairness_by_group.csv",
                 "plots/equity_curve.png", "explanation/shap_explanation.json"):
        assert (out / name).is_file(), name
    doc = _strict_json(out / "evaluation_report.json")
    assert doc["passed"] is True and doc["model_version"] == "4"
    assert _strict_json(out / "compliance.json")["passed"] is True
    md = (out / "evaluation_report.md").read_text()
    assert "## Backtest" in md and "first_month" in md and "(plots/equity_curve.png)" in md


def test_failing_version_and_no_champion(tmp_path: Path) -> None:
    test_df, train_df = make_split("binary", seed=3), make_split("binary", seed=4)
    unlabelled = test_df.tail(3).with_columns(
        pl.lit(None, dtype=pl.Int32).alias("label"), pl.lit(None, dtype=pl.Float64).alias("fwd_return"),
        pl.col("date") + pl.duration(days=400),
    )
    test_df = pl.concat([test_df, unlabelled])
    # a model that ignores the features cannot beat the baselines; the drift share is also too high
    report = evaluate_version(
        "binary", test_df, FEATURES, lambda X: np.full(X.shape[0], 0.5), None, train_df,
        POLICY, 0.9, tmp_path, config=CONFIG.model_copy(update={"explain": False}),
    )
    assert not report.passed
    assert report.n_unlabelled_dropped == 3 and report.n_rows == test_df.height - 3
    failed = {c.name for c in report.compliance.failed_checks}
    assert {"metric_vs_baseline", "drift_share"} <= failed
    assert report.ab is None and report.explanation is None
    ab_check = next(c for c in report.compliance.checks if c.name == "champion_ab")
    assert ab_check.skipped
    assert _strict_json(tmp_path / "compliance.json")["passed"] is False


def test_input_errors_name_the_problem(tmp_path: Path) -> None:
    test_df, train_df = make_split("binary"), make_split("binary", seed=5)
    with pytest.raises(EvaluationInputError, match="regime"):
        evaluate_version("binary", test_df.drop("regime"), FEATURES, predictor("binary"), None, train_df,
                         None, 0.0, tmp_path)
    with pytest.raises(EvaluationInputError) as info:
        evaluate_version("binary", test_df, FEATURES, lambda X: np.zeros((X.shape[0], 3)), None, train_df,
                         None, 0.0, tmp_path)
    assert info.value.field == "predict_fn"


def test_fairness_is_informational_when_the_policy_has_no_limits(tmp_path: Path) -> None:
    test_df, train_df = make_split("regression", seed=6), make_split("regression", seed=7)
    policy = CompliancePolicy(fairness_limits=None)
    report = evaluate_version(
        "regression", test_df, FEATURES, predictor("regression"), None, train_df, policy, 0.0, tmp_path,
        config=CONFIG.model_copy(update={"explain": False}),
    )
    assert report.fairness is not None and report.fairness.checks == []
    assert next(c for c in report.compliance.checks if c.name == "fairness").skipped
    assert report.passed

"""The promotion gate on synthetic data with a planted signal: walk-forward + interval + DSR accept
real skill and refuse a noise model whose point estimate beats the baseline by luck."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from mlops_assets.evaluation.assess import SINGLE_SPLIT, TrialsInfo, assess_skill
from mlops_assets.evaluation.compliance import CompliancePolicy, compliance_verdict
from mlops_assets.evaluation.walk_forward import walk_forward_predictions

GATE = CompliancePolicy(metric_margin=0.0, metric_ci_margin=0.0, min_deflated_sharpe=0.95, max_drawdown=None,
                        fairness_limits=None, max_drift_share=None)


def market(n_dates: int = 400, n_symbols: int = 8, signal: float = 0.5, seed: int = 0) -> pl.DataFrame:
    """``f_signal`` predicts the next return with strength ``signal`` (0 = none); ``f_noise`` never."""
    rng = np.random.default_rng(seed)
    n = n_dates * n_symbols
    f_signal, f_noise = rng.normal(size=n), rng.normal(size=n)
    fwd = 0.01 * (signal * f_signal + rng.normal(size=n))
    dates = [dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(n_dates)]
    return pl.DataFrame({
        "symbol": [f"S{j}" for _ in range(n_dates) for j in range(n_symbols)],
        "date": [d for d in dates for _ in range(n_symbols)],
        "f_signal": f_signal, "f_noise": f_noise, "ret_5d": rng.normal(size=n),
        "fwd_return": fwd, "label": (fwd > 0).astype(np.int32), "split": "train",
    })


def least_squares_trainer(features: list[str]):
    """A cheap linear-probability model per fold (trained on train rows only, as the folds say)."""
    seen: list[int] = []

    def train(frame: pl.DataFrame, fold: int):
        seen.append(fold)
        tr = frame.filter(pl.col("split") == "train")
        assert frame.filter(pl.col("split") == "test").get_column("date").min() > tr.get_column("date").max()
        x = np.c_[np.ones(tr.height), tr.select(features).to_numpy()]
        beta = np.linalg.lstsq(x, tr.get_column("label").to_numpy().astype(float), rcond=None)[0]
        return lambda X: np.clip(np.c_[np.ones(len(X)), X] @ beta, 0.0, 1.0)

    train.seen = seen  # type: ignore[attr-defined]
    return train


def _assess(data: pl.DataFrame, features: list[str], n_trials: int = 5):
    trainer = least_squares_trainer(features)
    wf = walk_forward_predictions(data, features, trainer, n_folds=3, horizon=1, embargo=2)
    assert trainer.seen == [0, 1, 2]  # type: ignore[attr-defined]
    skill = assess_skill("binary", wf.predictions, metric="roc_auc", trials=TrialsInfo(n_trials),
                         layout=wf.fold_table(), note="test")
    return skill, wf


def _verdict(skill):
    point = {"roc_auc": skill.interval.value}
    baselines = {k: {"roc_auc": v} for k, v in skill.baselines.items()}
    return compliance_verdict(GATE, point, baselines, None, None, None, task_type="binary", skill=skill)


def test_gate_accepts_a_model_with_real_skill() -> None:
    skill, wf = _assess(market(signal=0.5), ["f_signal", "f_noise"])
    assert skill.interval.low > 0.6 and skill.per_fold.height == 3
    assert set(skill.per_fold.columns) >= {"fold", "test_start", "roc_auc", "ci_low", "ci_high", "ic_mean"}
    assert skill.ic.method == "cross_sectional" and skill.ic.mean > 0.2 and skill.ic.t_stat > 5
    assert skill.dsr.dsr > 0.99
    report = _verdict(skill)
    checks = {c.name: c for c in report.checks}
    assert report.passed, report.to_markdown()
    assert checks["metric_ci_vs_baseline"].value == pytest.approx(skill.interval.low)
    assert "skill beyond the baseline" in checks["metric_ci_vs_baseline"].message
    assert checks["deflated_sharpe"].threshold == 0.95
    pooled_dates = wf.predictions.get_column("date").n_unique()
    assert skill.dsr.n_returns == pooled_dates  # one strategy return per out-of-sample date


def test_gate_refuses_a_noise_model_that_beats_the_baseline_by_luck() -> None:
    # search seeds for a noise market where the point AUC beats the 0.5 baseline by luck
    for seed in range(40):
        skill, _ = _assess(market(signal=0.0, seed=seed), ["f_signal", "f_noise"], n_trials=20)
        if skill.interval.value > 0.51:
            break
    else:
        pytest.fail("no lucky noise model in 40 seeds")
    report = _verdict(skill)
    checks = {c.name: c for c in report.checks}
    assert checks["metric_vs_baseline"].passed  # the single point estimate would have passed
    assert not checks["metric_ci_vs_baseline"].passed and "could be luck" in checks["metric_ci_vs_baseline"].message
    assert skill.interval.low < 0.5 < skill.interval.high
    assert not checks["deflated_sharpe"].passed and checks["deflated_sharpe"].value < 0.95
    assert not report.passed


def test_missing_skill_evidence_fails_closed_when_the_checks_are_on() -> None:
    report = compliance_verdict(GATE, {"roc_auc": 0.6}, {"majority_class": {"roc_auc": 0.5}}, None, None, None,
                                task_type="binary")
    failed = {c.name for c in report.failed_checks}
    assert failed == {"metric_ci_vs_baseline", "deflated_sharpe"}
    off = compliance_verdict(CompliancePolicy(max_drawdown=None, fairness_limits=None, max_drift_share=None),
                             {"roc_auc": 0.6}, {"majority_class": {"roc_auc": 0.5}}, None, None, None,
                             task_type="binary")
    assert off.passed and {c.name for c in off.checks if c.skipped} >= {"metric_ci_vs_baseline", "deflated_sharpe"}


def test_single_split_mode_and_report_rendering(tmp_path) -> None:
    data = market(n_dates=200, signal=0.5, seed=3)
    test = data.filter(pl.col("date") >= pl.col("date").unique().sort().get(150))
    preds = test.with_columns(pl.lit(0).alias("fold"),
                              (1 / (1 + (-pl.col("f_signal")).exp())).alias("score"))
    skill = assess_skill("binary", preds, metric="roc_auc", trials=TrialsInfo(3, None, "3 runs"), mode=SINGLE_SPLIT,
                         note="cannot be retrained: single split")
    assert skill.mode == SINGLE_SPLIT and skill.per_fold.height == 1
    assert "1/T" in skill.dsr.variance_source  # no trial Sharpes: the null sampling variance
    assert skill.dsr.trials_sharpe_variance == pytest.approx(1 / skill.dsr.n_returns)
    from mlops_assets.evaluation.plots import skill_figures
    from mlops_assets.evaluation.report import evaluate_version
    from mlops_assets_tests.evaluation.conftest import make_split, predictor

    split = make_split("binary", n_dates=60)
    report = evaluate_version("binary", split, ["f_strong", "f_medium", "f_weak"], predictor("binary"), None,
                              make_split("binary", n_dates=60, seed=1), None, 0.1, tmp_path, skill=skill)
    assert "walk_forward" in report.plots and set(skill_figures(skill)) == {"walk_forward"}
    md = (tmp_path / "evaluation_report.md").read_text()
    assert "## Skill or luck (single-split)" in md and "Deflated Sharpe Ratio" in md
    assert "cannot be retrained" in md and (tmp_path / "skill_by_fold.csv").exists()
    assert report.summary_metrics()["wf_roc_auc_ci_low"] == pytest.approx(skill.interval.low)

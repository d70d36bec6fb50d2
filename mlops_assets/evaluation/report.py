"""One call per model version: :func:`evaluate_version` runs the whole harness and writes its files.

It scores the test split with the candidate (and the champion when there is one), compares it
with the naive baselines, replays the backtest with its scenarios, explains the model with
SHAP, audits fairness across the segment column, runs the A/B test against the champion and
renders the compliance verdict. Everything lands in ``out_dir`` so a Dagster asset can log the
directory to the model version's MLflow run:

``evaluation_report.json`` / ``.md``, ``compliance.json`` / ``.md``, ``metrics_comparison.csv``,
``backtest_scenarios.csv``, ``backtest_daily.csv``, ``fairness_by_group.csv``, ``plots/*.png``
(full size) and ``explanation/`` (SHAP JSON + PNG). Small PNGs for Dagster markdown metadata are
in ``EvaluationReport.plots``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.evaluation.ab import ABResult, ab_test
from mlops_assets.evaluation.assess import SkillAssessment
from mlops_assets.evaluation.backtest import (
    CANDIDATE,
    CHAMPION,
    MODES,
    BacktestResult,
    backtest,
    positions_from_scores,
    strategy_returns_aligned,
)
from mlops_assets.evaluation.baselines import majority_class_baseline, momentum_baseline
from mlops_assets.evaluation.compliance import CompliancePolicy, ComplianceReport, compliance_verdict
from mlops_assets.evaluation.errors import EvaluationInputError
from mlops_assets.evaluation.explain import Explanation, explain, save_explanation
from mlops_assets.evaluation.fairness import FairnessReport, fairness_audit
from mlops_assets.evaluation.metrics import (
    METRIC_NAMES,
    as_scores,
    check_task_type,
    compare_to_baselines,
    predicted_classes,
    true_classes,
)
from mlops_assets.evaluation.plots import (
    equity_curve_figure,
    figure_png,
    metric_figures,
    save_figures,
    shap_summary_figure,
    skill_figures,
)
from mlops_assets.evaluation.render import report_markdown
from mlops_assets.evaluation.scenarios import ScenarioWindow
from mlops_assets.evaluation.serialize import dumps

PredictFn = Callable[[np.ndarray], np.ndarray]
MAJORITY, MOMENTUM = "majority_class", "momentum"


class EvaluationConfig(BaseModel):
    """Knobs of :func:`evaluate_version` (column names, backtest, SHAP and A/B settings)."""

    model_config = ConfigDict(extra="forbid")

    label_col: str = "label"
    return_col: str = "fwd_return"
    segment_col: str = "regime"
    momentum_col: str = "ret_5d"
    threshold: float = Field(0.5, gt=0, lt=1)
    mode: str = "long_flat"
    cost_bps: float = Field(5.0, ge=0)
    horizon: int = Field(1, ge=1)
    stress_windows: int = Field(3, ge=0)
    stress_window_days: int = Field(20, ge=2)
    scenarios: list[ScenarioWindow] = Field(default_factory=list)
    explain: bool = True
    shap_max_seconds: float = Field(10.0, gt=0)
    shap_max_rows: int = Field(200, ge=1)
    shap_background_size: int = Field(50, ge=1)
    n_boot: int = Field(1000, ge=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    block_length: int | None = Field(None, ge=1)
    seed: int = 0
    fairness_min_group_size: int = Field(30, ge=1)
    positive_class: int | None = Field(
        None, description="multiclass class treated as 'selected' (default: highest id)"
    )


@dataclass
class EvaluationReport:
    """Everything the harness found for one model version."""

    task_type: str
    model_version: str | None
    n_rows: int
    features: list[str]
    metrics: dict[str, float]
    comparison: pl.DataFrame
    backtest: BacktestResult
    explanation: Explanation | None
    fairness: FairnessReport | None
    ab: ABResult | None
    compliance: ComplianceReport
    plots: dict[str, bytes] = field(default_factory=dict)
    plot_files: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    n_unlabelled_dropped: int = 0
    skill: SkillAssessment | None = None

    @property
    def passed(self) -> bool:
        return self.compliance.passed

    def headline(self) -> tuple[str, float]:
        """(name, value) of the policy's primary metric for this task, e.g. ``("roc_auc", 0.57)``
        (for the ``evaluation.metric`` / ``evaluation.value`` tags)."""
        primary = self.compliance.policy.get("primary_metric", {})
        name = primary.get(self.task_type, METRIC_NAMES[self.task_type][0])  # type: ignore[union-attr]
        return name, float(self.metrics.get(name, math.nan))

    def summary_metrics(self) -> dict[str, float]:
        """Flat finite numbers for ``mlflow.log_metrics`` / asset metadata (``test_*``,
        ``backtest_*``, ``fairness_*``, ``ab_*``, ``compliance_passed``)."""
        out = {f"test_{k}": v for k, v in self.metrics.items()}
        for k, v in self.backtest.stats(CANDIDATE).items():
            out[f"backtest_{k}"] = v
        if self.fairness is not None:
            out.update({f"fairness_{k}": v for k, v in self.fairness.disparities.items()})
        if self.ab is not None:
            out.update({"ab_mcnemar_p_value": self.ab.mcnemar_p_value, "ab_accuracy_difference":
                        self.ab.accuracy_difference, "ab_sharpe_difference": self.ab.sharpe_difference})
        if self.skill is not None:
            out.update(self.skill.summary_metrics())
        out["compliance_passed"] = float(self.compliance.passed)
        return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}

    def to_dict(self) -> dict[str, object]:
        return {
            "task_type": self.task_type,
            "model_version": self.model_version,
            "n_rows": self.n_rows,
            "n_unlabelled_dropped": self.n_unlabelled_dropped,
            "features": self.features,
            "passed": self.passed,
            "metrics": self.metrics,
            "comparison": self.comparison.to_dicts(),
            "backtest": self.backtest.to_dict(),
            "explanation": self.explanation.to_dict() if self.explanation else None,
            "fairness": self.fairness.to_dict() if self.fairness else None,
            "ab": self.ab.to_dict() if self.ab else None,
            "compliance": self.compliance.model_dump(),
            "skill": self.skill.to_dict() if self.skill else None,
            "files": {k: str(v) for k, v in self.files.items()},
        }

    def to_markdown(self) -> str:
        return report_markdown(self)


def _check_columns(df: pl.DataFrame, name: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise EvaluationInputError(name, f"missing columns {missing}", f"it has {df.columns}")


def _features(df: pl.DataFrame, features: Sequence[str]) -> np.ndarray:
    X = df.select([pl.col(f).cast(pl.Float64) for f in features]).to_numpy()
    if not np.all(np.isfinite(X)):
        raise EvaluationInputError(
            "features", "contain nulls, NaN or infinite values", "impute or drop those rows"
        )
    return X


def _score(task: str, fn: PredictFn, X: np.ndarray, name: str) -> np.ndarray:
    return as_scores(task, np.asarray(fn(X)), n=X.shape[0], field=name)


def _binarise(
    task: str, y: np.ndarray, scores: np.ndarray, cfg: EvaluationConfig
) -> tuple[np.ndarray, np.ndarray]:
    """0/1 truth and prediction for the fairness audit (see the module docs of fairness)."""
    if task == "multiclass":
        positive = scores.shape[1] - 1 if cfg.positive_class is None else cfg.positive_class
        predicted = predicted_classes(task, scores)
        return (y == positive).astype(np.int64), (predicted == positive).astype(np.int64)
    return true_classes(task, y), predicted_classes(task, scores, cfg.threshold)


def _baseline_scores(
    task: str, test_df: pl.DataFrame, train_df: pl.DataFrame, cfg: EvaluationConfig, n_classes: int | None
) -> dict[str, np.ndarray]:
    y_train = train_df.get_column(cfg.label_col).to_numpy()
    out = {MAJORITY: majority_class_baseline(y_train, test_df.height, task, n_classes)}
    if task == "binary" and cfg.momentum_col in test_df.columns:
        out[MOMENTUM] = momentum_baseline(test_df, cfg.momentum_col)
    return out


def _write_files(report: EvaluationReport, figures: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for name, path in save_figures(figures, out_dir / "plots").items():
        files[f"plot_{name}"] = path
        report.plot_files[name] = str(path.relative_to(out_dir))
    if report.explanation is not None:
        for key, path in save_explanation(report.explanation, out_dir / "explanation").items():
            files[f"explanation_{key}"] = path
    tables = {
        "metrics_comparison": report.comparison,
        "backtest_scenarios": report.backtest.scenario_table(),
        "backtest_daily": report.backtest.daily,
    }
    if report.fairness is not None:
        tables["fairness_by_group"] = report.fairness.by_group
    if report.skill is not None:
        tables["skill_by_fold"] = report.skill.per_fold
        tables["skill_daily_returns"] = report.skill.daily_returns
    for name, frame in tables.items():
        files[name] = out_dir / f"{name}.csv"
        frame.write_csv(files[name])
    files["compliance_json"] = out_dir / "compliance.json"
    files["compliance_json"].write_text(report.compliance.to_json())
    files["compliance_md"] = out_dir / "compliance.md"
    files["compliance_md"].write_text(report.compliance.to_markdown())
    files["report_md"] = out_dir / "evaluation_report.md"
    files["report_json"] = out_dir / "evaluation_report.json"
    report.files = files
    files["report_md"].write_text(report.to_markdown())
    files["report_json"].write_text(dumps(report.to_dict()))
    return files


def _labelled(test_df: pl.DataFrame, label_col: str) -> tuple[pl.DataFrame, int]:
    """Rows whose label is realised, and how many were dropped."""
    labelled = test_df.filter(pl.col(label_col).is_not_null())
    if labelled.schema[label_col].is_float():
        labelled = labelled.filter(pl.col(label_col).is_not_nan())
    if labelled.height == 0:
        raise EvaluationInputError("test_df", "has no labelled rows", "evaluate on rows with realised labels")
    return labelled, test_df.height - labelled.height


def _fairness(
    task: str, test_df: pl.DataFrame, y: np.ndarray, scores: np.ndarray, policy: CompliancePolicy,
    cfg: EvaluationConfig,
) -> FairnessReport | None:
    """The audit across ``cfg.segment_col`` (informational, without checks, when the policy has no
    fairness limits); None when the column is absent and no limit needs it."""
    if cfg.segment_col not in test_df.columns:
        return None
    y_bin, p_bin = _binarise(task, y, scores, cfg)
    return fairness_audit(
        y_bin, p_bin, test_df.get_column(cfg.segment_col).to_numpy(), policy.fairness_limits or {},
        sensitive_name=cfg.segment_col, warn_margin=policy.fairness_warn_margin,
        min_group_size=cfg.fairness_min_group_size,
    )


def _run_backtest(
    task: str, test_df: pl.DataFrame, scores: np.ndarray, champion: np.ndarray | None, cfg: EvaluationConfig
) -> BacktestResult:
    def positions(s: np.ndarray) -> np.ndarray:
        return positions_from_scores(task, s, cfg.mode, cfg.threshold)

    return backtest(
        test_df,
        positions=positions(scores),
        champion_positions=None if champion is None else positions(champion),
        mode=cfg.mode, cost_bps=cfg.cost_bps, threshold=cfg.threshold, horizon=cfg.horizon,
        return_col=cfg.return_col, stress_windows=cfg.stress_windows,
        stress_window_days=cfg.stress_window_days, scenarios=cfg.scenarios,
    )


def evaluate_version(
    task_type: str,
    test_df: pl.DataFrame,
    features: Sequence[str],
    predict_fn: PredictFn,
    champion_predict_fn: PredictFn | None,
    train_df: pl.DataFrame,
    policy: CompliancePolicy | None,
    drift_share: float | None,
    out_dir: str | Path,
    *,
    config: EvaluationConfig | None = None,
    model_version: str | None = None,
    skill: SkillAssessment | None = None,
) -> EvaluationReport:
    """Evaluate one model version end to end and write its report files into ``out_dir``.

    ``predict_fn`` / ``champion_predict_fn`` take the ``features`` matrix (float64, in order) and
    return P(class 1) ``(n,)`` (binary), ``(n, k)`` probabilities (multiclass) or forecasts
    ``(n,)`` (regression). ``train_df`` supplies the SHAP background and the majority baseline.
    Test rows without a label (not yet realised) are dropped and counted. ``skill`` is the
    out-of-sample assessment (walk-forward or single split, :mod:`~mlops_assets.evaluation.assess`)
    that the interval and Deflated Sharpe checks read; it is rendered and plotted with the report.
    """
    task = check_task_type(task_type)
    cfg = config or EvaluationConfig()
    policy = policy or CompliancePolicy()
    if cfg.mode not in MODES:
        raise EvaluationInputError(
            "config.mode", f"unknown mode {cfg.mode!r}", f"use one of {', '.join(MODES)}"
        )
    features = list(features)
    if not features:
        raise EvaluationInputError("features", "is empty", "pass the model's ordered feature names")
    segment = [cfg.segment_col] if policy.fairness_limits is not None else []
    _check_columns(test_df, "test_df", ["symbol", "date", cfg.label_col, cfg.return_col, *features, *segment])
    _check_columns(train_df, "train_df", [cfg.label_col, *features])
    test_df, n_unlabelled = _labelled(test_df, cfg.label_col)

    X_test, X_train = _features(test_df, features), _features(train_df, features)
    y = test_df.get_column(cfg.label_col).to_numpy()
    scores = _score(task, predict_fn, X_test, "predict_fn")
    n_classes = scores.shape[1] if task == "multiclass" else None
    all_scores: dict[str, np.ndarray] = {CANDIDATE: scores}
    all_scores.update(_baseline_scores(task, test_df, train_df, cfg, n_classes))
    champion = None
    if champion_predict_fn is not None:
        champion = all_scores[CHAMPION] = _score(task, champion_predict_fn, X_test, "champion_predict_fn")
    comparison = compare_to_baselines(task, y, all_scores, cfg.threshold)
    metrics = {m: float(v) for m, v in comparison.row(0, named=True).items() if m in METRIC_NAMES[task]}

    figures = metric_figures(task, y, scores, cfg.threshold)
    bt = _run_backtest(task, test_df, scores, champion, cfg)
    stress = [(s.start, s.end) for s in bt.scenarios if s.kind == "stress"]
    figures["equity_curve"] = equity_curve_figure(bt.equity_curves(), stress)

    explanation = None
    if cfg.explain:
        explanation = explain(
            predict_fn, X_train, X_test, features, max_seconds=cfg.shap_max_seconds,
            max_rows=cfg.shap_max_rows, background_size=cfg.shap_background_size, seed=cfg.seed,
        )
        figures["shap_summary"] = shap_summary_figure(explanation.values, explanation.rows, features)

    fairness = _fairness(task, test_df, y, scores, policy, cfg)
    ab = None
    if champion is not None:
        ra, rb = strategy_returns_aligned(bt, CHAMPION, CANDIDATE)
        ab = ab_test(
            true_classes(task, y), predicted_classes(task, champion, cfg.threshold),
            predicted_classes(task, scores, cfg.threshold), ra, rb, n_boot=cfg.n_boot, seed=cfg.seed,
            alpha=cfg.alpha, block_length=cfg.block_length,
        )

    baseline_metrics = {
        row["model"]: {k: v for k, v in row.items() if k != "model"}
        for row in comparison.filter(pl.col("model").is_in([MAJORITY, MOMENTUM])).to_dicts()
    }
    compliance = compliance_verdict(
        policy, metrics, baseline_metrics, bt, fairness, drift_share, task_type=task, ab=ab,
        model_version=model_version, skill=skill,
    )
    if skill is not None:
        figures.update(skill_figures(skill))
    report = EvaluationReport(
        task_type=task, model_version=model_version, n_rows=test_df.height, features=features,
        metrics=metrics, comparison=comparison, backtest=bt, explanation=explanation, fairness=fairness,
        ab=ab, compliance=compliance, plots={name: figure_png(fig) for name, fig in figures.items()},
        n_unlabelled_dropped=n_unlabelled, skill=skill,
    )
    _write_files(report, figures, Path(out_dir))
    return report

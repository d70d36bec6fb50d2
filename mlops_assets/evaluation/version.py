"""Evaluate one registered model version with its stores: the orchestration behind the Dagster
asset ``model_evaluation`` (plain Python; the asset is a short call into :func:`evaluate_model_version`).

Steps: load the candidate (and the production champion when it is another version); measure the
candidate's drift share; assess skill out of sample -- walk-forward folds retrained with the
version's own hyper-parameters, or, for a version that cannot be retrained (imported by URI, no
training config on its run), the single test split with the same interval statistics -- with the
number of trials the experiment ran and, when other versions scored the same dates, the PBO; run
the evaluation harness (:func:`~mlops_assets.evaluation.report.evaluate_version`); log metrics and
files to the version's MLflow run; record the compliance result, and the evaluation gate of a version
that has none (imported by URI: :func:`record_missing_evaluation_gate`); return the warehouse summary row.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mlops_assets.evaluation.assess import SINGLE_SPLIT, WALK_FORWARD, SkillAssessment, assess_skill
from mlops_assets.evaluation.report import EvaluationReport, evaluate_version
from mlops_assets.evaluation.walk_forward import TrainFn, walk_forward_predictions
from mlops_assets.models import tags as T
from mlops_assets.monitoring.shadow import shadow_evidence

NON_FEATURES = {"label", "fwd_return"}
PREDICTION_COLUMNS = ("symbol", "date", "label", "fwd_return", "ret_5d")


@dataclass
class VersionEvaluation:
    """What :func:`evaluate_model_version` produced (the asset turns it into output + metadata)."""

    name: str
    version: str
    task_type: str
    report: EvaluationReport
    summary: pl.DataFrame
    champion_version: str | None
    drift_share: float
    out_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)
    evaluation_gate: str | None = None  # the gate recorded by this evaluation (a version without one), else None
    shadow: dict | None = None  # live traffic: the version scored in shadow of the champion (monitoring.shadow)

    @property
    def skill(self) -> SkillAssessment | None:
        return self.report.skill


def _predict_fn(wrapper: Any):
    def predict(x: np.ndarray) -> np.ndarray:
        return wrapper.predict_array(np.asarray(x, dtype=np.float64))

    return predict


def _score_frame(frame: pl.DataFrame, features: list[str], predict) -> pl.DataFrame:
    frame = frame.filter(pl.col("label").is_not_null()).sort("date", "symbol")
    x = frame.select([pl.col(f).cast(pl.Float64) for f in features]).to_numpy()
    score = np.asarray(predict(x))
    keep = [c for c in PREDICTION_COLUMNS if c in frame.columns]
    return frame.select(keep).with_columns(
        pl.Series("score", score.tolist() if score.ndim == 2 else score.astype(np.float64)), pl.lit(0).alias("fold"))


def _candidate_returns(client: Any, settings: Any, mv: Any, test: pl.DataFrame, features: list[str], task: str,
                       skill_cfg: Any) -> tuple[pl.DataFrame | None, str]:
    """Daily strategy returns on the test split of every version trained on the same dataset
    (same fingerprint and features, at most ``pbo_max_candidates``, this one included), for the PBO."""
    from mlops_assets.evaluation.assess import strategy_daily_returns
    from mlops_assets.models.wrapper import load_wrapper

    limit = settings.evaluation.pbo_max_candidates
    fingerprint = mv.tags.get(T.TAG_DATASET_FINGERPRINT)
    if limit < 2 or not fingerprint:
        return None, "no candidates: PBO needs pbo_max_candidates >= 2 and a dataset fingerprint on the version"
    peers = [v for v in client.search_model_versions(f"name='{mv.name}'")
             if v.tags.get(T.TAG_DATASET_FINGERPRINT) == fingerprint
             and v.tags.get(T.TAG_FEATURES) == mv.tags.get(T.TAG_FEATURES)]
    peers = sorted(peers, key=lambda v: int(v.version), reverse=True)[:limit]
    if len(peers) < 2:
        return None, (f"only {len(peers)} version(s) trained on this dataset; PBO needs at least 2 candidates "
                      "with returns on the same dates")
    columns = {}
    for peer in peers:
        wrapper = load_wrapper(f"models:/{mv.name}/{peer.version}", client)
        scored = _score_frame(test, features, _predict_fn(wrapper))
        columns[f"v{peer.version}"] = strategy_daily_returns(scored, task, skill_cfg).rename({"ret": f"v{peer.version}"})
    frame = None
    for part in columns.values():
        frame = part if frame is None else frame.join(part, on="date", how="inner")
    return frame, (f"{len(peers)} versions trained on the same dataset, scored on its test split "
                   f"(out of sample for each of them)")


def assess_version_skill(client: Any, settings: Any, mv: Any, dataset: pl.DataFrame, features: list[str],
                         task: str, candidate_predict, *, train_fn: TrainFn | None = None) -> SkillAssessment:
    """Walk-forward when the version can be retrained (``train_fn``, else the Lightning trainer with
    the run's own config), single test split otherwise."""
    from mlops_assets.evaluation.configured import skill_config
    from mlops_assets.evaluation.trials import count_trials, lightning_fold_trainer, version_train_config

    e = settings.evaluation
    cfg = skill_config(settings)
    metric = {"binary": settings.model.gate_metric, "multiclass": "f1_macro", "regression": "rmse"}[task]
    trials = count_trials(client, settings.model.experiment_name)
    test = dataset.filter(pl.col("split") == "test")
    candidates, candidates_note = _candidate_returns(client, settings, mv, test, features, task, cfg)
    layout, note, mode = None, "", WALK_FORWARD
    if train_fn is None and e.walk_forward_folds > 0:
        config = version_train_config(client, mv.run_id, max_epochs=e.walk_forward_max_epochs)
        if config is not None:
            run = client.get_run(mv.run_id)
            train_fn = lightning_fold_trainer(client, features, config, tracking_uri=settings.mlflow_tracking_uri,
                                              parent_run_id=mv.run_id, experiment_id=run.info.experiment_id)
        else:
            note = ("This version cannot be retrained (imported by URI or no training config on its run): "
                    "single-split evaluation on its test split, with the same interval statistics.")
    if train_fn is not None and e.walk_forward_folds > 0:
        wf = walk_forward_predictions(
            dataset, features, train_fn, n_folds=e.walk_forward_folds, horizon=settings.features.horizon_days,
            embargo=e.walk_forward_embargo_days, initial_train_fraction=e.walk_forward_initial_train_fraction,
            validation_fraction=settings.features.validation_fraction)
        predictions, layout = wf.predictions, wf.fold_table()
        note = (f"Walk-forward: {len(wf.folds)} expanding-window folds retrained with the version's own "
                f"hyper-parameters, purged by the {settings.features.horizon_days}-day label horizon, "
                f"{e.walk_forward_embargo_days}-day embargo after each test fold; fold training took "
                f"{sum(wf.fold_seconds):.1f} s.")
    else:
        mode = SINGLE_SPLIT
        note = note or "Walk-forward is off (evaluation.walk_forward_folds = 0): single-split evaluation."
        predictions = _score_frame(test, features, candidate_predict)
    train_labels = dataset.filter(pl.col("split") == "train").get_column("label").drop_nulls().to_numpy()
    return assess_skill(task, predictions, metric=metric, trials=trials, mode=mode, note=note, config=cfg,
                        layout=layout, train_labels=train_labels, candidate_returns=candidates,
                        candidates_note=candidates_note)


GATE_METRIC_ALIASES = {"auc": "roc_auc"}


def record_missing_evaluation_gate(client: Any, governance: Any, settings: Any, version: str,
                                   report: EvaluationReport, *, actor: str) -> str | None:
    """Record the evaluation gate of a version that has none in the governance store, from the test
    metric this evaluation measured (``model.gate_metric``) against ``model.gate_threshold``.

    A trained version's gate is recorded at training (``trained_model``); an imported one (``mlops
    import-model``) never went through it, so without this its staging and approval are refused for
    want of a record. An existing record is never replaced. Returns the gate's reason, or ``None``
    when the version already had one. A metric the report lacks (another task type) fails the gate.
    """
    from mlops_assets.models.gates import GATE_EVALUATION, record_evaluation

    name = settings.model.name
    if GATE_EVALUATION in governance.gate_results(name, version):
        return None
    configured = settings.model.gate_metric
    key = next((k for k in (configured, GATE_METRIC_ALIASES.get(configured, configured)) if k in report.metrics),
               configured)
    _, reason = record_evaluation(client, governance, name, version, f"test_{key}", report.metrics.get(key),
                                  float(settings.model.gate_threshold), actor=actor)
    return reason


def evaluate_model_version(client: Any, governance: Any, settings: Any, dataset: pl.DataFrame, version: str, *,
                           dagster_run_id: str = "", actor: str = "dagster",
                           train_fn: TrainFn | None = None) -> VersionEvaluation:
    """Evaluate ``version`` of ``settings.model.name`` end to end (see the module docs).

    ``client`` is an ``MlflowClient`` on the tracking store and registry, ``governance`` the
    governance store (the compliance result is recorded there), ``dataset`` the training dataset
    (``split`` column). ``train_fn`` overrides the fold trainer (tests)."""
    import mlflow

    from mlops_assets.evaluation.configured import compliance_policy, evaluation_config
    from mlops_assets.models.gates import record_compliance
    from mlops_assets.models.registry import model_uri
    from mlops_assets.models.wrapper import load_wrapper
    from mlops_assets.monitoring.verdict import candidate_drift_share

    s = settings
    name = s.model.name
    started = time.perf_counter()
    mv = client.get_model_version(name, version)
    features = json.loads(mv.tags.get(T.TAG_FEATURES, "[]")) or [
        c for c, t in dataset.schema.items() if t.is_numeric() and c not in NON_FEATURES]
    task_type = mv.tags.get(T.TAG_TASK_TYPE, "binary")
    candidate = load_wrapper(f"models:/{name}/{version}", client)
    champion_fn = None
    champion_version = None
    try:
        prod = client.get_model_version_by_alias(name, s.model.production_alias)
        if str(prod.version) != str(version):
            champion = load_wrapper(model_uri(name, s.model.production_alias), client)
            champion_fn, champion_version = _predict_fn(champion), str(prod.version)
    except mlflow.exceptions.MlflowException:
        pass  # no production model yet
    train = dataset.filter(pl.col("split") == "train")
    test = dataset.filter(pl.col("split") == "test")
    drift_share = candidate_drift_share(train, dataset, features, s)
    t_skill = time.perf_counter()
    skill = assess_version_skill(client, s, mv, dataset, features, task_type, _predict_fn(candidate),
                                 train_fn=train_fn)
    skill_seconds = time.perf_counter() - t_skill
    policy, config = compliance_policy(s), evaluation_config(s)
    out_dir = s.reports_dir / "evaluation" / name / version
    report = evaluate_version(task_type, test, features, _predict_fn(candidate), champion_fn, train, policy,
                              drift_share, out_dir, config=config, model_version=version, skill=skill)
    metric_name, metric_value = report.headline()
    with mlflow.start_run(run_id=mv.run_id):
        mlflow.log_metrics({f"eval_{k}": v for k, v in report.summary_metrics().items()})
        mlflow.log_artifacts(str(out_dir), artifact_path=f"evaluation/v{version}")
    record_compliance(client, governance, name, version, report.compliance, actor=actor)
    gate = record_missing_evaluation_gate(client, governance, s, version, report, actor=actor)
    summary = pl.DataFrame([{
        "model_version": version, "model_name": name, "task_type": task_type,
        "champion_version": champion_version or "", "metric": metric_name, "value": float(metric_value),
        "compliance_passed": bool(report.passed), "candidate_drift_share": float(drift_share),
        "skill_mode": skill.mode, "metric_ci_low": skill.interval.low, "metric_ci_high": skill.interval.high,
        "deflated_sharpe": skill.dsr.dsr, "ic_mean": skill.ic.mean,
        "pbo": skill.pbo.pbo if skill.pbo is not None else None,
        "report_path": str(out_dir), "evaluated_at": dt.datetime.now(dt.UTC), "dagster_run_id": dagster_run_id,
    }], schema_overrides={"pbo": pl.Float64, "evaluated_at": pl.Datetime("us", "UTC")})
    shadow = shadow_evidence(settings.reports_dir, name, version)
    if shadow is not None:  # beside the report files, so the evaluation of record carries the live evidence
        (out_dir / "shadow.json").write_text(json.dumps(shadow, indent=1, default=str))
    return VersionEvaluation(name, version, task_type, report, summary, champion_version, float(drift_share),
                             out_dir, {"skill_assessment": round(skill_seconds, 2),
                                       "total": round(time.perf_counter() - started, 2)}, evaluation_gate=gate,
                             shadow=shadow)

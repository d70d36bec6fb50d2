"""Evaluation harness assets, partitioned by model version (dynamic partitions ``model_versions``).

``model_version_sensor`` adds a partition for every registered version (trained here or imported by
URI) and requests its evaluation; a person can evaluate or re-audit any version by materializing its partition.

- ``model_evaluation``: one report per version (metrics vs baselines and the champion, backtest with
  stress scenarios, SHAP, fairness audit, A/B vs champion, compliance) in the warehouse, on the
  version's MLflow run and in the UI. Its blocking check ``compliance_gate`` holds every policy.
- ``staging_model``: moves the ``staging`` alias once both gates passed (domain function re-checks).
"""

import json

import dagster as dg
import numpy as np
import polars as pl

from mlops_assets.defs.common import OWNER_ML, OWNER_RISK, markdown_table, png_markdown
from mlops_assets.defs.models import MODEL_VERSIONS, trained_model
from mlops_assets.defs.resources import WAREHOUSE_POOL, PlatformResource
from mlops_assets.models import tags as T

TRAINING_DATASET = dg.AssetKey("training_dataset")
NON_FEATURES = {"label", "fwd_return"}


def candidate_drift_share(train: pl.DataFrame, dataset: pl.DataFrame, features: list[str], window_days: int,
                          threshold: float) -> float:
    """Share of the candidate's features drifted between its training window and the latest window."""
    from mlops_assets.monitoring.drift import fast_drift

    dates = dataset["date"].unique().sort()
    current = dataset.filter(pl.col("date") >= dates[max(0, len(dates) - window_days)])
    return fast_drift(train.select(features), current.select(features), features,
                      threshold_share=threshold).share_drifted


@dg.asset(
    partitions_def=MODEL_VERSIONS,
    ins={"dataset": dg.AssetIn(TRAINING_DATASET)},
    deps=[trained_model],
    group_name="evaluation",
    owners=[OWNER_RISK],
    kinds={"pytorch", "mlflow", "shap"},
    pool=WAREHOUSE_POOL,
    description=(
        "The evaluation report of one model version (the partition): metrics on the test split against "
        "the majority-class and momentum baselines and the current production model; backtest replay "
        "(long/flat, costs) over the whole test period and stress windows; SHAP explanations; Fairlearn "
        "audit over the volatility regime; A/B significance vs the champion; and the compliance verdict. "
        "Files are logged to the version's MLflow run; a summary row is stored in the warehouse."
    ),
    check_specs=[dg.AssetCheckSpec("compliance_gate", asset="model_evaluation", blocking=True,
                                   description="Every compliance policy threshold holds for this version.")],
    metadata={"warehouse/partition_column": "model_version"},
)
def model_evaluation(context: dg.AssetExecutionContext, platform: PlatformResource, dataset: pl.DataFrame):
    import mlflow

    from mlops_assets.evaluation.configured import compliance_policy, evaluation_config
    from mlops_assets.evaluation.report import evaluate_version
    from mlops_assets.models.gates import record_compliance
    from mlops_assets.models.registry import model_uri
    from mlops_assets.models.wrapper import load_wrapper

    s = platform.settings
    version = context.partition_key
    name = s.model.name
    client = platform.mlflow_client()
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
    drift_share = candidate_drift_share(train, dataset, features, s.monitoring.drift_window_days,
                                        s.monitoring.drift_share_threshold)
    policy, config = compliance_policy(s), evaluation_config(s)
    out_dir = s.reports_dir / "evaluation" / name / version
    report = evaluate_version(task_type, test, features, _predict_fn(candidate), champion_fn, train, policy,
                              drift_share, out_dir, config=config, model_version=version)
    metric_name, metric_value = report.headline()
    with mlflow.start_run(run_id=mv.run_id):
        mlflow.log_metrics({f"eval_{k}": v for k, v in report.summary_metrics().items()})
        mlflow.log_artifacts(str(out_dir), artifact_path=f"evaluation/v{version}")
    record_compliance(client, platform.governance(), name, version, report.compliance, actor="dagster")
    summary = pl.DataFrame([{
        "model_version": version, "model_name": name, "task_type": task_type,
        "champion_version": champion_version or "", "metric": metric_name, "value": float(metric_value),
        "compliance_passed": bool(report.passed), "candidate_drift_share": float(drift_share),
        "report_path": str(out_dir), "evaluated_at": context.run.run_id,
    }])
    metadata = {
        "model_version": version,
        "champion_version": champion_version or "none",
        "headline": f"{metric_name} = {metric_value:.4f}",
        "compliance": "passed" if report.passed else "failed",
        "candidate_drift_share": float(drift_share),
        "report": dg.MetadataValue.path(str(out_dir / "evaluation_report.md")),
        "report_markdown": dg.MetadataValue.md(report.to_markdown()[:30_000]),
    }
    metadata["vs_baselines"] = markdown_table(report.comparison)
    for plot_name, png in list(report.plots.items())[:4]:
        metadata[f"plot_{plot_name}"] = png_markdown(png, plot_name)
    yield dg.Output(summary, metadata=metadata)
    compliance = report.compliance
    failed = [c for c in compliance.checks if not c.passed]
    yield dg.AssetCheckResult(
        check_name="compliance_gate", passed=bool(report.passed),
        description="all policies hold" if report.passed else "; ".join(c.message for c in failed),
        metadata={"checks": dg.MetadataValue.md(compliance.to_markdown()[:20_000]), "model_version": version},
    )


def _predict_fn(wrapper):
    def predict(x: np.ndarray) -> np.ndarray:
        return wrapper.predict_array(np.asarray(x, dtype=np.float64))

    return predict


@dg.asset(
    partitions_def=MODEL_VERSIONS,
    deps=[model_evaluation],
    group_name="evaluation",
    owners=[OWNER_ML],
    kinds={"mlflow"},
    description=(
        "Moves the `staging` alias to this version once its evaluation gate and compliance gate passed "
        "(blocking checks), through the domain function that re-checks both from the version's tags, and "
        "puts the version in review for a person's approval."
    ),
)
def staging_model(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
    from mlops_assets.models.gates import gate_policy
    from mlops_assets.models.promotion import PromotionRefused, set_gate_alias

    s = platform.settings
    version = context.partition_key
    try:
        deployment = set_gate_alias(
            platform.mlflow_client(), platform.governance(), s.model.name, version, alias=s.model.staging_alias,
            actor="dagster", compliance_required=s.evaluation.compliance_required,
            production_alias=s.model.production_alias, policy=gate_policy(s))
    except PromotionRefused as exc:
        raise dg.Failure(description=f"staging not moved: {exc}") from None
    return dg.MaterializeResult(metadata={
        "alias": s.model.staging_alias, "version": version,
        "previous_version": str(deployment.previous_version), "next_step":
        f"mlops approve model {s.model.name} {version} --comment '...'  (a reviewer other than the registerer)",
    })


evaluate_model_job = dg.define_asset_job(
    "evaluate_model_job", selection=dg.AssetSelection.assets(model_evaluation, staging_model),
    partitions_def=MODEL_VERSIONS,
    description="Evaluate one model version (the partition) and move staging if it passes every gate.",
)


@dg.sensor(job=evaluate_model_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every registered version of the model (trained here or imported by URI) gets a "
                       "partition of model_versions and one evaluation run.")
def model_version_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
    s = platform.settings
    known = set(context.instance.get_dynamic_partitions(MODEL_VERSIONS.name))
    try:
        versions = platform.mlflow_client().search_model_versions(f"name='{s.model.name}'")
    except Exception as exc:  # registry not reachable or model not registered yet
        return dg.SkipReason(f"registry not readable: {exc}")
    new = sorted({str(v.version) for v in versions} - known, key=int)
    if not new:
        return dg.SkipReason("no new model version")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"evaluate-{v}", partition_key=v) for v in new],
        dynamic_partitions_requests=[MODEL_VERSIONS.build_add_request(new)],
    )


defs = dg.Definitions(assets=[model_evaluation, staging_model], jobs=[evaluate_model_job],
                      sensors=[model_version_sensor])

"""Model lifecycle assets: training tracked in MLflow, the evaluation gate, and production by approval.

- ``trained_model``: trains the Lightning MLP on the latest training dataset, logs the run and
  registers a NEW version every time (so every version's evaluation is on record), alias
  ``challenger``. Its blocking check ``evaluation_gate`` tags the version passed or rejected.
  Training is started by people (materialize), the retraining job (drift sensor) or the retraining
  schedule (off by default) — never by the daily data refresh.
- ``production_model``: the deployment record, downstream of ``staging_model`` (every partition: any
  staged version may be approved). The approval sensor launches ``promote_model_job`` when a person
  approves a version (CLI or management API); the asset calls the one domain function that moves the
  alias after re-checking every gate, and its metadata names the approval and the deployment. It has
  no automation condition, so a new staging never starts it.
"""

import dagster as dg
import polars as pl

from mlops_assets.defs.common import OWNER_ML, OWNER_RISK, markdown_table, png_markdown
from mlops_assets.defs.resources import PlatformResource

TRAINING_DATASET = dg.AssetKey("training_dataset")
STAGING_MODEL = dg.AssetKey("staging_model")  # defined in defs/evaluation.py, which imports this module
MODEL_VERSIONS = dg.DynamicPartitionsDefinition(name="model_versions")


class TrainingConfig(dg.Config):
    """Hyper-parameters; unset values come from the settings (config.yaml / environment)."""

    hidden_sizes: list[int] | None = None
    max_epochs: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    seed: int | None = None
    tuning_trials: int | None = None
    registered_by: str = "dagster"


def model_features(df: pl.DataFrame) -> list[str]:
    """Numeric feature columns of a training dataset, in table order (keys, label and target excluded)."""
    excluded = {"label", "fwd_return"}
    return [c for c, t in df.schema.items() if t.is_numeric() and c not in excluded]


METRIC_ALIASES = {"roc_auc": "auc", "auc": "roc_auc"}


def gate_metric_name(configured: str, metrics: dict[str, float]) -> str:
    """The logged test metric the gate reads (``roc_auc`` is logged by the trainer as ``test_auc``)."""
    for name in (configured, METRIC_ALIASES.get(configured, configured)):
        if f"test_{name}" in metrics:
            return f"test_{name}"
    return f"test_{configured}"


def _loss_curve_png(curve: list[dict[str, float]]) -> bytes | None:
    from mlops_assets.evaluation.plots import line_chart_png

    epochs = [row.get("epoch", i) for i, row in enumerate(curve)]
    series = {key: (epochs, [row.get(key) for row in curve]) for key in ("train_loss", "val_loss")
              if any(row.get(key) is not None for row in curve)}
    return line_chart_png(series, xlabel="epoch", ylabel="loss", width=4.5, height=2.6) if series else None


@dg.asset(
    ins={"dataset": dg.AssetIn(TRAINING_DATASET)},
    group_name="models",
    owners=[OWNER_ML],
    kinds={"pytorch", "mlflow"},
    description=(
        "A PyTorch Lightning MLP predicting next-period direction, trained on the training dataset's "
        "train/validation splits and tested on its test split. Each materialization is one MLflow run "
        "and a new registered model version (alias `challenger`) with lineage tags: feature view "
        "versions, dataset fingerprint, Dagster run id, registered_by."
    ),
    check_specs=[dg.AssetCheckSpec("evaluation_gate", asset="trained_model", blocking=True,
                                   description="The configured test metric passes its threshold; "
                                               "otherwise the version is tagged rejected.")],
)
def trained_model(context: dg.AssetExecutionContext, config: TrainingConfig, platform: PlatformResource,
                  dataset: pl.DataFrame):
    from mlops_assets.features.views import FEATURE_VIEWS
    from mlops_assets.models.lightning import TrainConfig
    from mlops_assets.models.registration import Lineage, apply_gate, train_and_register

    s = platform.settings
    features = model_features(dataset)
    train_config = TrainConfig(
        hidden_sizes=tuple(config.hidden_sizes or s.model.hidden_sizes),
        max_epochs=config.max_epochs or s.model.max_epochs,
        lr=config.learning_rate or s.model.learning_rate,
        batch_size=config.batch_size or s.model.batch_size,
        seed=s.model.seed if config.seed is None else config.seed,
    )
    trials = s.model.tuning_trials if config.tuning_trials is None else config.tuning_trials
    if trials:
        from mlops_assets.models.tuning import tune

        train_config = tune(dataset, features, train_config, n_trials=trials, tracking_uri=s.mlflow_tracking_uri,
                            experiment_name=f"{s.model.experiment_name}-tuning")
    lineage = Lineage(registered_by=config.registered_by, dagster_run_id=context.run.run_id,
                      feature_views={v.name: v.version for v in FEATURE_VIEWS})
    registered = train_and_register(
        dataset, features, train_config, tracking_uri=s.mlflow_tracking_uri,
        experiment_name=s.model.experiment_name, model_name=s.model.name, lineage=lineage,
        # embedded default: artifacts under MLOPS_HOME; a tracking server keeps its own artifact store
        artifact_location=str(s.artifacts_dir) if s.mlflow_tracking_uri.startswith("sqlite") else None,
        challenger_alias=s.model.challenger_alias,
        run_name=f"dagster-{context.run.run_id[:8]}",
    )
    metrics = {k: float(v) for k, v in registered.metrics.items()}
    gate_metric = gate_metric_name(s.model.gate_metric, metrics)
    client = platform.mlflow_client()
    gate = apply_gate(client, s.model.name, registered.version, gate_metric, metrics.get(gate_metric),
                      s.model.gate_threshold, store=platform.governance())
    run_url = f"{s.mlflow_ui_url}/#/experiments/{registered.experiment_id}/runs/{registered.run_id}"
    metadata = {
        "model_name": s.model.name,
        "model_version": registered.version,
        "model_uri": registered.model_uri,
        "mlflow_run": dg.MetadataValue.url(run_url),
        "mlflow_run_id": registered.run_id,
        "metrics": markdown_table(pl.DataFrame({"metric": list(metrics), "value": list(metrics.values())})),
        "features": dg.MetadataValue.json(features),
        "hyperparameters": dg.MetadataValue.json(train_config.model_dump(mode="json")),
        "best_epoch": registered.best_epoch if registered.best_epoch is not None else -1,
        "training_seconds": round(registered.duration_s or 0.0, 2),
        "gate": gate.reason,
    }
    png = _loss_curve_png(registered.loss_curve)
    if png:
        metadata["loss_curve"] = png_markdown(png, "loss curve")
    yield dg.MaterializeResult(metadata=metadata)
    yield dg.AssetCheckResult(
        check_name="evaluation_gate", passed=gate.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=("passed: " if gate.passed else "failed, version tagged rejected: ") + gate.reason,
        metadata={"model_version": registered.version, "metric": gate_metric, "value": gate.value,
                  "threshold": gate.threshold},
    )


class PromotionConfig(dg.Config):
    model_name: str
    version: str
    approved_by: str
    reason: str = "approved for production"
    decision_id: int | None = None  # the approval in the governance store (set by the approval sensor)


def approval_metadata(decision, deployment) -> dict[str, object]:
    """What a person reads on the production materialization: the approval that allowed the move (decision
    id, approver, comment, waivers) and the deployment that moved the alias."""
    approval = (deployment.checklist or {}).get("approval") or {}
    waivers = dict((decision.waivers if decision is not None else None) or {})
    return {
        "approval_decision_id": decision.id if decision is not None else -1,
        "approved_by": decision.actor if decision is not None else "unknown",
        "approval_comment": (decision.comment or "") if decision is not None else "",
        "approval_state": decision.state.value if decision is not None else "none",
        "waivers": dg.MetadataValue.json(waivers),
        "registered_by": str(approval.get("registered_by") or "unknown"),
        "deployment_id": deployment.id,
        "deployment_kind": deployment.kind,
        "deployed_by": deployment.actor,
        "deployed_at": deployment.ts.isoformat(),
    }


@dg.asset(
    # every staged version (any partition of staging_model) is a candidate; the approval picks one.
    # No automation condition: only the approval sensor launches this asset, never a data update.
    deps=[dg.AssetDep(STAGING_MODEL, partition_mapping=dg.AllPartitionMapping())],
    group_name="deployment",
    owners=[OWNER_RISK],
    kinds={"mlflow"},
    description=(
        "The production deployment: each materialization moves the production alias to an approved, "
        "staged version through the one domain function that re-checks the gates (evaluation, compliance, "
        "a reviewer other than the registerer) and records the deployment in the governance store. Its "
        "metadata names the approval (decision id, approver, comment, waivers) and the deployment."
    ),
)
def production_model(context: dg.AssetExecutionContext, config: PromotionConfig,
                     platform: PlatformResource) -> dg.MaterializeResult:
    from mlops_assets.models.gates import gate_policy
    from mlops_assets.models.promotion import promote

    s = platform.settings
    store = platform.governance()
    deployment = promote(platform.mlflow_client(), store, config.model_name, config.version,
                         alias=s.model.production_alias, actor=config.approved_by, reason=config.reason,
                         compliance_required=s.evaluation.compliance_required,
                         production_alias=s.model.production_alias, policy=gate_policy(s))
    decision_id = ((deployment.checklist or {}).get("approval") or {}).get("decision_id", config.decision_id)
    decision = next((d for d in store.decision_history("model", config.model_name, config.version)
                     if d.id == decision_id), None)
    context.log.info(f"{config.model_name} v{config.version} is now {s.model.production_alias!r}")
    return dg.MaterializeResult(metadata={
        "model_name": config.model_name,
        "version": config.version,
        "alias": s.model.production_alias,
        "previous_version": str(deployment.previous_version),
        **approval_metadata(decision, deployment),
        "checklist": dg.MetadataValue.json(deployment.checklist),
    })


promote_model_job = dg.define_asset_job(
    "promote_model_job", selection=dg.AssetSelection.assets(production_model),
    description="Move the production alias to an approved version (launched by the approval sensor).",
)

retrain_job = dg.define_asset_job(
    "retrain_job", selection=dg.AssetSelection.assets(trained_model),
    description="Train and register a new version from the latest training dataset (drift sensor, schedule).",
)


@dg.sensor(job=promote_model_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Launches the promotion job for each approval recorded in the governance store.")
def approval_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
    store = platform.governance()
    requests = []
    for decision in store.pending_promotions("model"):
        requests.append(dg.RunRequest(
            run_key=f"approval-{decision.id}",
            run_config=dg.RunConfig(ops={"production_model": PromotionConfig(
                model_name=decision.name, version=str(decision.version), approved_by=decision.actor,
                reason=decision.comment or "approved for production", decision_id=decision.id)}),
            tags={"model": decision.name, "version": str(decision.version), "approved_by": decision.actor,
                  "decision_id": str(decision.id)},
        ))
    if not requests:
        return dg.SkipReason("no approved version waiting for promotion")
    return requests


def _retrain_schedule(enabled: bool, cron: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="retraining_schedule", job=retrain_job, cron_schedule=cron, execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if enabled else dg.DefaultScheduleStatus.STOPPED,
        description="Periodic retraining from the latest dataset (off unless model.retrain_schedule_enabled).",
    )


def build_defs(settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[trained_model, production_model],
        jobs=[promote_model_job, retrain_job],
        sensors=[approval_sensor],
        schedules=[_retrain_schedule(settings.model.retrain_schedule_enabled, settings.model.retrain_cron)],
    )


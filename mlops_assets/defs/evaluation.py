"""Evaluation harness assets, partitioned by model version (dynamic partitions ``model_versions``).

``model_version_sensor`` adds a partition for every registered version (trained here or imported by
URI) and requests its evaluation; a person can evaluate or re-audit any version by materializing its partition.

- ``model_evaluation``: one report per version (metrics vs baselines and the champion, skill or luck
  out of sample -- walk-forward interval, IC, Deflated Sharpe, PBO --, backtest with stress scenarios,
  SHAP, fairness audit, A/B vs champion, compliance) in the warehouse, on the version's MLflow run and
  in the UI; the body is one call to ``evaluation.version.evaluate_model_version``. Its blocking
  check ``compliance_gate`` holds every policy.
- ``staging_model``: moves the ``staging`` alias once both gates passed (domain function re-checks).
"""

import dagster as dg
import numpy as np
import polars as pl

from mlops_assets.defs.common import OWNER_ML, OWNER_RISK, markdown_table, png_markdown
from mlops_assets.defs.models import MODEL_VERSIONS, trained_model
from mlops_assets.defs.resources import WAREHOUSE_POOL, PlatformResource

TRAINING_DATASET = dg.AssetKey("training_dataset")


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
        "audit over the volatility regime; A/B significance vs the champion; skill or luck out of sample "
        "(purged walk-forward folds retrained with the version's hyper-parameters: bootstrap interval of the "
        "metric, information coefficient, Deflated Sharpe Ratio under the experiment's trial count, PBO); and "
        "the compliance verdict. Files are logged to the version's MLflow run; a summary row is stored in the warehouse."
    ),
    check_specs=[dg.AssetCheckSpec("compliance_gate", asset="model_evaluation", blocking=True,
                                   description="Every compliance policy threshold holds for this version.")],
    metadata={"warehouse/partition_column": "model_version"},
)
def model_evaluation(context: dg.AssetExecutionContext, platform: PlatformResource, dataset: pl.DataFrame):
    from mlops_assets.evaluation.version import evaluate_model_version

    result = evaluate_model_version(platform.mlflow_client(), platform.governance(), platform.settings, dataset,
                                    context.partition_key, dagster_run_id=context.run.run_id)
    yield dg.Output(result.summary, metadata=evaluation_metadata(result))
    compliance = result.report.compliance
    failed = [c for c in compliance.checks if not c.passed]
    yield dg.AssetCheckResult(
        check_name="compliance_gate", passed=bool(compliance.passed),
        description="all policies hold" if compliance.passed else "; ".join(c.message for c in failed),
        metadata={"checks": dg.MetadataValue.md(compliance.to_markdown()[:20_000]),
                  "model_version": result.version},
    )


def evaluation_metadata(result) -> dict[str, object]:
    """What a person reads in the UI: verdict, headline, skill (interval, IC, DSR, PBO), tables, plots."""
    report, skill = result.report, result.skill
    metric_name, metric_value = report.headline()
    metadata = {
        "model_version": result.version,
        "champion_version": result.champion_version or "none",
        "headline": f"{metric_name} = {metric_value:.4f}",
        "compliance": "passed" if report.passed else "failed",
        "candidate_drift_share": result.drift_share,
        "evaluation_gate": (f"recorded by this evaluation: {result.evaluation_gate}" if result.evaluation_gate
                            else "already on record (at training, or by an earlier evaluation)"),
        "report": dg.MetadataValue.path(str(result.out_dir / "evaluation_report.md")),
        "report_markdown": dg.MetadataValue.md(report.to_markdown()[:30_000]),
        "vs_baselines": markdown_table(report.comparison),
        "evaluation_seconds": dg.MetadataValue.json(result.seconds),
        "shadow_on_live_traffic": dg.MetadataValue.json(result.shadow or {"note": "never scored in shadow"}),
    }
    if skill is not None:
        iv, dsr = skill.interval, skill.dsr
        metadata.update({
            "skill_mode": skill.mode,
            "skill_note": skill.note,
            f"{iv.metric}_interval": f"{iv.value:.4f} [{iv.low:.4f}, {iv.high:.4f}] ({iv.level:.0%}, {skill.mode})",
            "deflated_sharpe": float(dsr.dsr) if np.isfinite(dsr.dsr) else -1.0,
            "sharpe_annualised": float(dsr.sharpe_annualised) if np.isfinite(dsr.sharpe_annualised) else 0.0,
            "n_trials": dsr.n_trials,
            "ic": f"{skill.ic.mean:.4f} (t {skill.ic.t_stat:.2f}, ICIR {skill.ic.icir:.3f}, {skill.ic.method})",
            "pbo": f"{skill.pbo.pbo:.3f}" if skill.pbo is not None else f"not computed: {skill.pbo_note}",
            "skill_by_fold": markdown_table(skill.per_fold),
        })
    plots = dict(list(report.plots.items())[:4])
    if "walk_forward" in report.plots:
        plots["walk_forward"] = report.plots["walk_forward"]
    for plot_name, png in plots.items():
        metadata[f"plot_{plot_name}"] = png_markdown(png, plot_name)
    return metadata


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
        f"mlops models approve {s.model.name} {version} --comment '...'  (a reviewer other than the registerer)",
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

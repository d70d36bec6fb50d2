"""Platform assets: LLM usage and the project's success measures, refreshed daily.

- ``llm_usage_summary``: the inference app's LLM usage log (``$MLOPS_HOME/serving/llm``) summarised
  per template version — calls, success rate, latency p50/p95/p99, tokens, flagged answers — as a
  warehouse table. Downstream of ``llm_chain``: the log is what the served chain wrote.
- lineage of the KPIs: ``platform_kpis`` depends on what it measures — the feature catalog, the
  evaluation reports (``model_evaluation``), the prompt evaluations, the production model and the
  LLM usage.

:func:`demo_llm_chain_and_kpis` is the demo's last step: the chain when an LLM endpoint is configured
and its prompt approved (else what is missing), then one point of every KPI.
- ``platform_kpis``: the KPIs (shared features in use, time to first use, metadata completeness,
  retraining cadence, evaluations and explanations per release, prompt approval lead time, policy
  violations caught, LLM service figures) appended to the warehouse table ``platform_kpis_history``,
  so the trend builds up; the current values and a small trend plot are in the metadata.
"""

import datetime as dt

import dagster as dg
import polars as pl

from mlops_assets.defs.common import OWNER_LLM, OWNER_RISK, markdown_table, png_markdown, table_schema
from mlops_assets.defs.prompts import llm_chain, prompt_evaluations
from mlops_assets.defs.resources import WAREHOUSE_POOL, PlatformResource

FEATURE_CATALOG = dg.AssetKey("feature_catalog")
MODEL_EVALUATION = dg.AssetKey("model_evaluation")
PRODUCTION_MODEL = dg.AssetKey("production_model")
KPI_HISTORY_TABLE = "platform_kpis_history"
TREND_KPIS = ("share_versions_complete_metadata", "share_versions_using_shared_features",
              "retraining_cadence_kept", "share_releases_with_explanations", "llm_success_rate")


@dg.asset(
    deps=[llm_chain],
    group_name="platform",
    owners=[OWNER_LLM],
    kinds={"polars", "duckdb"},
    pool=WAREHOUSE_POOL,
    description=(
        "LLM usage per prompt template version from the inference app's usage log (one row per /invoke "
        "call, Parquet segments under $MLOPS_HOME/serving/llm): calls, success rate, latency p50/p95/p99, "
        "tokens in and out, flagged and blocked answers, errors."
    ),
)
def llm_usage_summary(context: dg.AssetExecutionContext,
                      platform: PlatformResource) -> dg.Output[pl.DataFrame]:
    from mlops_assets.prompts.usage import read_usage, summarise_usage, usage_log_dir

    usage = read_usage(usage_log_dir(platform.settings.serving_log_dir))
    summary = summarise_usage(usage)
    return dg.Output(summary, metadata={
        "dagster/row_count": summary.height,
        "dagster/column_schema": table_schema(summary),
        "calls": usage.height,
        "summary": markdown_table(summary.drop("first_call", "last_call")),
    })


def retrain_period_days(cron: str) -> float:
    """Days between two ticks of the retraining cron (the smallest interval), 7 if it cannot be read."""
    try:
        from dagster._utils.schedules import get_smallest_cron_interval

        return get_smallest_cron_interval(cron).total_seconds() / 86400.0
    except Exception:  # a private helper of dagster: fall back to the weekly default rather than fail
        return 7.0


def _trend_png(history: pl.DataFrame) -> bytes | None:
    from mlops_assets.evaluation.plots import line_chart_png

    history = history.filter(pl.col("kpi").is_in(TREND_KPIS) & pl.col("value").is_not_null()).sort("as_of")
    if history.is_empty():
        return None
    series = {str(kpi): (rows["as_of"].to_list(), rows["value"].to_list())
              for (kpi,), rows in history.group_by("kpi", maintain_order=True)}
    return line_chart_png(series, xlabel="date", ylabel="share", ylim=(-0.05, 1.05))


@dg.asset(
    deps=[llm_usage_summary, FEATURE_CATALOG, MODEL_EVALUATION, prompt_evaluations, PRODUCTION_MODEL],
    group_name="platform",
    owners=[OWNER_RISK],
    kinds={"mlflow", "duckdb", "polars"},
    pool=WAREHOUSE_POOL,
    description=(
        "The platform's success measures, computed from the MLflow registry and runs, the feature catalog, "
        "the governance store and the LLM usage summary, and appended to `platform_kpis_history` "
        "(kpi, value, unit, as_of, detail) so each materialization adds a point to the trend; the history is "
        "exported as a read-model that the management API serves (GET /api/v1/platform/kpis)."
    ),
)
def platform_kpis(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
    from mlops_assets.reporting.kpis import platform_kpis as compute

    s = platform.settings
    wh = platform.warehouse
    catalog = wh.read_table("feature_catalog") if wh.has_table("feature_catalog") else None
    usage = wh.read_table("llm_usage_summary") if wh.has_table("llm_usage_summary") else None
    kpis = compute(s, catalog, usage, retrain_period_days=retrain_period_days(s.model.retrain_cron),
                   as_of=dt.datetime.now(dt.UTC))
    wh.append_rows(KPI_HISTORY_TABLE, kpis)
    history = wh.read_table(KPI_HISTORY_TABLE)
    from mlops_assets.features.readmodels import export_read_model
    from mlops_assets.reporting.kpis import HISTORY_READ_MODEL

    export_read_model(history, s.readmodels_dir, HISTORY_READ_MODEL)  # what the management API serves
    metadata = {
        "kpis": markdown_table(kpis.select("kpi", "value", "unit", "detail"), max_rows=40),
        "values": dg.MetadataValue.json({r["kpi"]: r["value"] for r in kpis.iter_rows(named=True)}),
        "history_table": dg.MetadataValue.text(KPI_HISTORY_TABLE),
        "history_points": history["as_of"].n_unique(),
        "dagster/row_count": kpis.height,
    }
    png = _trend_png(history)
    if png:
        metadata["trend"] = png_markdown(png, "KPI trend")
    return dg.MaterializeResult(metadata=metadata)


platform_kpis_job = dg.define_asset_job(
    "platform_kpis_job", selection=dg.AssetSelection.assets(llm_usage_summary, platform_kpis),
    description="Summarise LLM usage and append the platform KPIs to their history.",
)

platform_schedule = dg.ScheduleDefinition(
    name="platform_kpis_schedule", job=platform_kpis_job, cron_schedule="30 5 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 05:30 UTC: LLM usage summary and one new point of every platform KPI.",
)

defs = dg.Definitions(assets=[llm_usage_summary, platform_kpis], jobs=[platform_kpis_job],
                      schedules=[platform_schedule])


def demo_llm_chain_and_kpis(defs: dg.Definitions, instance: dg.DagsterInstance, echo=print,
                            template_id: str | None = None) -> int:
    """The demo's last step: deploy the LLM chain (``llm_chain_job``) when an LLM endpoint is configured
    and its prompt version is approved, else say what is missing; then ``platform_kpis_job``.

    Returns 1 when one of these runs failed (the platform's own failure), 0 otherwise; a prompt that
    is not approved yet is not a failure (approval is a person's act).
    """
    from mlops_assets.llm.chain import LLMModelConfig
    from mlops_assets.llm.registry import chain_prompt_state
    from mlops_assets.settings import get_settings

    s, failed = get_settings(), 0
    template_id = template_id or LLMModelConfig().prompt_id
    echo("")
    echo("== LLM chain and platform KPIs ==")
    if s.llm.api_key is None:
        echo(f"LLM chain: not deployed: OPENAI_API_KEY (setting llm.api_key) is not set. Set it (and "
             f"OPENAI_BASE_URL for a local OpenAI-compatible server), approve the prompt, then run "
             f"`mlops prompts deploy-chain {template_id}` (docs/api.md, POST /invoke)")
    else:
        version, state = chain_prompt_state(s, template_id)
        if state != "APPROVED":
            echo(f"LLM chain: waits for approval: prompt {template_id} {version} is {state}; a reviewer "
                 f"other than its owner and submitter runs `mlops prompts approve {template_id} {version} "
                 f"--comment '...'`, then `mlops prompts deploy-chain {template_id}` (or `make demo` again)")
        else:
            result = defs.resolve_job_def("llm_chain_job").execute_in_process(
                instance=instance, raise_on_error=False,
                run_config={"ops": {"llm_chain": {"config": {"template_id": template_id}}}})
            meta = _materialized(result, "llm_chain")
            if result.success:
                echo(f"LLM chain: {meta['model_name']}@{meta['alias']} serves chain version "
                     f"{meta['chain_version']} with prompt {meta['prompt']}; POST /invoke after `make serve`")
            else:
                echo("LLM chain: llm_chain_job failed; see the run in the Dagster UI (make dev)")
                failed = 1
    result = defs.resolve_job_def("platform_kpis_job").execute_in_process(instance=instance,
                                                                        raise_on_error=False)
    if result.success:
        values = _materialized(result, "platform_kpis")["values"]
        echo(f"platform KPIs: {len(values)} measures appended to {KPI_HISTORY_TABLE}: "
             + ", ".join(f"{k}={v}" for k, v in list(values.items())[:4]) + ", ...")
    else:
        echo("platform KPIs: platform_kpis_job failed; see the run in the Dagster UI (make dev)")
        failed = 1
    return failed


def _materialized(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    return {}

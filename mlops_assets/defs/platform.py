"""Platform assets: LLM usage and the project's success measures, refreshed daily.

- ``llm_usage_summary``: the inference app's LLM usage log (``$MLOPS_HOME/serving/llm``) summarised
  per template version — calls, success rate, latency p50/p95/p99, tokens, flagged answers — as a
  warehouse table.
- ``platform_kpis``: the KPIs (shared features in use, time to first use, metadata completeness,
  retraining cadence, evaluations and explanations per release, prompt approval lead time, policy
  violations caught, LLM service figures) appended to the warehouse table ``platform_kpis_history``,
  so the trend builds up; the current values and a small trend plot are in the metadata.
"""

import datetime as dt

import dagster as dg
import polars as pl

from mlops_assets.defs.common import OWNER_LLM, OWNER_RISK, markdown_table, png_markdown, table_schema
from mlops_assets.defs.resources import WAREHOUSE_POOL, PlatformResource

FEATURE_CATALOG = dg.AssetKey("feature_catalog")
KPI_HISTORY_TABLE = "platform_kpis_history"
TREND_KPIS = ("share_versions_complete_metadata", "share_versions_using_shared_features",
              "retraining_cadence_kept", "share_releases_with_explanations", "llm_success_rate")


@dg.asset(
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
    from mlops_assets.governance.usage import read_usage, summarise_usage, usage_log_dir

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
    deps=[llm_usage_summary, FEATURE_CATALOG],
    group_name="platform",
    owners=[OWNER_RISK],
    kinds={"mlflow", "duckdb", "polars"},
    pool=WAREHOUSE_POOL,
    description=(
        "The platform's success measures, computed from the MLflow registry and runs, the feature catalog, "
        "the governance store and the LLM usage summary, and appended to `platform_kpis_history` "
        "(kpi, value, unit, as_of, detail) so each materialization adds a point to the trend."
    ),
)
def platform_kpis(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
    from mlops_assets.governance.kpis import platform_kpis as compute

    s = platform.settings
    wh = platform.warehouse
    catalog = wh.read_table("feature_catalog") if wh.has_table("feature_catalog") else None
    usage = wh.read_table("llm_usage_summary") if wh.has_table("llm_usage_summary") else None
    kpis = compute(s, catalog, usage, retrain_period_days=retrain_period_days(s.model.retrain_cron),
                   as_of=dt.datetime.now(dt.UTC))
    wh.append_rows(KPI_HISTORY_TABLE, kpis)
    history = wh.read_table(KPI_HISTORY_TABLE)
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

"""Live performance: served predictions joined with their realised outcomes, one partition per day of
serving, and the sensor that turns a significant fall below a version's own evaluation into a
performance episode (an alert and one retraining run). The logic is in ``monitoring/``:
``live_outcomes.py`` (the join), ``live_metrics.py`` (the metrics) and ``performance.py`` (the test and
the episode).
"""

import datetime as dt
import math

import dagster as dg
import polars as pl

from mlops_assets.defs.common import OWNER_ML, markdown_table, png_markdown
from mlops_assets.defs.models import retrain_job
from mlops_assets.defs.resources import PARTITION_COLUMN_KEY, WAREHOUSE_POOL, PlatformResource

LIVE_DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="UTC")
SERVED, MARKET = dg.AssetKey("served_predictions"), dg.AssetKey("raw_market_data")
OUTCOMES_TABLE = "live_outcomes"
LOG_COLUMNS = ("request_id", "row", "ts", "entity", "model_name", "model_version", "alias", "variant",
               "prediction", "probability", "latency_ms")
REGIME_HISTORY_DAYS = 400  # calendar days of prices before the day: the regime label's 139-row look-back


def performance_policy(settings):
    from mlops_assets.monitoring.performance import PerformancePolicy

    m = settings.monitoring
    return PerformancePolicy(alpha=m.performance_alpha, power=m.performance_power,
                             min_degradation=m.performance_min_degradation,
                             window_days=m.performance_window_days, cooldown_hours=m.cooldown_hours)


def label_lag_days(settings) -> int:
    """Calendar days after which a day's outcomes are known: the horizon in trading days, plus weekends."""
    configured = settings.monitoring.performance_label_lag_days
    return configured or math.ceil(settings.features.horizon_days * 7 / 5) + 4


def _served_rows(platform: PlatformResource, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    wh = platform.warehouse
    if not wh.has_table("served_predictions"):
        return pl.DataFrame()
    present = [c for c in LOG_COLUMNS if c in wh.table_schema("served_predictions")]
    cols = ", ".join(f'"{c}"' for c in present)
    return wh.query(f"SELECT {cols} FROM served_predictions WHERE ts >= ? AND ts < ?", [start, end])


def _market_rows(platform: PlatformResource, symbols: list[str], since: dt.date) -> pl.DataFrame:
    if not symbols:
        return pl.DataFrame()
    marks = ", ".join("?" for _ in symbols)
    return platform.warehouse.query(
        f"SELECT * FROM raw_market_data WHERE symbol IN ({marks}) AND date >= ?", [*symbols, since])


def _window(platform: PlatformResource, first: dt.date, last: dt.date, labelled: bool = True) -> pl.DataFrame:
    wh = platform.warehouse
    if not wh.has_table(OUTCOMES_TABLE):
        return pl.DataFrame()
    status = " AND label_status = 'labelled'" if labelled else ""
    return wh.query(f"SELECT * FROM {OUTCOMES_TABLE} WHERE date >= ? AND date <= ?{status}", [first, last])


@dg.asset(
    partitions_def=LIVE_DAYS,
    deps=[SERVED, MARKET],
    group_name="monitoring",
    owners=[OWNER_ML],
    kinds={"polars", "duckdb"},
    pool=WAREHOUSE_POOL,
    metadata={PARTITION_COLUMN_KEY: "date"},
    description=(
        "Live performance of each served model version on one day of serving (the partition, UTC): every "
        "prediction of the log joined with the training label (next-period direction over "
        "features.horizon_days, from raw_market_data) once its horizon has passed (never before: such rows "
        "stay pending), per version ROC AUC, accuracy, Brier score, IC against the realised return and hit "
        "rate by volatility regime; the joined rows in warehouse table live_outcomes. Each version's live "
        "metric over the trailing window is tested one-sided against the value its evaluation gate recorded "
        "(level, power and minimum detectable fall from monitoring.performance_*); the "
        "live_performance_sensor turns a significant fall into a performance episode. Champion against shadow "
        "(serving.shadow_alias, scored by the prediction-log writer on the same requests) over the trailing "
        "window: agreement, McNemar's test on a classifier's labelled pairs and the paired date-block "
        "bootstrap of IC(shadow) - IC(champion), also served at /api/v1/ml/lifecycle/models/{name}/shadow."
    ),
)
def live_performance(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.Output[pl.DataFrame]:
    from mlops_assets.monitoring import live_metrics as M
    from mlops_assets.monitoring import live_outcomes as O
    from mlops_assets.monitoring import performance as P

    s, day = platform.settings, dt.date.fromisoformat(context.partition_key)
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    now = dt.datetime.now(dt.UTC)
    served = _served_rows(platform, start, start + dt.timedelta(days=1))
    symbols = sorted(set(served["entity"].to_list())) if "entity" in served.columns else []
    market = _market_rows(platform, symbols, day - dt.timedelta(days=REGIME_HISTORY_DAYS))
    outcomes = (O.join_outcomes(served, market, horizon=s.features.horizon_days, now=now)
                if not served.is_empty() else pl.DataFrame(schema=O.OUTCOME_SCHEMA))
    platform.warehouse.write_partition(OUTCOMES_TABLE, outcomes, "date", day)
    metrics = M.daily_metrics(outcomes, day, measured_at=now)
    policy = performance_policy(s)
    window = _window(platform, P.window_start(day, policy), day)
    tests = P.compare_versions(window, platform.governance(), policy) if not window.is_empty() else []
    labelled = outcomes.filter(pl.col("label_status") == O.LABELLED)
    shadow = _shadow_comparisons(platform, P.window_start(day, policy), day)
    metadata = {
        "dagster/row_count": metrics.height,
        "served": outcomes.height,
        "labelled": labelled.height,
        "pending": outcomes.filter(pl.col("label_status") == O.PENDING).height,
        "horizon_days": s.features.horizon_days,
        "measured_at": now.isoformat(),
        "metrics": markdown_table(metrics.drop("date", "measured_at")),
        "hit_rate_by_regime": markdown_table(M.regime_table(labelled)),
        "reliability": markdown_table(M.reliability_table(labelled)),
        "performance_tests": dg.MetadataValue.json([t.to_dict() for t in tests]),
        "tests": markdown_table(pl.DataFrame([t.to_dict() for t in tests]).select(
            "model_version", "metric", "evaluated", "live", "n", "n_required", "p_value", "verdict"))
        if tests else dg.MetadataValue.md("no labelled outcomes in the window"),
        "outcomes_table": OUTCOMES_TABLE,
        "champion_vs_shadow": markdown_table(shadow) if shadow.height
        else dg.MetadataValue.md("no request of the day has a shadow prediction (serving.shadow_alias)"),
    }
    if labelled.height:
        metadata["reliability_plot"] = png_markdown(_reliability_png(M.reliability_table(labelled)),
                                                    "reliability: predicted vs observed")
    return dg.Output(metrics, metadata=metadata)


def _shadow_comparisons(platform: PlatformResource, first: dt.date, day: dt.date) -> pl.DataFrame:
    """Champion against shadow on the identical requests of the trailing window ``first`` .. ``day`` (the
    log's shadow- segments; the window, not the day, because the IC test resamples decision dates and one
    day of requests has one), written as the read-model the management API serves (/models/{name}/shadow);
    the table for the metadata."""
    from functools import partial

    from mlops_assets.evaluation.shadow_ic import paired_ic_test
    from mlops_assets.monitoring import live_metrics as M
    from mlops_assets.monitoring.shadow import comparisons_table, read_shadow_rows, write_shadow_report

    settings, e = platform.settings, platform.settings.evaluation
    begin = dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC)
    end = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    rows = read_shadow_rows(settings.serving_log_dir)
    if rows.height:
        rows = rows.filter((pl.col("ts") >= begin) & (pl.col("ts") < end))
    outcomes = _window(platform, first, day, labelled=False)
    ic_test = partial(paired_ic_test, min_symbols=e.ic_min_symbols, n_boot=e.bootstrap_samples,
                      alpha=1 - e.interval_level)
    comparisons = M.champion_vs_shadow(outcomes, rows, ic_test) if outcomes.height else []
    write_shadow_report(settings.reports_dir, day.isoformat(), comparisons, since=first.isoformat())
    return comparisons_table(comparisons)


def _reliability_png(table: pl.DataFrame) -> bytes:
    from mlops_assets.evaluation.plots import line_chart_png

    return line_chart_png({"observed": (table["mean_predicted"].to_list(), table["observed_rate"].to_list()),
                           "ideal": ([0.0, 1.0], [0.0, 1.0])}, xlabel="predicted P(up)",
                          ylabel="observed up-rate", ylim=(0.0, 1.0), width=3.5, height=3.0)


live_performance_job = dg.define_asset_job(
    "live_performance_job", selection=dg.AssetSelection.assets(live_performance), partitions_def=LIVE_DAYS,
    description="Join one day of served predictions with their realised outcomes and test live performance.")


@dg.schedule(job=live_performance_job, cron_schedule="30 6 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Each morning, measures the day of serving whose outcomes are now known (today minus "
                         "monitoring.performance_label_lag_days).")
def live_performance_schedule(context: dg.ScheduleEvaluationContext, platform: PlatformResource):
    when = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    day = when.date() - dt.timedelta(days=label_lag_days(platform.settings))
    return dg.RunRequest(run_key=f"live-performance-{day.isoformat()}", partition_key=day.isoformat())


@dg.sensor(job=retrain_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="A served version whose live metric is significantly below its own evaluation opens a "
                       "performance episode (drift event of source live_performance, webhook alert) and requests "
                       "one retraining run, under the drift cooldown.")
def live_performance_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
    from mlops_assets.monitoring.alerts import send_alert
    from mlops_assets.monitoring.performance import PerformanceTest, performance_tick

    records = context.instance.fetch_materializations(live_performance.key, limit=1).records
    if not records or records[0].storage_id <= int(context.cursor or 0):
        return dg.SkipReason("no new live-performance measurement")
    record, s = records[0], platform.settings
    tests = [PerformanceTest.from_dict(t) for t in record.asset_materialization.metadata["performance_tests"].value]
    tick = performance_tick(platform.governance(), tests, performance_policy(s), dt.datetime.now(dt.UTC))
    context.update_cursor(str(record.storage_id))
    if tick is None:
        return dg.SkipReason("no version has enough labelled outcomes for a verdict")
    context.log.info(f"live performance: {tick.decision.action} ({tick.alert['reason']})")
    if tick.new_episode:
        send_alert(tick.alert, s.monitoring.webhook_url, context.log)
    if not tick.retrain:
        return dg.SkipReason(f"no new performance episode ({tick.decision.action})")
    return dg.RunRequest(run_key=tick.alert["episode_id"],
                         tags={"trigger": "live_performance", "drift_event": str(tick.event_id)})


defs = dg.Definitions(assets=[live_performance], jobs=[live_performance_job],
                      schedules=[live_performance_schedule], sensors=[live_performance_sensor])

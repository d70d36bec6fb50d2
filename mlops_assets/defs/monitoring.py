"""Monitoring assets: served traffic ingested from the prediction log, drift between the training window
and current data (the calibrated verdict beside Evidently's), and the sensor that turns a drift episode
into one retraining run.

Lineage: ``production_model`` and ``online_features`` -> ``served_predictions`` (what the inference app
served with them) -> ``drift_report``, which also hangs from the model it monitors (``production_model``).
``served_predictions`` is refreshed by ``served_predictions_sensor`` when a new segment of the prediction
log closes; ``drift_report`` still runs when the daily data moves (``FOLLOW_DAILY_DATA``): neither a
promotion nor new served traffic starts it.
"""

import datetime as dt

import dagster as dg
import polars as pl

from mlops_assets.defs.common import FOLLOW_UPSTREAM, OWNER_ML, markdown_table, png_markdown
from mlops_assets.defs.features import VIEW_INS
from mlops_assets.defs.models import model_features, production_model, retrain_job
from mlops_assets.defs.resources import WAREHOUSE_POOL, PlatformResource
from mlops_assets.features.views import FEATURE_VIEWS

TRAINING_DATASET = dg.AssetKey("training_dataset")
ONLINE_FEATURES = dg.AssetKey("online_features")
SERVED_PREDICTIONS = dg.AssetKey("served_predictions")
SERVED_PREFIX = "served__"

# drift_report follows the daily data (feature views, training dataset) as before. The model it monitors
# and the served traffic are lineage, not triggers: a promotion, or a prediction-log segment closing
# every few minutes, must not start a drift run (nor hold one back while never materialized).
FOLLOW_DAILY_DATA = FOLLOW_UPSTREAM.ignore(
    dg.AssetSelection.assets(production_model.key, SERVED_PREDICTIONS)).with_label("eager_on_daily_data")


@dg.asset(
    deps=[production_model, ONLINE_FEATURES],
    group_name="monitoring",
    owners=[OWNER_ML],
    kinds={"polars", "duckdb"},
    pool=WAREHOUSE_POOL,
    description=(
        "Requests the inference app served with the production model and the online feature snapshot: "
        "closed Parquet segments of the prediction log under $MLOPS_HOME/serving (features, output, model "
        "version, variant, latency, request id), ingested into the warehouse for drift and A/B analysis on "
        "real traffic. Refreshed by served_predictions_sensor when a new segment closes; the metadata has "
        "rows, requests and latency p50/p95/p99 per model version."
    ),
)
def served_predictions(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.Output[pl.DataFrame]:
    from mlops_assets.monitoring.served import log_fingerprint, read_closed_segments, served_summary

    log_dir = platform.settings.serving_log_dir
    df = read_closed_segments(log_dir)
    per_version = served_summary(df)
    return dg.Output(df, metadata={
        "dagster/row_count": df.height,
        "segments": df["segment"].n_unique() if df.height else 0,
        "log_fingerprint": log_fingerprint(log_dir) or "empty",
        "model_versions": dg.MetadataValue.json(per_version["model_version"].to_list()),
        "per_model_version": markdown_table(per_version.drop("first_ts", "last_ts")),
        "latency_ms_by_version": dg.MetadataValue.json({
            r["model_version"]: {k: r[k] for k in ("rows", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms")}
            for r in per_version.iter_rows(named=True)}),
    })


served_predictions_job = dg.define_asset_job(
    "served_predictions_job", selection=dg.AssetSelection.assets(served_predictions),
    description="Ingest the closed segments of the prediction log (launched by served_predictions_sensor).",
)


@dg.sensor(job=served_predictions_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Refreshes served_predictions when a segment of the prediction log closed since the "
                       "last run (one directory listing per tick; no run while the log is unchanged).")
def served_predictions_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
    from mlops_assets.monitoring.served import log_fingerprint

    fingerprint = log_fingerprint(platform.settings.serving_log_dir)
    if not fingerprint:
        return dg.SkipReason("the prediction log has no closed segment yet")
    if fingerprint == context.cursor:
        return dg.SkipReason("no new closed segment since the last refresh")
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=f"served-{fingerprint[:16]}", tags={"trigger": "prediction_log"})


def _current_window(views: dict[str, pl.DataFrame], days: int) -> pl.DataFrame:
    from mlops_assets.features.datasets import join_views

    joined = join_views([views[v.name] for v in FEATURE_VIEWS])
    dates = joined["date"].unique().sort()
    return joined.filter(pl.col("date") >= dates[max(0, len(dates) - days)])


def _served_features(served: pl.DataFrame, features: list[str]) -> pl.DataFrame:
    """Feature columns of served requests (logged as ``served__<feature>`` or plain names)."""
    cols = {f: (f"{SERVED_PREFIX}{f}" if f"{SERVED_PREFIX}{f}" in served.columns else f) for f in features}
    if served.is_empty() or not all(c in served.columns for c in cols.values()):
        return pl.DataFrame()
    return served.select([pl.col(c).cast(pl.Float64).alias(f) for f, c in cols.items()])


@dg.asset(
    ins={**VIEW_INS, "dataset": dg.AssetIn(TRAINING_DATASET), "served": dg.AssetIn(SERVED_PREDICTIONS)},
    deps=[production_model],  # the model it monitors (lineage only: see FOLLOW_DAILY_DATA)
    group_name="monitoring",
    owners=[OWNER_ML],
    kinds={"evidently", "polars", "duckdb"},
    pool=WAREHOUSE_POOL,
    automation_condition=FOLLOW_DAILY_DATA,
    description=(
        "Data drift between the reference (the training window's features) and current data (the latest "
        "window of features plus served requests), two verdicts side by side. Calibrated (the default "
        "decision, monitoring.drift_method): per feature a p-value against a block-bootstrap null drawn "
        "from the reference's own history, Benjamini-Hochberg q-values, so windows like the reference's "
        "own are flagged at most at the FDR level. Evidently: DataDriftPreset's statistic, threshold and "
        "verdict, exactly. Evidently's HTML report linked; one row per report in warehouse table "
        "drift_verdicts."
    ),
)
def drift_report(context: dg.AssetExecutionContext, platform: PlatformResource, dataset: pl.DataFrame,
                 served: pl.DataFrame, **views: pl.DataFrame):
    from mlops_assets.monitoring.evidently_report import run_evidently_drift
    from mlops_assets.monitoring.plots import drift_plot_png
    from mlops_assets.monitoring.verdict import drift_verdict, verdict_options, verdict_summary_row

    s = platform.settings
    features = model_features(dataset)
    categorical = [c for c in ("vol_regime",) if c in dataset.columns]
    columns = features + categorical
    reference = dataset.filter(pl.col("split") == "train").select("date", *columns)
    current = _current_window(views, s.monitoring.drift_window_days).select("date", *columns)
    cur_dates = (current["date"].min(), current["date"].max())
    served_rows = _served_features(served, features)
    if not served_rows.is_empty():
        current = pl.concat([current.select(features), served_rows], how="vertical_relaxed")
        columns = features  # served requests carry model inputs only
    categorical = [c for c in categorical if c in columns]
    verdict = drift_verdict(reference.select("date", *columns), current.select(
        [c for c in ("date", *columns) if c in current.columns]), columns, categorical_columns=categorical,
        compare=True, **verdict_options(s))
    stamp = dt.datetime.now(dt.UTC)
    html = s.reports_dir / "drift" / f"drift_{stamp:%Y%m%dT%H%M%S}.html"
    html.parent.mkdir(parents=True, exist_ok=True)
    snapshot = run_evidently_drift(reference.select(columns).head(20_000), current.select(columns).head(20_000),
                                   columns, categorical_columns=categorical,
                                   threshold_share=s.monitoring.drift_share_threshold)
    snapshot.save_html(str(html))
    row = verdict_summary_row(verdict, (reference["date"].min(), reference["date"].max()), cur_dates)
    row.update(measured_at=stamp.replace(tzinfo=None), html_report=str(html), served_rows=served_rows.height)
    platform.warehouse.append_rows("drift_verdicts", pl.DataFrame([row]))
    cal, ev = verdict.calibrated, verdict.evidently
    assert cal is not None and ev is not None
    return dg.MaterializeResult(metadata={
        "drift_method": verdict.method,
        "share_drifted": float(verdict.share_drifted),
        "dataset_drift": bool(verdict.dataset_drift),
        "drifted_columns": dg.MetadataValue.json(verdict.drifted_columns),
        "threshold_share": s.monitoring.drift_share_threshold,
        "measured_at": stamp.isoformat(),
        "calibrated_share": float(cal.share_drifted),
        "calibrated_dataset_drift": bool(cal.dataset_drift),
        "evidently_share": float(ev.share_drifted),
        "evidently_dataset_drift": bool(ev.dataset_drift),
        "calibration": dg.MetadataValue.json({
            "fdr_alpha": cal.alpha, "null_draws": cal.n_draws, "window_days": cal.window_days,
            "block_days": cal.block_days, "profile": "from cache" if cal.profile_from_cache else "built"}),
        "reference_rows": verdict.n_reference,
        "current_rows": verdict.n_current,
        "served_rows": served_rows.height,
        "calibrated_per_feature": markdown_table(cal.per_column.select(
            "column", "statistic", "score", "null_p95", "p_value", "q_value", "significant")),
        "evidently_per_feature": markdown_table(ev.per_column.select("column", "method", "score", "threshold",
                                                                     "drifted")),
        "evidently_scores": png_markdown(drift_plot_png(ev), "Evidently drift scores"),
        "html_report": dg.MetadataValue.path(str(html)),
    })


@dg.sensor(job=retrain_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="A drift episode (from drift_report's configured verdict, or a drift event another "
                       "service posted) requests one retraining run, with a cooldown across all sources.")
def drift_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
    from mlops_assets.monitoring.alerts import send_alert
    from mlops_assets.monitoring.drift_tick import drift_tick
    from mlops_assets.monitoring.events import DriftObservation, DriftPolicy

    s = platform.settings
    policy = DriftPolicy(threshold_share=s.monitoring.drift_share_threshold,
                         cooldown_hours=s.monitoring.cooldown_hours)
    records = context.instance.fetch_materializations(drift_report.key, limit=1).records
    record = records[0] if records else None
    report = None
    if record is not None and record.storage_id > int(context.cursor or 0):
        md = record.asset_materialization.metadata
        report = DriftObservation(float(md["share_drifted"].value), tuple(md["drifted_columns"].value),
                                  dt.datetime.fromisoformat(md["measured_at"].value))
    requests: list[dg.RunRequest] = []
    for obs, outcome in drift_tick(platform.governance(), policy, report):
        decision = outcome.decision
        context.log.info(f"drift {obs.share_drifted:.2f}: {decision.action} ({decision.reason})")
        if decision.new_episode:
            send_alert(decision.to_event(obs), s.monitoring.webhook_url, context.log)
        if outcome.retrain:
            requests.append(dg.RunRequest(run_key=f"drift-episode-{decision.episode_id}",
                                          tags={"trigger": "drift", "drift_event": str(outcome.event_id)}))
    if record is not None:
        context.update_cursor(str(max(record.storage_id, int(context.cursor or 0))))
    return requests or dg.SkipReason("no drift episode needs retraining")


defs = dg.Definitions(assets=[served_predictions, drift_report], jobs=[served_predictions_job],
                      sensors=[drift_sensor, served_predictions_sensor])

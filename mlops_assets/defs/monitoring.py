"""Monitoring assets: served traffic ingested from the prediction log, Evidently drift between the
training window and current data, and the sensor that turns a drift episode into one retraining run.
"""

import datetime as dt

import dagster as dg
import polars as pl

from mlops_assets.defs.common import FOLLOW_UPSTREAM, OWNER_ML, markdown_table, png_markdown
from mlops_assets.defs.features import VIEW_INS
from mlops_assets.defs.models import model_features, retrain_job
from mlops_assets.defs.resources import WAREHOUSE_POOL, PlatformResource
from mlops_assets.features.views import FEATURE_VIEWS

TRAINING_DATASET = dg.AssetKey("training_dataset")
SERVED_PREFIX = "served__"


@dg.asset(
    group_name="monitoring",
    owners=[OWNER_ML],
    kinds={"polars", "duckdb"},
    pool=WAREHOUSE_POOL,
    description=(
        "Requests the inference app served: closed Parquet segments of the prediction log under "
        "$MLOPS_HOME/serving (features, output, model version, variant, latency, request id), ingested "
        "into the warehouse for drift and A/B analysis on real traffic."
    ),
)
def served_predictions(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.Output[pl.DataFrame]:
    from mlops_assets.monitoring.served import read_closed_segments

    df = read_closed_segments(platform.settings.serving_log_dir)
    return dg.Output(df, metadata={
        "dagster/row_count": df.height,
        "model_versions": dg.MetadataValue.json(
            sorted(map(str, df["model_version"].unique().to_list())) if "model_version" in df.columns else []),
    })


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
    ins={**VIEW_INS, "dataset": dg.AssetIn(TRAINING_DATASET), "served": dg.AssetIn("served_predictions")},
    group_name="monitoring",
    owners=[OWNER_ML],
    kinds={"evidently", "polars", "duckdb"},
    pool=WAREHOUSE_POOL,
    automation_condition=FOLLOW_UPSTREAM,
    description=(
        "Evidently data drift (DataDriftPreset, the same per-column method and threshold Evidently picks, "
        "computed exactly and fast) between the reference — the training window's features — and current "
        "data: the latest window of features plus served requests. Per-feature score and verdict, share "
        "of drifted features, the HTML report linked, a summary row in the warehouse."
    ),
)
def drift_report(context: dg.AssetExecutionContext, platform: PlatformResource, dataset: pl.DataFrame,
                 served: pl.DataFrame, **views: pl.DataFrame):
    from mlops_assets.monitoring.drift import fast_drift, summary_row
    from mlops_assets.monitoring.plots import drift_plot_png
    from mlops_assets.monitoring.evidently_report import run_evidently_drift

    s = platform.settings
    features = model_features(dataset)
    categorical = [c for c in ("vol_regime",) if c in dataset.columns]
    columns = features + categorical
    reference = dataset.filter(pl.col("split") == "train").select("date", *columns)
    current = _current_window(views, s.monitoring.drift_window_days).select("date", *columns)
    served_rows = _served_features(served, features)
    if not served_rows.is_empty():
        current = pl.concat([current.select(features), served_rows], how="vertical_relaxed")
        columns = features  # served requests carry model inputs only
    result = fast_drift(reference.select(columns), current.select(columns), columns,
                        categorical_columns=[c for c in categorical if c in columns],
                        threshold_share=s.monitoring.drift_share_threshold)
    stamp = dt.datetime.now(dt.UTC)
    html = s.reports_dir / "drift" / f"drift_{stamp:%Y%m%dT%H%M%S}.html"
    html.parent.mkdir(parents=True, exist_ok=True)
    snapshot = run_evidently_drift(reference.select(columns).head(20_000), current.select(columns).head(20_000),
                                   columns, categorical_columns=[c for c in categorical if c in columns],
                                   threshold_share=s.monitoring.drift_share_threshold)
    snapshot.save_html(str(html))
    ref_dates = (reference["date"].min(), reference["date"].max())
    cur_dates = (current["date"].min(), current["date"].max()) if "date" in current.columns else ref_dates
    row = summary_row(result, ref_dates, cur_dates)
    row.update(measured_at=stamp.replace(tzinfo=None), html_report=str(html), served_rows=served_rows.height)
    row["drifted_columns"] = ",".join(row["drifted_columns"])
    platform.warehouse.append_rows("drift_summary", pl.DataFrame([row]))
    return dg.MaterializeResult(metadata={
        "share_drifted": float(result.share_drifted),
        "dataset_drift": bool(result.dataset_drift),
        "drifted_columns": dg.MetadataValue.json(result.drifted_columns),
        "threshold_share": s.monitoring.drift_share_threshold,
        "measured_at": stamp.isoformat(),
        "reference_rows": result.n_reference,
        "current_rows": result.n_current,
        "served_rows": served_rows.height,
        "per_feature": markdown_table(result.per_column.select("column", "method", "score", "threshold", "drifted")),
        "scores": png_markdown(drift_plot_png(result), "drift scores"),
        "html_report": dg.MetadataValue.path(str(html)),
    })


@dg.sensor(job=retrain_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Drift past the threshold (from drift_report or posted by another service) records a "
                       "drift event and requests one retraining run per episode, with a cooldown.")
def drift_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
    from mlops_assets.monitoring.events import DriftObservation, DriftPolicy, decide_drift_action, send_alert

    s = platform.settings
    store = platform.governance()
    policy = DriftPolicy(threshold_share=s.monitoring.drift_share_threshold,
                         cooldown_hours=s.monitoring.cooldown_hours)
    requests: list[dg.RunRequest] = []
    # 1. events posted by other services (management API), not acted on yet
    for event in store.list_drift_events(source=None, limit=50):
        if event.source != "drift_report" and not event.action_taken and event.drifted_share >= policy.threshold_share:
            store.set_drift_action(event.id, "retraining requested", actor="drift_sensor")
            requests.append(dg.RunRequest(run_key=f"drift-event-{event.id}", tags={"trigger": "drift",
                                                                                     "drift_event": str(event.id)}))
    # 2. the newest drift report, once
    records = context.instance.fetch_materializations(drift_report.key, limit=1).records
    record = records[0] if records else None
    cursor = int(context.cursor or 0)
    if record is not None and record.storage_id > cursor:
        md = record.asset_materialization.metadata
        obs = DriftObservation(float(md["share_drifted"].value), tuple(md["drifted_columns"].value),
                               dt.datetime.fromisoformat(md["measured_at"].value))
        last = store.last_drift_event(source="drift_report")
        last_event = None if last is None else {
            "ts": last.ts, "episode_id": last.episode_id, "share": last.drifted_share,
            "resolved": "resolved" in (last.action_taken or "")}
        decision = decide_drift_action(obs, last_event, policy)
        if decision.ends_episode and last is not None:
            store.set_drift_action(last.id, f"{last.action_taken or 'none'}; episode resolved", actor="drift_sensor")
        if decision.new_episode:
            event = store.record_drift_event(
                source="drift_report", features=list(obs.drifted_columns), drifted_share=obs.share_drifted,
                severity=decision.severity, action_taken="retraining requested" if decision.action == "retrain"
                else decision.action, episode_id=decision.episode_id, details={"reason": decision.reason},
                actor="drift_sensor")
            send_alert(decision.to_event(obs), s.monitoring.webhook_url, context.log)
            if decision.action == "retrain":
                requests.append(dg.RunRequest(run_key=f"drift-episode-{decision.episode_id}",
                                              tags={"trigger": "drift", "drift_event": str(event.id)}))
        context.log.info(f"drift {obs.share_drifted:.2f}: {decision.action} ({decision.reason})")
        context.update_cursor(str(record.storage_id))
    return requests or dg.SkipReason("no drift episode needs retraining")


defs = dg.Definitions(assets=[served_predictions, drift_report], sensors=[drift_sensor])

"""The live-performance wiring: one day of served predictions (real prediction-log segments, ingested
into the warehouse as served_predictions does) joined with raw market data, materialized with
``materialize()`` on a temporary MLOPS_HOME; the sensor turns the degradation into one retraining run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from mlops_assets import stores
from mlops_assets.data.synthetic import generate_market_data
from mlops_assets.monitoring.served import read_closed_segments, write_segment
from mlops_assets.settings import get_settings
from mlops_assets_tests.defs.conftest import build


def _serve(log_dir: Path, day: dt.date, symbols: list[str], n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ts = [dt.datetime(day.year, day.month, day.day, 14, tzinfo=dt.UTC) + dt.timedelta(seconds=i) for i in range(n)]
    prob = rng.random(n)  # a version that has stopped knowing anything: live AUC about 0.5
    frame = pl.DataFrame({
        "request_id": [f"req-{i}" for i in range(n)], "row": [0] * n, "ts": ts,
        "entity": [symbols[i % len(symbols)] for i in range(n)], "model_name": "market_direction",
        "model_version": "1", "alias": "production", "variant": "production", "snapshot_version": "s1",
        "prediction": (prob >= 0.5).astype(float), "probability": prob, "latency_ms": 1.0,
        "feature_names": [["ret_1d"]] * n, "feature_values": [[0.01]] * n,
        "request_features": pl.Series([None] * n, dtype=pl.List(pl.String)),  # every value from the snapshot
    })
    write_segment(frame, log_dir, "pred-test-1-1.parquet")


def test_live_performance_partition_and_sensor(small_home: Path, instance: dg.DagsterInstance) -> None:
    from mlops_assets.defs.performance import live_performance, live_performance_sensor

    s = get_settings()
    today = dt.datetime.now(dt.UTC).date()
    market = generate_market_data(n_symbols=6, n_days=320, seed=3, start=today - dt.timedelta(days=470))
    market = market.filter(pl.col("date") < today)
    days = market["date"].unique().sort().to_list()
    day = days[-15]
    wh = stores.warehouse(s)
    wh.write_table("raw_market_data", market)
    _serve(s.serving_log_dir, day, sorted(market["symbol"].unique().to_list()), 900, seed=1)
    wh.write_table("served_predictions", read_closed_segments(s.serving_log_dir))
    gov = stores.governance_store(s)
    gov.record_gate_result(name="market_direction", version="1", gate="evaluation", passed=True,
                           values={"test_auc": 0.9}, thresholds={"test_auc": 0.5},
                           details={"metric": "test_auc", "higher_is_better": True}, actor="dagster")

    defs = build(small_home)
    result = dg.materialize([live_performance], partition_key=day.isoformat(), resources=defs.resources,
                            instance=instance)
    assert result.success
    md = result.asset_materializations_for_node("live_performance")[0].metadata
    assert md["served"].value == 900 and md["labelled"].value == 900 and md["pending"].value == 0
    assert "data:image/png;base64," in md["reliability_plot"].value
    [test] = md["performance_tests"].value
    assert test["verdict"] == "degraded" and test["metric"] == "roc_auc" and test["n"] >= test["n_required"]
    table = wh.read_table("live_performance")
    assert table["date"].to_list() == [day] and table["model_version"].to_list() == ["1"]
    assert 0.35 < table["roc_auc"][0] < 0.65 and table["labelled"][0] == 900
    outcomes = wh.read_table("live_outcomes")
    assert outcomes.height == 900 and (outcomes["outcome_date"] > outcomes["decision_date"]).all()
    assert outcomes["label"].null_count() == 0

    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        request = live_performance_sensor(context)
        cursor = context.cursor
    assert isinstance(request, dg.RunRequest) and request.tags["trigger"] == "live_performance"
    assert request.run_key.startswith("performance-")
    [event] = gov.list_drift_events("live_performance")
    assert event.action_taken == "retraining requested" and event.episode_id == request.run_key
    with dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor) as again:
        assert isinstance(live_performance_sensor(again), dg.SkipReason)

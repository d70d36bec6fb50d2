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


def _serve(log_dir: Path, day: dt.date, symbols: list[str], n: int, seed: int, name: str = "1-1") -> None:
    rng = np.random.default_rng(seed)
    ts = [dt.datetime(day.year, day.month, day.day, 14, tzinfo=dt.UTC) + dt.timedelta(seconds=i) for i in range(n)]
    prob = rng.random(n)  # a version that has stopped knowing anything: live AUC about 0.5
    frame = pl.DataFrame({
        "request_id": [f"req-{name}-{i}" for i in range(n)], "row": [0] * n, "ts": ts,
        "entity": [symbols[i % len(symbols)] for i in range(n)], "model_name": "market_direction",
        "model_version": "1", "alias": "production", "variant": "production", "snapshot_version": "s1",
        "prediction": (prob >= 0.5).astype(float), "probability": prob, "latency_ms": 1.0,
        "feature_names": [["ret_1d"]] * n, "feature_values": [[0.01]] * n,
        "request_features": pl.Series([None] * n, dtype=pl.List(pl.String)),  # every value from the snapshot
    })
    write_segment(frame, log_dir, f"pred-test-{name}.parquet")


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


def test_live_performance_compares_champion_and_shadow_over_the_trailing_window(
        small_home: Path, instance: dg.DagsterInstance) -> None:
    """Shadow rows on 15 days of requests (one decision date each): the day's materialization tests
    IC(shadow) - IC(champion) over the window's dates, in the metadata table and the shadow report."""
    from mlops_assets.defs.performance import live_performance
    from mlops_assets.features.datasets import forward_labels
    from mlops_assets.monitoring.live_outcomes import join_outcomes
    from mlops_assets.monitoring.shadow import read_shadow_report

    s = get_settings()
    today = dt.datetime.now(dt.UTC).date()
    market = generate_market_data(n_symbols=6, n_days=320, seed=3, start=today - dt.timedelta(days=470))
    market = market.filter(pl.col("date") < today)
    days = market["date"].unique().sort().to_list()
    labels = forward_labels(market, s.features.horizon_days)
    symbols = sorted(market["symbol"].unique().to_list())
    served_days = days[-30:-15]
    for k, day in enumerate(served_days):
        _serve(s.serving_log_dir, day, symbols, 60, seed=k, name=f"{k}-1")
        served = read_closed_segments(s.serving_log_dir, features=False).filter(pl.col("ts").dt.date() == day)
        fwd = served.join(labels.filter(pl.col("date") == days[days.index(day) - 1]),
                          left_on="entity", right_on="symbol")["fwd_return"].to_numpy()
        prob = 1 / (1 + np.exp(-fwd / 0.01 + np.random.default_rng(k).normal(0, 0.3, len(fwd))))
        write_segment(served.with_columns(model_version=pl.lit("2"), variant=pl.lit("shadow"),
                                          prediction=pl.Series((prob >= 0.5).astype(float)),
                                          probability=pl.Series(prob),
                                          feature_names=pl.lit(["ret_1d"]), feature_values=pl.lit([0.01])),
                      s.serving_log_dir, f"shadow-pred-test-{k}-1.parquet")
    wh = stores.warehouse(s)
    wh.write_table("raw_market_data", market)
    served = read_closed_segments(s.serving_log_dir)
    wh.write_table("served_predictions", served)
    wh.write_table("live_outcomes", join_outcomes(served, market, horizon=s.features.horizon_days,
                                                      now=dt.datetime.now(dt.UTC)))
    result = dg.materialize([live_performance], partition_key=served_days[-1].isoformat(),
                            resources=build(small_home).resources, instance=instance)
    assert result.success
    assert "| cross_sectional | 15 |" in result.asset_materializations_for_node(
        "live_performance")[0].metadata["champion_vs_shadow"].value
    report = read_shadow_report(s.reports_dir, "market_direction")
    assert report is not None and (report["day"], report["since"]) == (served_days[-1].isoformat(),
                                                                       (served_days[-1] - dt.timedelta(days=19)).isoformat())
    [c] = report["comparisons"]
    assert (c["pairs"], c["labelled"], c["task"]) == (900, 900, "binary") and c["test"] is not None
    assert c["ic_test"]["n_dates"] == 15 and c["ic_test"]["ci_low"] > 0

"""The daily flow runs by itself: the automation sensor is on by default, and new raw data leads to
updated feature views, a new online snapshot and a drift report -- never to training, staging or
production; a promotion or new served traffic does not start a drift report either."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from mlops_assets_tests.defs.conftest import build


def _requested(result: dg.EvaluateAutomationConditionsResult, defs: dg.Definitions) -> set[str]:
    """The asset keys an automation evaluation asked to materialize."""
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    return {key.to_user_string() for key in keys if result.get_num_requested(key)}


def test_the_automation_sensor_runs_by_default(small_home: Path) -> None:
    defs = build(small_home)
    sensor = defs.resolve_sensor_def("daily_flow_automation_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)


def test_new_raw_data_flows_to_features_snapshot_and_drift_never_training(small_home: Path,
                                                                          instance: dg.DagsterInstance) -> None:
    defs = build(small_home)
    assets = [*defs.assets, *(defs.asset_checks or [])]
    # the daily flow's unpartitioned assets (live_performance, per day, is measured by its own schedule)
    graph = defs.resolve_asset_graph()
    everything = dg.AssetSelection.groups("ingestion", "features", "monitoring") - dg.AssetSelection.assets(
        *[key for key in graph.get_all_asset_keys() if graph.get(key).partitions_def is not None])
    assert dg.materialize(assets, resources=defs.resources, selection=everything, instance=instance).success
    # the first evaluation sees the graph up to date: nothing to do
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0, _requested(first, defs)
    # the daily refresh lands new raw data (the schedule's job materializes raw_market_data only)
    refresh = defs.resolve_job_def("daily_refresh_job")
    assert refresh.execute_in_process(instance=instance).success
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    requested = _requested(second, defs)
    assert {"feature_views/price_returns", "feature_views/technical_indicators",
            "feature_views/volatility_regime"} <= requested
    assert "trained_model" not in requested
    # once those views are rebuilt, the next tick carries the flow on to the snapshot and drift report
    views = dg.AssetSelection.assets(*[dg.AssetKey.from_user_string(k) for k in requested])
    assert dg.materialize(assets, resources=defs.resources, selection=views, instance=instance).success
    third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
    downstream = _requested(third, defs)
    assert "trained_model" not in downstream
    assert {"online_features", "drift_report"} <= requested | downstream, (requested, downstream)
    assert not {"staging_model", "production_model", "served_predictions"} & (requested | downstream)
    # a promotion or new served traffic is lineage of the drift report, not its trigger
    for key in ("production_model", "served_predictions"):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key))
    fourth = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=third.cursor)
    assert "drift_report" not in _requested(fourth, defs), _requested(fourth, defs)

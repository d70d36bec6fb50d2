"""The asset graph: every asset carries what a person needs, and the graph matches its snapshot.

The snapshot (``graph_snapshot.json``) pins keys, dependencies, groups, partitions and automation;
a change to the graph shows up in review as a change to that file. Regenerate it with
``python -m mlops_assets_tests.defs.test_graph``.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from mlops_assets.definitions import defs

SNAPSHOT = Path(__file__).with_name("graph_snapshot.json")


def graph_snapshot() -> dict:
    graph = defs.resolve_asset_graph()
    out = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        out[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitioned": node.partitions_def is not None,
            "automation": node.automation_condition.get_label() if node.automation_condition else None,
            "checks": sorted(c.name for c in node.check_keys),
        }
    return out


def test_every_asset_has_description_group_owner_and_kinds() -> None:
    graph = defs.resolve_asset_graph()
    problems = []
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        name = key.to_user_string()
        if not (spec.description or "").strip():
            problems.append(f"{name}: no description")
        if not spec.group_name or spec.group_name == "default":
            problems.append(f"{name}: no group")
        if not spec.owners:
            problems.append(f"{name}: no owner")
        if not spec.kinds:
            problems.append(f"{name}: no kinds")
    assert not problems, problems


def test_warehouse_assets_share_the_one_writer_pool() -> None:
    from mlops_assets.defs.resources import WAREHOUSE_POOL

    for assets_def in defs.assets:
        if not isinstance(assets_def, dg.AssetsDefinition):
            continue
        kinds = set().union(*(spec.kinds for spec in assets_def.specs))
        if "duckdb" in kinds:
            assert assets_def.op.pool == WAREHOUSE_POOL, assets_def.key


def test_training_is_never_part_of_the_daily_refresh() -> None:
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("trained_model")).automation_condition is None
    refresh = defs.resolve_job_def("daily_refresh_job")
    assert dg.AssetKey("trained_model") not in refresh.asset_layer.executable_asset_keys


def test_llm_side_lineage_runs_from_prompts_to_the_kpis() -> None:
    """prompts -> prompt evaluations -> LLM chain -> LLM usage -> KPIs, and the KPIs hang from what they
    measure (evaluation reports, prompt evaluations, the production model, the catalog)."""
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    path = ["prompt_templates", "prompt_evaluations", "llm_chain", "llm_usage_summary", "platform_kpis"]
    for upstream, downstream in zip(path, path[1:]):
        assert upstream in parents(downstream), f"{upstream} -> {downstream} is missing"
    assert parents("platform_kpis") >= {"model_evaluation", "prompt_evaluations", "production_model",
                                        "feature_catalog", "llm_usage_summary"}
    assert graph.get(dg.AssetKey("llm_chain")).automation_condition is None  # deploying is never automatic


def _parents(graph, name: str) -> set[str]:
    return {k.to_user_string() for k in graph.get(dg.AssetKey.from_user_string(name)).parent_keys}


def test_lineage_runs_from_raw_prices_to_served_predictions_drift_and_kpis() -> None:
    """raw data -> features -> dataset -> trained model -> evaluation -> staging -> production -> served
    predictions -> drift report, and the KPIs hang from production."""
    graph = defs.resolve_asset_graph()
    path = ["raw_market_data", "feature_views/price_returns", "training_dataset", "trained_model",
            "model_evaluation", "staging_model", "production_model", "served_predictions", "drift_report"]
    for upstream, downstream in zip(path, path[1:]):
        assert upstream in _parents(graph, downstream), f"{upstream} -> {downstream} is missing"
    assert _parents(graph, "served_predictions") == {"production_model", "online_features"}
    assert "production_model" in _parents(graph, "drift_report")  # the model it monitors
    assert "production_model" in _parents(graph, "platform_kpis")
    assert "online_features" in _parents(graph, "served_predictions")
    # the deployment group no longer stands alone
    production = graph.get(dg.AssetKey("production_model"))
    assert production.group_name == "deployment" and production.parent_keys


def test_the_asset_graph_is_one_connected_component() -> None:
    graph = defs.resolve_asset_graph()
    keys = set(graph.get_all_asset_keys())
    neighbours: dict[dg.AssetKey, set[dg.AssetKey]] = {key: set() for key in keys}
    for key in keys:
        for parent in graph.get(key).parent_keys:
            neighbours[key].add(parent)
            neighbours.setdefault(parent, set()).add(key)
    start = dg.AssetKey("raw_market_data")
    reached, todo = {start}, [start]
    while todo:
        for other in neighbours[todo.pop()] - reached:
            reached.add(other)
            todo.append(other)
    assert reached == set(neighbours), sorted(k.to_user_string() for k in set(neighbours) - reached)


def test_production_staging_and_serving_are_never_started_by_automation() -> None:
    """Production moves only through the approval sensor, staging only in an evaluation run, served
    predictions only when the prediction log changed (its sensor); the drift report keeps following the
    daily data and ignores the model and the served traffic it hangs from."""
    graph = defs.resolve_asset_graph()
    for name in ("production_model", "staging_model", "served_predictions", "trained_model"):
        assert graph.get(dg.AssetKey(name)).automation_condition is None, name
    staging_to_production = graph.get(dg.AssetKey("production_model"))
    assert staging_to_production.partitions_def is None
    assert graph.get(dg.AssetKey("staging_model")).partitions_def is not None
    drift = graph.get(dg.AssetKey("drift_report")).automation_condition
    assert drift is not None and drift.get_label() == "eager_on_daily_data"
    ignored = repr(drift)
    assert "production_model" in ignored and "served_predictions" in ignored
    sensor = defs.resolve_sensor_def("served_predictions_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == "served_predictions_job"
    assert defs.resolve_sensor_def("approval_sensor").job_name == "promote_model_job"


def test_graph_matches_snapshot() -> None:
    assert SNAPSHOT.exists(), "run `python -m mlops_assets_tests.defs.test_graph` to create the snapshot"
    assert graph_snapshot() == json.loads(SNAPSHOT.read_text())


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(graph_snapshot(), indent=2) + "\n")
    print(f"wrote {SNAPSHOT}")

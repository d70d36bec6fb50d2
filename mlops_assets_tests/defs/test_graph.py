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


def test_graph_matches_snapshot() -> None:
    assert SNAPSHOT.exists(), "run `python -m mlops_assets_tests.defs.test_graph` to create the snapshot"
    assert graph_snapshot() == json.loads(SNAPSHOT.read_text())


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(graph_snapshot(), indent=2) + "\n")
    print(f"wrote {SNAPSHOT}")

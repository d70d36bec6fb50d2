"""The code location: assembles ``defs`` from one module per domain under ``defs/``.

Loaded by ``workspace.yaml`` (``dagster dev``) and by ``dagster job execute -m mlops_assets.definitions``.
"""

import dagster as dg

from mlops_assets.defs import (
    evaluation,
    features,
    ingestion,
    models,
    monitoring,
    performance,
    platform,
    prompts,
    recovery,
)
from mlops_assets.defs.resources import build_resources
from mlops_assets.settings import get_settings

DEMO_SELECTION = (
    # live_performance (monitoring, one partition per day) runs per day on its own schedule
    dg.AssetSelection.groups("ingestion", "features", "monitoring") - dg.AssetSelection.assets("live_performance")
    | dg.AssetSelection.assets("trained_model")
)

demo_job = dg.define_asset_job(
    "demo_job",
    selection=DEMO_SELECTION,
    description="The demo: ingest, build every feature asset, train and register a model behind its gate, "
                "and report drift. (The evaluation of the new version runs per partition; see defs/demo.py.)",
)

# The sensor that evaluates every asset's AutomationCondition (the daily flow: raw data -> feature views,
# catalog, statistics, online snapshot, training dataset, drift report). Declared here, running by
# default: Dagster's implicit `default_automation_condition_sensor` starts switched off, which left the
# daily refresh stopping at raw_market_data. Training has no automation condition, so it never follows.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "daily_flow_automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the assets' automation conditions: new raw data flows into the feature views, "
                "online snapshot, statistics, training dataset and drift report; never into training.",
)


def build_defs() -> dg.Definitions:
    settings = get_settings()
    return dg.Definitions.merge(
        ingestion.defs,
        features.defs,
        models.build_defs(settings),
        evaluation.defs,
        monitoring.defs,
        performance.defs,
        prompts.defs,
        platform.defs,
        recovery.defs,
        dg.Definitions(jobs=[demo_job], sensors=[automation_sensor], resources=build_resources(settings)),
    )


defs = build_defs()

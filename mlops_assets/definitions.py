"""The code location: assembles ``defs`` from one module per domain under ``defs/``.

Loaded by ``workspace.yaml`` (``dagster dev``) and by ``dagster job execute -m mlops_assets.definitions``.
"""

import dagster as dg

from mlops_assets.defs import evaluation, features, ingestion, models, monitoring, platform, prompts
from mlops_assets.defs.resources import build_resources
from mlops_assets.settings import get_settings

DEMO_SELECTION = (
    dg.AssetSelection.groups("ingestion", "features", "monitoring")
    | dg.AssetSelection.assets("trained_model")
)

demo_job = dg.define_asset_job(
    "demo_job",
    selection=DEMO_SELECTION,
    description="The demo: ingest, build every feature asset, train and register a model behind its gate, "
                "and report drift. (The evaluation of the new version runs per partition; see defs/demo.py.)",
)


def build_defs() -> dg.Definitions:
    settings = get_settings()
    return dg.Definitions.merge(
        ingestion.defs,
        features.defs,
        models.build_defs(settings),
        evaluation.defs,
        monitoring.defs,
        prompts.defs,
        platform.defs,
        dg.Definitions(jobs=[demo_job], resources=build_resources(settings)),
    )


defs = build_defs()

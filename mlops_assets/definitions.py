"""The code location: assembles ``defs`` from one module per domain under ``defs/``.

Loaded by ``workspace.yaml`` (``dagster dev``) and by ``dagster job execute -m mlops_assets.definitions``.
"""

from __future__ import annotations

import dagster as dg

from mlops_assets.defs import features, ingestion
from mlops_assets.defs.resources import build_resources
from mlops_assets.settings import get_settings

DOMAIN_MODULES = (ingestion, features)


def build_defs() -> dg.Definitions:
    settings = get_settings()
    merged = dg.Definitions.merge(*(m.defs for m in DOMAIN_MODULES))
    return dg.Definitions.merge(merged, dg.Definitions(resources=build_resources(settings)))


defs = build_defs()

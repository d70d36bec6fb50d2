"""``/api/v1/platform``: the platform's success measures (KPIs), their latest values and trend.

The ``platform_kpis`` asset appends one point of every KPI to its history (daily) and exports the
history as the read-model ``platform_kpis_history``; this router serves it
(``mlops_assets.reporting.kpis.kpi_trend``) and never opens the warehouse. KPIs are computed, never
written: a write answers 405 saying how to add a point.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from mlops_assets.errors import NotFound
from mlops_assets.features import readmodels
from mlops_assets.reporting.kpis import HISTORY_READ_MODEL, kpi_trend
from serving.management.context import ApiContext, ctx
from serving.schemas import error_responses

router = APIRouter(prefix="/api/v1/platform", tags=["platform"], responses=error_responses(404, 422))
COMPUTED = ("KPIs are computed from the registry, the governance store, the feature catalog and the LLM usage log "
            "by the platform_kpis asset (daily at 05:30 UTC); launch platform_kpis_job in Dagster for a new point")


@router.get("/kpis", summary="Platform KPIs: the latest value of each, its change and its trend")
def kpis(points: int = Query(30, ge=1, le=1000, description="trend points per KPI (the newest)"),
         kpi: str | None = Query(None, pattern=r"^[a-z][a-z0-9_]*$", max_length=100, description="only this KPI"),
         c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    try:
        history = readmodels.read_read_model(c.settings.readmodels_dir, HISTORY_READ_MODEL)
    except readmodels.ReadModelNotFoundError:
        raise NotFound("platform_kpis", "no KPI has been computed yet", hint="materialize platform_kpis "
                                                                              "(platform_kpis_job)") from None
    items = kpi_trend(history, points)
    if kpi is not None:
        items = [i for i in items if i["kpi"] == kpi]
        if not items:
            raise NotFound("kpi", f"no KPI named {kpi!r}", hint="leave kpi out to list them all")
    manifest = readmodels.read_model_manifest(c.settings.readmodels_dir, HISTORY_READ_MODEL)
    items = records_of(items)
    return {"items": items, "total": len(items), "history_points": history["as_of"].n_unique(),
            "exported_at": manifest.get("created_at")}


def records_of(value: Any) -> Any:
    """JSON-ready: times as ISO text, non-finite numbers as null."""
    import math
    from datetime import date, datetime

    if isinstance(value, dict):
        return {k: records_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [records_of(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@router.api_route("/kpis", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
def write_kpis() -> JSONResponse:
    return JSONResponse({"detail": f"405: {COMPUTED}"}, status_code=405, headers={"Allow": "GET"})

"""``/api/v1/features``: the feature catalog, statistics, versions and diffs, and dataset samples.

Reads the read-models the feature assets export (``feature_catalog``, ``feature_statistics``,
``feature_correlations``, ``<dataset>_sample``); when the catalog has not been exported yet, the
list falls back to the views declared in code (status ``declared``). Features are defined in code,
so writing to them answers 405 with the reason.
"""

from __future__ import annotations

import io
from typing import Any, Literal

import polars as pl
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import JSONResponse, Response

from mlops_assets.errors import NotFound
from mlops_assets.features import readmodels
from mlops_assets.features.catalog import catalog_rows, diff_versions, versions_of
from mlops_assets.features.statistics import correlation_pairs
from mlops_assets.features.views import FEATURE_VIEWS, parse_version
from serving.management.context import ApiContext, ctx, records
from serving.schemas import error_responses

router = APIRouter(prefix="/api/v1/features", tags=["features"], responses=error_responses(404, 422))
SAMPLE_SUFFIX = "_sample"
CODE_ONLY = ("features are defined in code (mlops_assets/features/views.py) and versioned through the lock "
             "file; change them in a pull request and let the feature assets export the catalog")
FEATURE_NAME = Path(pattern=r"^[a-z][a-z0-9_]*$", max_length=100)
DATASET_ID = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")


def _catalog(c: ApiContext) -> tuple[pl.DataFrame, str]:
    try:
        return readmodels.read_read_model(c.settings.readmodels_dir, readmodels.CATALOG), "read-model"
    except readmodels.ReadModelNotFoundError:
        return catalog_rows(FEATURE_VIEWS), "code"


def _latest_only(catalog: pl.DataFrame) -> pl.DataFrame:
    latest = {view: max(versions_of(catalog, view), key=parse_version) for view in catalog["view"].unique()}
    keep = [{"view": v, "version": x} for v, x in latest.items()]
    return catalog.filter(pl.struct("view", "version").is_in(keep))


def _rows_of(catalog: pl.DataFrame, name: str) -> pl.DataFrame:
    rows = catalog.filter(pl.col("feature") == name)
    if rows.height == 0:
        raise HTTPException(404, f"no feature named {name!r} in the catalog; list them at /api/v1/features")
    return rows


def _statistics(c: ApiContext, view: str, version: str, feature: str) -> dict[str, Any] | None:
    try:
        stats = readmodels.read_read_model(c.settings.readmodels_dir, readmodels.STATISTICS)
    except readmodels.ReadModelNotFoundError:
        return None
    rows = stats.filter(pl.col("feature") == feature)
    if "view" in stats.columns:
        rows = rows.filter((pl.col("view") == view) & (pl.col("version") == version))
    found = records(rows, 1)
    return found[0] if found else None


def _method_not_allowed(reason: str) -> JSONResponse:
    return JSONResponse({"detail": f"405: {reason}"}, status_code=405, headers={"Allow": "GET"})


@router.get("", summary="List features (latest version of each view unless all_versions)")
def list_features(c: ApiContext = Depends(ctx), tag: str | None = Query(None, max_length=100),
                  type: str | None = Query(None, max_length=50, description="dtype, e.g. Float64"),
                  owner: str | None = Query(None, max_length=200),
                  view: str | None = Query(None, max_length=100),
                  all_versions: bool = False) -> dict[str, Any]:
    catalog, source = _catalog(c)
    if not all_versions and catalog.height:
        catalog = _latest_only(catalog)
    if tag:
        catalog = catalog.filter(pl.col("tags").list.contains(tag))
    if type:
        catalog = catalog.filter(pl.col("dtype").str.to_lowercase() == type.lower())
    if owner:
        catalog = catalog.filter(pl.col("owner") == owner)
    if view:
        catalog = catalog.filter(pl.col("view") == view)
    items = records(catalog.sort("view", "position", "version") if catalog.height else catalog)
    return {"items": items, "total": len(items), "source": source}


@router.api_route("", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
def write_features() -> JSONResponse:
    return _method_not_allowed(CODE_ONLY)


# --- datasets (declared before /{name} so "datasets" is not taken for a feature name) ---------------


def _dataset_ids(c: ApiContext) -> list[str]:
    return [n[: -len(SAMPLE_SUFFIX)] for n in readmodels.list_read_models(c.settings.readmodels_dir)
            if n.endswith(SAMPLE_SUFFIX)]


def _dataset(c: ApiContext, dataset_id: str) -> tuple[dict[str, Any], pl.DataFrame]:
    """(info from the manifest, the sample frame) of an exported dataset sample."""
    known = _dataset_ids(c)
    if dataset_id not in known:
        raise HTTPException(404, f"no dataset {dataset_id!r} has been exported; known: {known}")
    name = readmodels.dataset_sample_name(dataset_id)
    manifest = readmodels.read_model_manifest(c.settings.readmodels_dir, name)
    sample = readmodels.read_read_model(c.settings.readmodels_dir, name)
    info = {k: v for k, v in manifest.items() if k not in ("name", "data_file", "columns", "rows")}
    info.update(id=dataset_id, rows=manifest.get("rows"), sample_rows=sample.height)
    return info, sample


@router.get("/datasets", summary="Training datasets with an exported sample")
def list_datasets(c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    items = [_dataset(c, d)[0] for d in _dataset_ids(c)]
    return {"items": items, "total": len(items)}


@router.get("/datasets/{dataset_id}", summary="A dataset's manifest and the first rows of its sample")
def get_dataset(dataset_id: str = DATASET_ID, limit: int = Query(20, ge=0, le=500),
                c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    info, sample = _dataset(c, dataset_id)
    return {**info, "sample": records(sample, limit)}


@router.get("/datasets/{dataset_id}/download", summary="Download the dataset sample (CSV or Parquet)",
            response_class=Response,
            responses={200: {"content": {"text/csv": {}, "application/octet-stream": {}}}})
def download_dataset(dataset_id: str = DATASET_ID, format: Literal["csv", "parquet"] = "csv",
                     c: ApiContext = Depends(ctx)) -> Response:
    _, sample = _dataset(c, dataset_id)
    buffer = io.BytesIO()
    if format == "csv":
        sample.write_csv(buffer)
        media = "text/csv"
    else:
        sample.write_parquet(buffer)
        media = "application/octet-stream"
    filename = f"{dataset_id}_sample.{format}"
    return Response(buffer.getvalue(), media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/correlations",
            summary="Correlations between features (the matrix feature_statistics exports), strongest pairs first")
def correlations(feature: str | None = Query(None, pattern=r"^[a-z][a-z0-9_]*$", max_length=100,
                                             description="only the pairs with this feature"),
                 min_abs: float = Query(0.0, ge=0.0, le=1.0, description="leave out pairs with |r| below this"),
                 limit: int = Query(100, ge=1, le=10_000, description="at most this many pairs"),
                 c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    try:
        corr = readmodels.read_read_model(c.settings.readmodels_dir, readmodels.CORRELATIONS)
    except readmodels.ReadModelNotFoundError:
        raise NotFound("feature_correlations", "the correlation matrix has not been exported yet",
                       hint="materialize the feature_statistics asset") from None
    manifest = readmodels.read_model_manifest(c.settings.readmodels_dir, readmodels.CORRELATIONS)
    pairs = correlation_pairs(corr, feature, min_abs)
    return {"features": corr["feature"].to_list(), "matrix": records(corr), "pairs": pairs[:limit],
            "total_pairs": len(pairs), "method": "pearson", "version": manifest.get("version"),
            "created_at": manifest.get("created_at")}


@router.api_route("/correlations", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
def write_correlations() -> JSONResponse:
    return _method_not_allowed("correlations are computed from the feature views by the feature_statistics "
                               "asset; materialize it (Dagster) to refresh them")


@router.api_route("/datasets", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
@router.api_route("/datasets/{dataset_id}", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
def write_datasets() -> JSONResponse:
    return _method_not_allowed("datasets are built by the training_dataset asset (point in time, with lineage) "
                               "and exported as samples; change the feature views or the dataset config and "
                               "materialize it (Dagster)")


# --- one feature ----------------------------------------------------------------------------------


@router.get("/{name}", summary="A feature: its catalog rows (every version) and statistics")
def get_feature(name: str = FEATURE_NAME, version: str | None = Query(None, pattern=r"^\d+\.\d+\.\d+$"),
                c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    catalog, source = _catalog(c)
    rows = _rows_of(catalog, name)
    view = rows["view"][0]
    versions = sorted(rows["version"].to_list(), key=parse_version)
    chosen = version or versions[-1]
    if chosen not in versions:
        raise HTTPException(404, f"feature {name!r} has no version {chosen!r}; it has {versions}")
    current = records(rows.filter(pl.col("version") == chosen))[0]
    return {"name": name, "view": view, "version": chosen, "versions": versions, "definition": current,
            "statistics": _statistics(c, view, chosen, name), "source": source}


@router.get("/{name}/versions", summary="Every version of the feature's view that lists the feature")
def feature_versions(name: str = FEATURE_NAME, c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    catalog, _ = _catalog(c)
    rows = _rows_of(catalog, name)
    view = rows["view"][0]
    items = records(rows.sort(pl.col("version").map_elements(lambda v: list(parse_version(v)),
                                                             return_dtype=pl.List(pl.Int64))))
    return {"name": name, "view": view, "view_versions": versions_of(catalog, view), "items": items}


@router.get("/{name}/diff", summary="What changed in the feature's view between two versions")
def feature_diff(name: str = FEATURE_NAME,
                 from_version: str = Query(..., pattern=r"^\d+\.\d+\.\d+$", alias="from"),
                 to_version: str = Query(..., pattern=r"^\d+\.\d+\.\d+$", alias="to"),
                 c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    catalog, _ = _catalog(c)
    view = _rows_of(catalog, name)["view"][0]
    known = versions_of(catalog, view)
    missing = [v for v in (from_version, to_version) if v not in known]
    if missing:
        raise HTTPException(404, f"view {view!r} has no version {missing}; it has {known}")
    return diff_versions(catalog, view, from_version, to_version)


@router.api_route("/{name}", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
def write_feature(name: str) -> JSONResponse:
    return _method_not_allowed(CODE_ONLY)

"""The feature catalog: one row per feature and view version, with history.

:func:`catalog_rows` describes the current views (owner, tags, description, dtype, inputs, upstream
assets, schema hash, whether the feature was computed or skipped); :func:`merge_history` folds them
into the previous catalog so rows of older versions stay; :func:`diff_versions` tells what changed
between two versions of a view. The schema-change rule itself is in
:mod:`mlops_assets.features.lock`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import polars as pl

from mlops_assets.features.compute import ViewResult
from mlops_assets.features.views import FeatureView, parse_version, table_name

from mlops_assets.errors import MessageInput

CATALOG_KEY: tuple[str, ...] = ("view", "version", "feature")
CATALOG_SCHEMA: dict[str, pl.DataType] = {
    "view": pl.String(),
    "version": pl.String(),
    "major": pl.Int32(),
    "table": pl.String(),
    "position": pl.Int32(),
    "feature": pl.String(),
    "dtype": pl.String(),
    "description": pl.String(),
    "owner": pl.String(),
    "tags": pl.List(pl.String()),
    "inputs": pl.List(pl.String()),          # columns the expression reads (source or earlier features)
    "source_columns": pl.List(pl.String()),  # source columns it needs, through those features
    "upstream": pl.List(pl.String()),
    "entity": pl.String(),
    "status": pl.String(),          # computed | skipped | declared (no result given)
    "skipped_reason": pl.String(),
    "schema_hash": pl.String(),
    "definition_hash": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "updated_at": pl.Datetime("us", "UTC"),
}


class CatalogError(MessageInput):
    """The catalog cannot answer a question; the message names the view or version."""
    subject = "catalog"


def empty_catalog() -> pl.DataFrame:
    return pl.DataFrame(schema=CATALOG_SCHEMA)


def catalog_rows(
    views: Sequence[FeatureView],
    results: Mapping[str, ViewResult] | None = None,
    upstream: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    now: datetime | None = None,
) -> pl.DataFrame:
    """One row per declared feature of each view.

    ``results`` (view name -> :class:`ViewResult`) marks features computed or skipped (with the
    reason); without it the status is ``declared``. ``upstream`` lists the upstream asset names,
    per view (mapping) or for all views (sequence); by default each view's ``source``.
    """
    now = now or datetime.now(UTC)
    records: list[dict[str, Any]] = []
    for view in views:
        result = (results or {}).get(view.name)
        skipped = dict(result.skipped) if result is not None else {}
        if isinstance(upstream, Mapping):
            assets = list(upstream.get(view.name, [view.source]))
        elif upstream is not None:
            assets = list(upstream)
        else:
            assets = [view.source]
        for position, feature in enumerate(view.features):
            if result is None:
                status = "declared"
            else:
                status = "skipped" if feature.name in skipped else "computed"
            records.append(
                {
                    "view": view.name,
                    "version": view.version,
                    "major": view.major,
                    "table": table_name(view),
                    "position": position,
                    "feature": feature.name,
                    "dtype": feature.dtype_name,
                    "description": feature.description,
                    "owner": view.owner,
                    "tags": list(view.tags),
                    "inputs": list(feature.inputs),
                    "source_columns": _source_columns(view, feature.name),
                    "upstream": assets,
                    "entity": view.entity,
                    "status": status,
                    "skipped_reason": skipped.get(feature.name),
                    "schema_hash": view.schema_hash(),
                    "definition_hash": feature.definition_hash,
                    "created_at": now,
                    "updated_at": now,
                }
            )
    if not records:
        return empty_catalog()
    return _sorted(pl.DataFrame(records, schema=CATALOG_SCHEMA))


def _source_columns(view: FeatureView, feature: str) -> list[str]:
    source_inputs = getattr(view, "source_inputs", None)
    if source_inputs is not None:
        return list(source_inputs(feature))
    return [c for c in view.features[view.feature_names.index(feature)].inputs if c not in view.feature_names]


def _version_parts(column: str = "version") -> list[pl.Expr]:
    parts = pl.col(column).str.split(".")
    return [parts.list.get(i).cast(pl.Int64).alias(f"__v{i}") for i in range(3)]


def _sorted(catalog: pl.DataFrame) -> pl.DataFrame:
    """Sorted by view, version (numerically, not as text) and declared position."""
    return (
        catalog.with_columns(_version_parts())
        .sort("view", "__v0", "__v1", "__v2", "position")
        .drop("__v0", "__v1", "__v2")
    )


def merge_history(previous_catalog: pl.DataFrame | None, new_rows: pl.DataFrame) -> pl.DataFrame:
    """The previous catalog with ``new_rows`` folded in.

    Rows of (view, version, feature) not in ``new_rows`` stay (history). A row present in both takes
    the new values but keeps the first ``created_at``, so the catalog remembers when a feature
    version first appeared.
    """
    if previous_catalog is None or previous_catalog.is_empty():
        return _sorted(new_rows.select(list(CATALOG_SCHEMA)))
    missing = [c for c in CATALOG_KEY + ("created_at",) if c not in previous_catalog.columns]
    if missing:
        raise CatalogError(f"previous catalog: missing column(s) {missing}; expected {list(CATALOG_SCHEMA)}")
    previous = _conform(previous_catalog)
    first_seen = previous.select(*CATALOG_KEY, pl.col("created_at").alias("__first"))
    updated = (
        new_rows.select(list(CATALOG_SCHEMA))
        .join(first_seen, on=list(CATALOG_KEY), how="left")
        .with_columns(pl.coalesce("__first", "created_at").alias("created_at"))
        .drop("__first")
    )
    kept = previous.join(new_rows.select(CATALOG_KEY), on=list(CATALOG_KEY), how="anti")
    return _sorted(pl.concat([kept, updated], how="vertical"))


def _conform(catalog: pl.DataFrame) -> pl.DataFrame:
    """Cast a stored catalog to the current schema (columns added later are filled with null)."""
    exprs = []
    for name, dtype in CATALOG_SCHEMA.items():
        present = name in catalog.columns
        exprs.append(pl.col(name).cast(dtype) if present else pl.lit(None, dtype=dtype).alias(name))
    return catalog.select(exprs)


def versions_of(catalog: pl.DataFrame, view: str) -> list[str]:
    """Versions of ``view`` in the catalog, oldest first."""
    rows = _sorted(catalog.filter(pl.col("view") == view)) if "position" in catalog.columns else catalog
    return list(dict.fromkeys(rows["version"].to_list()))


def schema_from_catalog(catalog: pl.DataFrame, view: str, version: str) -> dict[str, str]:
    """{feature: dtype} of one view version, in declared order."""
    rows = catalog.filter((pl.col("view") == view) & (pl.col("version") == version)).sort("position")
    if rows.is_empty():
        known = versions_of(catalog, view)
        raise CatalogError(f"catalog: view {view!r} has no version {version!r}; it has {known}")
    return dict(zip(rows["feature"].to_list(), rows["dtype"].to_list(), strict=True))


def diff_versions(catalog: pl.DataFrame, view: str, v1: str, v2: str) -> dict[str, Any]:
    """What changed in ``view`` from version ``v1`` to ``v2``.

    Returns ``{"view", "from", "to", "added", "removed", "retyped": [{"feature", "from", "to"}],
    "description_changed", "definition_changed", "bump"}`` where ``bump`` is major/minor/patch/none.
    """
    parse_version(v1), parse_version(v2)

    def rows(version: str) -> dict[str, dict[str, Any]]:
        schema_from_catalog(catalog, view, version)  # raises with the known versions
        part = catalog.filter((pl.col("view") == view) & (pl.col("version") == version)).sort("position")
        return {r["feature"]: r for r in part.iter_rows(named=True)}

    old, new = rows(v1), rows(v2)
    common = [f for f in old if f in new]
    (a1, b1, c1), (a2, b2, c2) = parse_version(v1), parse_version(v2)
    bump = "major" if a2 != a1 else "minor" if b2 != b1 else "patch" if c2 != c1 else "none"
    return {
        "view": view,
        "from": v1,
        "to": v2,
        "added": [f for f in new if f not in old],
        "removed": [f for f in old if f not in new],
        "retyped": [
            {"feature": f, "from": old[f]["dtype"], "to": new[f]["dtype"]}
            for f in common
            if old[f]["dtype"] != new[f]["dtype"]
        ],
        "description_changed": [f for f in common if old[f]["description"] != new[f]["description"]],
        "definition_changed": [
            f for f in common if old[f].get("definition_hash") != new[f].get("definition_hash")
        ],
        "bump": bump,
    }


def latest_versions(catalog: pl.DataFrame) -> dict[str, str]:
    """{view: highest version in the catalog}."""
    out: dict[str, str] = {}
    for view in catalog["view"].unique().sort().to_list():
        out[view] = max(versions_of(catalog, view), key=parse_version)
    return out

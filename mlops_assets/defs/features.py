"""Feature store assets: one asset per feature view (table per major version), the catalog with its
schema-change gate, statistics, the point-in-time training dataset with its leakage gate, and the
online snapshot plus read-model exports for the serving processes.

Everything downstream of raw data follows it through declarative automation; nothing here trains.
"""

import dagster as dg
import polars as pl

from mlops_assets.defs.common import FOLLOW_UPSTREAM, OWNER_DATA, date_range, markdown_table, table_schema
from mlops_assets.defs.resources import TABLE_METADATA_KEY, WAREHOUSE_POOL
from mlops_assets.features.compute import compute_view
from mlops_assets.features.views import FEATURE_VIEWS, FeatureView, table_name

RAW = dg.AssetKey("raw_market_data")


def view_key(view: FeatureView) -> dg.AssetKey:
    return dg.AssetKey(["feature_views", view.name])


def _declared_schema(view: FeatureView) -> dg.TableSchema:
    descriptions = {f.name: f.description for f in view.features}
    descriptions.update(symbol="entity key", date="as-of date (features use rows at or before it)")
    return dg.TableSchema(columns=[
        dg.TableColumn(name=c, type=t, description=descriptions.get(c)) for c, t in view.schema().items()
    ])


def _column_lineage(view: FeatureView) -> dg.TableColumnLineage:
    deps = {f.name: [dg.TableColumnDep(asset_key=RAW, column_name=c) for c in f.inputs] for f in view.features}
    deps.update({k: [dg.TableColumnDep(asset_key=RAW, column_name=k)] for k in ("symbol", "date")})
    return dg.TableColumnLineage(deps)


def build_view_asset(view: FeatureView) -> dg.AssetsDefinition:
    @dg.asset(
        key=view_key(view),
        ins={"market": dg.AssetIn(RAW)},
        group_name="features",
        owners=[view.owner],
        kinds={"polars", "duckdb"},
        tags={tag: "" for tag in view.tags},
        pool=WAREHOUSE_POOL,
        code_version=view.version,
        automation_condition=FOLLOW_UPSTREAM,
        description=f"Feature view `{view.name}` v{view.version}: {view.description} "
                    f"Stored in `{table_name(view)}` (one table per major version).",
        metadata={
            TABLE_METADATA_KEY: table_name(view),
            "version": view.version,
            "entity": view.entity,
            "dagster/column_schema": _declared_schema(view),
            "dagster/column_lineage": _column_lineage(view),
        },
    )
    def _view(context: dg.AssetExecutionContext, market: pl.DataFrame) -> dg.Output[pl.DataFrame]:
        result = compute_view(view, market)
        for feature, reason in result.skipped:
            context.log.warning(f"{view.name}: feature {feature!r} left out: {reason}")
        skipped = {f: r for f, r in result.skipped}
        return dg.Output(result.df, metadata={
            "dagster/row_count": result.df.height,
            "dagster/column_schema": table_schema(result.df, {f.name: f.description for f in view.features}),
            "features": dg.MetadataValue.json(result.features),
            "skipped_features": dg.MetadataValue.json(skipped),
            "note": dg.MetadataValue.md(
                "All features computed." if not skipped else
                "**Left out:** " + "; ".join(f"`{f}` ({r})" for f, r in skipped.items())),
            "date_range": date_range(result.df),
            "preview": markdown_table(result.df.tail(5)),
        })

    return _view


VIEW_ASSETS = [build_view_asset(v) for v in FEATURE_VIEWS]
VIEW_KEYS = [view_key(v) for v in FEATURE_VIEWS]

defs = dg.Definitions(assets=VIEW_ASSETS)

"""Feature store assets: one asset per feature view (table per major version), the catalog with its
schema-change gate, statistics, the point-in-time training dataset with its leakage gate, and the
online snapshot plus read-model exports for the serving processes.

Everything downstream of raw data follows it through declarative automation; nothing here trains.
"""

import dagster as dg
import polars as pl

from mlops_assets.data.warehouse import frame_schema
from mlops_assets.defs.common import (
    FOLLOW_UPSTREAM,
    FOLLOW_UPSTREAM_WHEN_GATES_PASS,
    OWNER_DATA,
    date_range,
    markdown_table,
    png_markdown,
    table_schema,
)
from mlops_assets.defs.resources import (
    COMPRESSION_METADATA_KEY,
    TABLE_METADATA_KEY,
    WAREHOUSE_POOL,
    PlatformResource,
)
from mlops_assets.features import catalog as cat
from mlops_assets.features import lock, readmodels, statistics
from mlops_assets.features.compute import ViewResult, compute_view
from mlops_assets.features.datasets import build_training_dataset
from mlops_assets.features.online import online_retention, write_online_snapshot
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
            COMPRESSION_METADATA_KEY: "fast",
            "version": view.version,
            "entity": view.entity,
            "dagster/column_schema": _declared_schema(view),
            "dagster/column_lineage": _column_lineage(view),
        },
    )
    def _view(context: dg.AssetExecutionContext, platform: PlatformResource,
              market: pl.DataFrame) -> dg.Output[pl.DataFrame]:
        result = compute_view(view, market)
        stored = platform.warehouse.table_schema(table_name(view))
        violations = lock.check_table_write(stored, frame_schema(result.df), view) if stored else []
        if violations:
            raise dg.Failure(description=(
                f"{table_name(view)} not written (models trained on it keep working): "
                + "; ".join(v.message for v in violations)))
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


def _view_results(frames: dict[str, pl.DataFrame]) -> dict[str, ViewResult]:
    """ViewResults of stored view frames; declared features missing from a frame count as skipped."""
    out = {}
    for view in FEATURE_VIEWS:
        df = frames[view.name]
        skipped = [(f, "not computed: an input column is missing from the source")
                   for f in view.feature_names if f not in df.columns]
        out[view.name] = ViewResult(view=view, df=df, skipped=skipped)
    return out


VIEW_INS = {v.name: dg.AssetIn(view_key(v)) for v in FEATURE_VIEWS}
# what every feature-store asset below shares: its group, owner and the one-writer warehouse pool
FEATURE_STORE = {"group_name": "features", "owners": [OWNER_DATA], "pool": WAREHOUSE_POOL}


@dg.asset(
    ins=VIEW_INS,
    **FEATURE_STORE,
    kinds={"polars", "duckdb"},
    automation_condition=FOLLOW_UPSTREAM,
    description=(
        "The feature catalog: one row per feature and version (view, version, owner, tags, description, "
        "dtype, upstream assets, schema hash, status, created_at), with history, so a feature's versions "
        "and the diff between two are visible. Blocking check: a schema change needs the version bump the "
        "rule asks for (major for a removed or retyped column, at least minor for an added one)."
    ),
    check_specs=[dg.AssetCheckSpec(
        "schema_change_versioned", asset="feature_catalog", blocking=True,
        description="Removed/retyped columns need a major bump, added columns at least a minor bump.")],
)
def feature_catalog(context: dg.AssetExecutionContext, platform: PlatformResource, **views: pl.DataFrame):
    wh = platform.warehouse
    previous = wh.read_table("feature_catalog") if wh.has_table("feature_catalog") else None
    violations = lock.errors(lock.check_catalog_against_views(previous, FEATURE_VIEWS)) \
        if previous is not None else []
    results = _view_results(views)
    if violations:
        # keep the stored history as it was: the next run must fail again until the version is bumped
        catalog = previous
    else:
        catalog = cat.merge_history(previous, cat.catalog_rows(FEATURE_VIEWS, results))
    current = catalog.filter(pl.struct("view", "version").is_in(
        [{"view": v.name, "version": v.version} for v in FEATURE_VIEWS]))
    readmodels.export_read_model(catalog, platform.settings.readmodels_dir, "feature_catalog")
    yield dg.Output(catalog, metadata={
        "dagster/row_count": catalog.height,
        "views": dg.MetadataValue.json({v.name: v.version for v in FEATURE_VIEWS}),
        "versions_on_record": catalog.select("view", "version").unique().height,
        "current_features": markdown_table(current.select("view", "version", "feature", "dtype", "status"), 50),
    })
    yield dg.AssetCheckResult(
        check_name="schema_change_versioned",
        passed=not violations,
        description="every view's schema change carries the right version bump" if not violations
        else "; ".join(v.message for v in violations),
        metadata={"violations": dg.MetadataValue.json([v.to_dict() for v in violations])},
    )


@dg.asset(
    ins=VIEW_INS,
    **FEATURE_STORE,
    kinds={"polars", "duckdb"},
    automation_condition=FOLLOW_UPSTREAM,
    description=(
        "Per feature and view version: count, mean, median, std, min, max, percentiles, missing ratio and "
        "a histogram; plus correlations between features. Tables and plots in the UI, a read-model file "
        "for the management API."
    ),
)
def feature_statistics(context: dg.AssetExecutionContext, platform: PlatformResource, **views: pl.DataFrame):
    frames = []
    numeric_all = []
    for view in FEATURE_VIEWS:
        df = views[view.name]
        numeric = [f for f in view.feature_names if f in df.columns and df.schema[f].is_numeric()]
        numeric_all.append(df.select("symbol", "date", *numeric))
        stats = statistics.feature_statistics(df, numeric)
        frames.append(stats.with_columns(pl.lit(view.name).alias("view"), pl.lit(view.version).alias("version")))
    stats = pl.concat(frames, how="diagonal_relaxed")
    joined = numeric_all[0]
    for other in numeric_all[1:]:
        joined = joined.join(other, on=["symbol", "date"], how="full", coalesce=True)
    features = [c for c in joined.columns if c not in ("symbol", "date")]
    corr = statistics.feature_correlations(joined, features)
    out_dir = platform.settings.readmodels_dir
    readmodels.export_read_model(stats, out_dir, "feature_statistics")
    readmodels.export_read_model(corr, out_dir, "feature_correlations")
    summary_cols = [c for c in ("view", "feature", "count", "mean", "std", "min", "max", "missing_ratio")
                    if c in stats.columns]
    return dg.Output(stats, metadata={
        "dagster/row_count": stats.height,
        "summary": markdown_table(stats.select(summary_cols), 50),
        "histograms": png_markdown(statistics.histograms_png(stats), "histograms"),
        "correlations": png_markdown(statistics.correlation_png(corr), "correlations"),
    })


@dg.asset(
    ins={**VIEW_INS, "market": dg.AssetIn(RAW)},
    deps=[feature_catalog],
    **FEATURE_STORE,
    kinds={"polars", "duckdb"},
    automation_condition=FOLLOW_UPSTREAM_WHEN_GATES_PASS,
    description=(
        "Point-in-time training dataset: features at date t joined with the label from t+h (next-period "
        "direction by default), plus the forward return for backtests; a time-ordered train/validation/test "
        "split with a gap. Blocking check: features recomputed on truncated history match (no leakage)."
    ),
    metadata={"dagster/column_schema": dg.TableSchema(columns=[
        dg.TableColumn("label", "int", description="1 if close[t+h] > close[t] else 0"),
        dg.TableColumn("fwd_return", "double", description="close[t+h] / close[t] - 1"),
        dg.TableColumn("split", "string", description="train | validation | test"),
    ])},
)
def training_dataset(context: dg.AssetExecutionContext, platform: PlatformResource, market: pl.DataFrame,
                     **views: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    f = platform.settings.features
    dataset = build_training_dataset(
        [views[v.name] for v in FEATURE_VIEWS], market, horizon=f.horizon_days,
        val_frac=f.validation_fraction, test_frac=f.test_fraction, gap_days=f.gap_days)
    meta = dataset.metadata()
    readmodels.export_read_model(
        readmodels.sample_rows(dataset.df, platform.settings.features.online_sample_rows),
        platform.settings.readmodels_dir, readmodels.dataset_sample_name("training_dataset"),
        extra={"fingerprint": dataset.fingerprint, "features": dataset.features,
               "dataset_rows": dataset.df.height, "split_dates": meta["split_dates"]})
    return dg.Output(dataset.df, metadata={
        "dagster/row_count": dataset.df.height,
        "dagster/column_schema": table_schema(dataset.df),
        "fingerprint": dataset.fingerprint,
        "features": dg.MetadataValue.json(dataset.features),
        "feature_views": dg.MetadataValue.json({v.name: v.version for v in FEATURE_VIEWS}),
        "rows_per_split": dg.MetadataValue.json(meta["rows_per_split"]),
        "split_dates": dg.MetadataValue.json(meta["split_dates"]),
        "horizon_days": dataset.horizon,
        "gap_days": dataset.gap_days,
        "positive_rate": meta["positive_rate"] if meta["positive_rate"] is not None else float("nan"),
    })


@dg.asset_check(asset=training_dataset, blocking=True, additional_ins={"market": dg.AssetIn(RAW)},
                pool=WAREHOUSE_POOL,
                description="Recompute every view on history truncated at sampled dates; values must match.")
def point_in_time_correct(context: dg.AssetCheckExecutionContext, platform: PlatformResource,
                          market: pl.DataFrame) -> dg.AssetCheckResult:
    from mlops_assets.features.leakage import check_point_in_time

    n = platform.settings.features.leakage_sample_dates
    results = [check_point_in_time(view, market, sample_dates=n) for view in FEATURE_VIEWS]
    failed = [f"{r.view}: {r.reason}" for r in results if not r.passed]
    return dg.AssetCheckResult(
        passed=not failed,
        description="no look-ahead: every sampled value matches on truncated history" if not failed else
        "; ".join(failed),
        metadata={"views": dg.MetadataValue.json([r.summary() for r in results]), "sampled_dates_per_view": n},
    )


@dg.asset(
    ins=VIEW_INS,
    deps=[feature_catalog],
    **FEATURE_STORE,
    kinds={"polars", "parquet"},
    automation_condition=FOLLOW_UPSTREAM_WHEN_GATES_PASS,
    description=(
        "The online feature snapshot: the latest feature vector per entity with the feature view versions "
        "it holds, a Parquet file under $MLOPS_HOME/online swapped atomically with a version stamp. The "
        "serving app reads it in memory and reloads when the version changes."
    ),
)
def online_features(context: dg.AssetExecutionContext, platform: PlatformResource,
                    **views: pl.DataFrame) -> dg.MaterializeResult:
    s = platform.settings
    retention = online_retention(s.features.online_retention_versions, s.features.online_retention_days)
    info = write_online_snapshot([views[v.name] for v in FEATURE_VIEWS], FEATURE_VIEWS, s.online_dir,
                                 retention=retention)
    return dg.MaterializeResult(metadata={
        "snapshot_version": info.version,
        "path": dg.MetadataValue.path(str(info.path)),
        "entities": info.n_entities,
        "as_of": str(info.as_of),
        "feature_view_versions": dg.MetadataValue.json(info.feature_view_versions),
        "features": dg.MetadataValue.json(info.feature_names),
        "retention": retention.label,
    })


defs = dg.Definitions(
    assets=[*VIEW_ASSETS, feature_catalog, feature_statistics, training_dataset, online_features],
    asset_checks=[point_in_time_correct],
)

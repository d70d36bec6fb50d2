"""Ingestion: raw market data from the configured loader, bad rows quarantined.

(No `from __future__ import annotations` in asset modules: Dagster reads the context annotation.)
"""


import dagster as dg
import polars as pl

from mlops_assets.data.loaders import DataLoadError, make_loader, validate_market_data
from mlops_assets.defs.common import OWNER_DATA, date_range, markdown_table, table_schema
from mlops_assets.defs.resources import WAREHOUSE_POOL, PlatformResource


@dg.asset(
    group_name="ingestion",
    owners=[OWNER_DATA],
    kinds={"polars", "duckdb"},
    pool=WAREHOUSE_POOL,
    description=(
        "Daily OHLCV market data in the canonical schema (symbol, date, open, high, low, close, volume), "
        "from the loader named by DATA_LOADER_TYPE (synthetic by default, local files, or the feature "
        "store). Impossible rows go to the market_data_quarantine table with the reason and the values "
        "involved: missing or unparseable values, NaN, infinite or non-positive prices, high below low, "
        "an open or close outside [low, high], negative volume, a duplicate (symbol, date)."
    ),
    metadata={"source": "DATA_LOADER_TYPE / DATA_SOURCE_PATH"},
)
def raw_market_data(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.Output[pl.DataFrame]:
    settings = platform.settings
    try:
        raw = make_loader(settings).load()
    except DataLoadError as exc:
        raise dg.Failure(description=str(exc), metadata={"field": exc.field, "source": exc.source}) from None
    validated = validate_market_data(raw, source=settings.data.loader_type)
    if validated.clean.is_empty():
        raise dg.Failure(description=f"no usable rows: all {raw.height} rows were quarantined "
                                     f"({validated.quarantine_counts})")
    platform.warehouse.write_table("market_data_quarantine", validated.quarantine)
    counts = validated.quarantine_counts
    if counts:
        context.log.warning(f"quarantined {sum(counts.values())} row(s): {counts}")
    clean = validated.clean
    return dg.Output(
        clean,
        metadata={
            "dagster/row_count": clean.height,
            "dagster/column_schema": table_schema(clean),
            "symbols": clean["symbol"].n_unique(),
            "date_range": date_range(clean),
            "loader": settings.data.loader_type,
            "quarantined_rows": sum(counts.values()),
            "quarantine_reasons": dg.MetadataValue.json(counts),
            "quarantine_preview": markdown_table(
                validated.quarantine.select("symbol", "date", "reason", "detail").head(10)),
            "preview": markdown_table(clean.head(5)),
        },
    )


ingestion_job = dg.define_asset_job(
    "daily_refresh_job",
    selection=dg.AssetSelection.assets(raw_market_data),
    description="Ingest the latest market data; feature assets follow through declarative automation.",
)

daily_refresh_schedule = dg.ScheduleDefinition(
    name="daily_market_refresh",
    job=ingestion_job,
    cron_schedule="0 5 * * 1-5",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Weekdays 05:00 UTC: refresh raw market data (never trains a model).",
)

defs = dg.Definitions(assets=[raw_market_data], jobs=[ingestion_job], schedules=[daily_refresh_schedule])

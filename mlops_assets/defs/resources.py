"""Dagster resources, built from the one Settings object.

- ``duckdb``: dagster-duckdb's ``DuckDBResource`` on the warehouse file (``connection_config``:
  threads from Settings), configurable at launch. The IO manager and ``PlatformResource`` depend on
  it, so both open the same file; their writes get its connections. Reads open read-only through
  :class:`~mlops_assets.data.warehouse.Warehouse`, which the resource cannot (docs/architecture.md,
  "Packages").
- ``WarehouseIOManager``: reads and writes polars frames in the DuckDB warehouse through
  :class:`mlops_assets.data.warehouse.Warehouse` (one transaction per table, by column name, after
  comparing schemas) instead of the stock dagster-duckdb handler (delete, then positional insert).
- ``PlatformResource``: the paths and stores the assets share (MLflow, governance, online dir).
"""

# no `from __future__ import annotations`: Dagster reads ResourceDependency from the live annotations
from pathlib import Path

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from mlops_assets import stores
from mlops_assets.data.warehouse import Warehouse
from mlops_assets.settings import Settings, get_settings

WAREHOUSE_POOL = "duckdb_warehouse"
TABLE_METADATA_KEY = "warehouse/table"
COMPRESSION_METADATA_KEY = "warehouse/compression"  # "default" or "fast" (see data/warehouse.py)
PARTITION_COLUMN_KEY = "warehouse/partition_column"


def table_for(context: dg.OutputContext | dg.InputContext) -> str:
    metadata = (context.definition_metadata if isinstance(context, dg.OutputContext)
                else (context.upstream_output.definition_metadata if context.upstream_output else {})) or {}
    table = metadata.get(TABLE_METADATA_KEY)
    if isinstance(table, dg.TextMetadataValue):
        table = table.value
    return str(table) if table else "_".join(context.asset_key.path)


def warehouse_on(duckdb: DuckDBResource) -> Warehouse:
    """The warehouse in ``duckdb.database``: writes on the resource's connections, reads read-only."""
    return Warehouse(Path(duckdb.database), write_connection=duckdb.get_connection)


def duckdb_resource(settings: Settings):
    """The ``duckdb`` resource: the warehouse file and threads from Settings, changeable at launch."""
    threads = settings.data.warehouse_threads
    return DuckDBResource.configure_at_launch(
        database=str(settings.warehouse_path), connection_config={"threads": threads} if threads else {})


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Polars frames in DuckDB, one table per asset (``warehouse/table`` metadata overrides the name)."""

    duckdb: dg.ResourceDependency[DuckDBResource]

    @property
    def warehouse(self) -> Warehouse:
        return warehouse_on(self.duckdb)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, pl.DataFrame):
            raise dg.DagsterInvariantViolationError(
                f"{context.asset_key.to_user_string()}: the warehouse stores polars DataFrames, got {type(obj).__name__}")
        table = table_for(context)
        metadata = context.definition_metadata or {}
        compression = metadata.get(COMPRESSION_METADATA_KEY, "default")
        compression = str(compression.value if isinstance(compression, dg.TextMetadataValue) else compression)
        if context.has_asset_partitions:
            column = metadata.get(PARTITION_COLUMN_KEY, "partition_key")
            diff = self.warehouse.write_partition(
                table, obj, str(column), context.asset_partition_key, compression=compression)
        else:
            diff = self.warehouse.write_table(table, obj, compression=compression)
        context.add_output_metadata({
            "warehouse/table": dg.MetadataValue.text(table),
            "dagster/row_count": obj.height,
            "schema_change": dg.MetadataValue.text(diff.describe()),
        })

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        table = table_for(context)
        if context.has_asset_partitions and context.upstream_output is not None:
            column = (context.upstream_output.definition_metadata or {}).get(PARTITION_COLUMN_KEY, "partition_key")
            keys = context.asset_partition_keys
            placeholders = ", ".join("?" for _ in keys)
            return self.warehouse.read_table(table, where=f'"{column}" IN ({placeholders})', params=list(keys))
        return self.warehouse.read_table(table)


class PlatformResource(dg.ConfigurableResource):
    """Where the platform's stores live. The fields are real overrides of the one Settings object:
    each one the launchpad or a test sets replaces that setting for the run (``None`` keeps the value
    from defaults < config.yaml < environment), and every path derived from ``home`` follows it."""

    home: str | None = None
    tracking_uri: str | None = None  # None: sqlite under home (or MLFLOW_TRACKING_URI)
    governance_url: str | None = None  # None: sqlite under home (or MLOPS_GOVERNANCE_URL)
    model_name: str | None = None
    experiment_name: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    # the warehouse the IO manager writes (the ``duckdb`` resource); None: the one under ``home``
    duckdb: dg.ResourceDependency[DuckDBResource | None] = None

    @property
    def settings(self) -> Settings:
        return settings_with_overrides(get_settings(), self)

    @property
    def warehouse(self) -> Warehouse:
        return warehouse_on(self.duckdb) if self.duckdb is not None else stores.warehouse(self.settings)

    def governance(self):
        return stores.governance_store(self.settings)

    def mlflow_client(self):
        return stores.mlflow_client(self.settings)


def settings_with_overrides(base: Settings, resource: PlatformResource) -> Settings:
    """``base`` with the resource's non-empty fields applied (validated like any other setting)."""
    if all(getattr(resource, f) is None for f in ("home", "tracking_uri", "governance_url", "model_name",
                                                   "experiment_name", "openai_api_key", "openai_base_url")):
        return base
    s = base.model_copy(deep=True)
    if resource.home is not None:
        s.home = Path(resource.home)
    if resource.tracking_uri is not None:
        s.tracking_uri = resource.tracking_uri
    if resource.governance_url is not None:
        s.governance_url = resource.governance_url
    if resource.model_name is not None:
        s.model.name = resource.model_name
    if resource.experiment_name is not None:
        s.model.experiment_name = resource.experiment_name
    if resource.openai_api_key is not None:
        s.llm.api_key = resource.openai_api_key
    if resource.openai_base_url is not None:
        s.llm.base_url = resource.openai_base_url
    return s


def build_resources(settings: Settings) -> dict[str, object]:
    settings.ensure_dirs()
    duckdb = duckdb_resource(settings)
    return {
        "duckdb": duckdb,
        "io_manager": WarehouseIOManager(duckdb=duckdb),
        "platform": PlatformResource(
            duckdb=duckdb,
            home=str(settings.home),
            tracking_uri=settings.tracking_uri,
            governance_url=settings.governance_url,
            model_name=settings.model.name,
            experiment_name=settings.model.experiment_name,
            openai_api_key=dg.EnvVar("OPENAI_API_KEY") if settings.llm.api_key else None,
            openai_base_url=settings.llm.base_url,
        ),
    }

"""The specified packages where they are wired, and the measured reasons where they are not.

- dagster-duckdb: the ``duckdb`` resource (``DuckDBResource``, built from Settings) gives the IO
  manager and ``PlatformResource`` their write connections; reads stay read-only (the resource
  always opens read-write).
- dagster-mlflow: its ``mlflow_tracking`` resource keeps a process-global active MLflow run across
  Dagster runs; the platform opens its own run per materialization (docs/architecture.md, "Packages").
"""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource

from mlops_assets.data.warehouse import Warehouse
from mlops_assets.defs.resources import PlatformResource, build_resources
from mlops_assets.settings import get_settings
from mlops_assets_tests.defs.conftest import write_config

FRAME = pl.DataFrame({"symbol": ["A", "B", "C"], "close": [1.0, 2.0, 3.0], "volume": [10.0, 20.0, 30.0]})
seen: dict[str, object] = {}


@dg.asset(metadata={"warehouse/compression": "fast"})
def prices() -> pl.DataFrame:
    return FRAME.select("volume", "symbol", "close")  # another column order: stored by name


@dg.asset
def doubled(prices: pl.DataFrame, platform: PlatformResource, duckdb: DuckDBResource) -> None:
    seen["loaded"] = prices.sort("symbol")
    seen["platform_tables"] = platform.warehouse.list_tables()
    with duckdb.get_connection() as con:
        seen["threads"] = con.execute("SELECT current_setting('threads')").fetchone()[0]
        seen["database"] = con.execute("SELECT path FROM duckdb_databases() WHERE NOT internal").fetchone()[0]


@dg.asset
def summed(prices: pl.DataFrame) -> None:
    seen["loaded"] = prices


def _resources(home: Path) -> dict[str, object]:
    (home.parent / "config.yaml").unlink(missing_ok=True)
    write_config(home, {"data": {"warehouse_threads": 1}})
    get_settings.cache_clear()
    return build_resources(get_settings())


def test_a_materialization_goes_through_the_duckdb_resource(small_home: Path, tmp_path: Path) -> None:
    resources = _resources(small_home)
    result = dg.materialize([prices, doubled], resources=resources)
    assert result.success
    assert seen["loaded"].select("symbol", "close", "volume").equals(FRAME)
    assert seen["threads"] == 1  # connection_config from Settings data.warehouse_threads
    assert Path(str(seen["database"])) == small_home / "warehouse.duckdb"
    assert seen["platform_tables"] == ["prices"]
    # the launchpad moves the warehouse in one place: the IO manager and PlatformResource follow it
    elsewhere = tmp_path / "elsewhere.duckdb"
    seen.clear()
    moved = dg.materialize([prices, doubled], resources=resources, run_config={
        "resources": {"duckdb": {"config": {"database": str(elsewhere), "connection_config": {"threads": 2}}}}})
    assert moved.success
    assert Warehouse(elsewhere).read_table("prices").sort("symbol").select(FRAME.columns).equals(FRAME)
    assert seen["threads"] == 2 and Path(str(seen["database"])) == elsewhere
    assert seen["platform_tables"] == ["prices"]


def test_reads_stay_read_only_while_another_process_reads(small_home: Path) -> None:
    resources = _resources(small_home)
    assert dg.materialize([prices], resources=resources).success
    path = small_home / "warehouse.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", (f"import duckdb, time; c = duckdb.connect({str(path)!r}, read_only=True); "
                                "print('held', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        # a read-write open, which is all DuckDBResource.get_connection does, is refused at once...
        try:
            duckdb.connect(str(path)).close()
            refused = False
        except duckdb.IOException as exc:
            refused = "lock" in str(exc).lower()
        assert refused
        # ...while the IO manager's input load, read-only, shares the file with the other reader
        seen.clear()
        result = dg.materialize([prices, summed], resources=resources, selection=[summed])
        assert result.success and seen["loaded"].height == 3
    finally:
        holder.kill()
        holder.wait()


def _dagster_mlflow_experiment(workdir: str) -> None:
    """Run in a fresh process: what dagster-mlflow's resource does to a process running Dagster runs."""
    import mlflow
    from dagster_mlflow import mlflow_tracking

    observed: list[dict[str, str]] = []

    @dg.asset(required_resource_keys={"mlflow"})
    def trained(context: dg.AssetExecutionContext) -> None:
        observed.append({"dagster_run": context.run_id, "mlflow_run": mlflow.active_run().info.run_id})

    store_a, store_b = f"sqlite:///{workdir}/a.db", f"sqlite:///{workdir}/b.db"
    on_a = mlflow_tracking.configured({"experiment_name": "e", "mlflow_tracking_uri": store_a})
    first = dg.materialize([trained], resources={"mlflow": on_a})
    second = dg.materialize([trained], resources={"mlflow": on_a})
    leaked = mlflow.active_run()
    client = mlflow.MlflowClient(store_a)
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    on_b = mlflow_tracking.configured({"experiment_name": "e", "mlflow_tracking_uri": store_b})
    third = dg.materialize([trained], resources={"mlflow": on_b}, raise_on_error=False)
    failure = " ".join(e.event_specific_data.error.to_string() for e in third.all_events
                       if e.is_failure and getattr(e.event_specific_data, "error", None))
    print(json.dumps({
        "succeeded": [first.success, second.success, third.success],
        "observed": observed,
        "active_after": leaked.info.run_id if leaked else None,
        "runs": [{"id": r.info.run_id, "status": r.info.status, "dagster_run_id": r.data.tags.get("dagster_run_id")}
                 for r in runs],
        "third_failure": failure,
    }))


def test_dagster_mlflow_keeps_one_active_run_across_dagster_runs(tmp_path: Path) -> None:
    code = ("import sys; from mlops_assets_tests.defs.test_package_wiring import _dagster_mlflow_experiment; "
            "_dagster_mlflow_experiment(sys.argv[1])")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True, text=True)
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    first, second = facts["observed"]
    assert first["dagster_run"] != second["dagster_run"]
    # two Dagster runs wrote into ONE MLflow run, which is still running and still the process's active run
    assert first["mlflow_run"] == second["mlflow_run"] == facts["active_after"]
    assert facts["runs"] == [{"id": first["mlflow_run"], "status": "RUNNING", "dagster_run_id": second["dagster_run"]}]
    # a later run on another store inherits that run id and cannot start
    assert facts["succeeded"] == [True, True, False]
    assert "not found" in facts["third_failure"]

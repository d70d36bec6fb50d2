"""Warehouse writes: one transaction, by column name; a failed write keeps the previous table."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from mlops_assets.data.warehouse import Warehouse, WarehouseError


@pytest.fixture()
def wh(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "w.duckdb")


def test_write_and_read_by_name(wh: Warehouse) -> None:
    df = pl.DataFrame({"symbol": ["A", "B"], "a": [1.0, 2.0], "b": [10.0, 20.0]})
    wh.write_table("t", df)
    # same-typed columns in another order must not swap
    diff = wh.write_table("t", df.select("b", "symbol", "a"))
    back = wh.read_table("t").select("symbol", "a", "b").sort("symbol")
    assert back.equals(df.sort("symbol"))
    assert not diff.removed and not diff.retyped


def test_failed_write_keeps_previous_table(wh: Warehouse) -> None:
    old = pl.DataFrame({"symbol": ["A", "B"], "date": [date(2024, 1, 2)] * 2, "x": [1.0, 2.0]})
    wh.write_table("t", old, key_columns=("symbol", "date"))
    broken = pl.concat([old, old]).with_columns(pl.lit(9.0).alias("x"))
    with pytest.raises(WarehouseError, match="duplicate key"):
        wh.write_table("t", broken, key_columns=("symbol", "date"))
    assert wh.read_table("t").sort("symbol").equals(old)


def test_partition_replace_and_schema_guard(wh: Warehouse) -> None:
    d1, d2 = date(2024, 1, 2), date(2024, 1, 3)
    wh.write_partition("p", pl.DataFrame({"day": [d1], "v": [1.0]}), "day", d1)
    wh.write_partition("p", pl.DataFrame({"day": [d2], "v": [2.0]}), "day", d2)
    wh.write_partition("p", pl.DataFrame({"v": [5.0], "day": [d1]}), "day", d1)
    assert wh.read_table("p").sort("day")["v"].to_list() == [5.0, 2.0]
    with pytest.raises(WarehouseError, match="schema of 'p' differs"):
        wh.write_partition("p", pl.DataFrame({"day": [d1], "v": ["x"]}), "day", d1)
    assert wh.read_table("p").sort("day")["v"].to_list() == [5.0, 2.0]


def test_read_missing_table_names_it(wh: Warehouse) -> None:
    wh.write_table("t", pl.DataFrame({"a": [1]}))
    with pytest.raises(WarehouseError, match="'nope' does not exist"):
        wh.read_table("nope")


def _compressions(wh: Warehouse, table: str, column: str) -> set[str]:
    with wh.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT DISTINCT compression FROM pragma_storage_info(?) WHERE column_name = ? AND segment_type <> 'VALIDITY'",
            [table, column]).fetchall()
    return {r[0] for r in rows}


def test_fast_compression_skips_alp_and_fsst_and_keeps_the_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 300_000
    df = pl.DataFrame({
        "price": np.round(rng.uniform(10, 500, n), 2),  # decimal-like: ALP's best case
        "note": [f"free text number {i} of the tape" for i in rng.integers(0, 10**9, n)],  # FSST's case
    })
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.write_table("small", df)
    wh.write_table("quick", df, compression="fast")
    assert "ALP" in _compressions(wh, "small", "price") and "FSST" in _compressions(wh, "small", "note")
    assert not {"ALP", "ALPRD"} & _compressions(wh, "quick", "price")
    assert "FSST" not in _compressions(wh, "quick", "note")
    assert wh.read_table("quick").equals(df) and wh.read_table("small").equals(df)
    with pytest.raises(WarehouseError, match="compression: 'tiny'"):
        wh.write_table("quick", df.head(3), compression="tiny")
    assert wh.read_table("quick").height == n  # the bad call changed nothing


def _other_process_can_open(path: Path) -> bool:
    code = f"import duckdb; duckdb.connect({str(path)!r}, read_only=True).close()"
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True).returncode == 0


def test_writes_use_the_connection_factory_and_reads_stay_read_only(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    opened: list[duckdb.DuckDBPyConnection] = []

    @contextmanager
    def factory():  # shaped like DuckDBResource.get_connection: closes only when the block succeeds
        con = duckdb.connect(str(path), config={"threads": 1})
        opened.append(con)
        yield con
        con.close()

    wh = Warehouse(path, write_connection=factory)
    df = pl.DataFrame({"symbol": ["A", "B"], "x": [1.0, 2.0]})
    wh.write_table("t", df, key_columns=("symbol",), compression="fast")
    wh.append_rows("h", df)
    assert len(opened) == 2  # every write came from the factory
    assert wh.read_table("t").sort("symbol").equals(df) and wh.list_tables() == ["h", "t"]
    assert len(opened) == 2  # reads did not
    with wh.connect(read_only=True) as con, pytest.raises(duckdb.Error, match="read-only"):
        con.execute("CREATE TABLE nope AS SELECT 1")
    # a failed write is rolled back and its connection closed before the error leaves, although the
    # factory itself closes only on success: another process can open the file while the error lives
    with pytest.raises(WarehouseError, match="duplicate key") as failed:
        wh.write_table("t", pl.concat([df, df]), key_columns=("symbol",))
    assert failed.value is not None and len(opened) == 3
    assert _other_process_can_open(path)
    assert wh.read_table("t").sort("symbol").equals(df)


def test_a_factory_that_cannot_open_raises_a_warehouse_error(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    path.write_bytes(b"not a duckdb file" * 100)
    wh = Warehouse(path, write_connection=lambda: duckdb.connect(str(path)))
    with pytest.raises(WarehouseError, match="cannot open the warehouse"):
        wh.write_table("t", pl.DataFrame({"a": [1]}))

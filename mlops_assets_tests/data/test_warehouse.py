"""Warehouse writes: one transaction, by column name; a failed write keeps the previous table."""

from __future__ import annotations

from datetime import date
from pathlib import Path

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

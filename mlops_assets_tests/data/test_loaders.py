"""Loaders on good and bad files; quarantine of bad rows inside good files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from mlops_assets.data.loaders import DataLoadError, LocalDataLoader, validate_market_data
from mlops_assets.data.schema import MARKET_SCHEMA


def _yahoo_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n" + "\n".join(rows) + "\n")
    return path


def test_yahoo_folder_with_us_dates(tmp_path: Path) -> None:
    _yahoo_csv(tmp_path / "aapl.csv", ["1/2/2024,10,11,9,10.5,10.4,1000", "1/3/2024,10.5,12,10,11.5,11.4,1200"])
    _yahoo_csv(tmp_path / "MSFT.csv", ["2024-01-02,20,21,19,20.5,20.4,2000"])
    df = LocalDataLoader(tmp_path).load()
    assert df.schema == pl.Schema(MARKET_SCHEMA)
    assert sorted(df["symbol"].unique().to_list()) == ["AAPL", "MSFT"]
    aapl = df.filter(pl.col("symbol") == "AAPL").sort("date")
    assert aapl["date"].to_list() == [date(2024, 1, 2), date(2024, 1, 3)]
    # "Adj Close" must not be mistaken for "close"
    assert aapl["close"].to_list() == [10.5, 11.5]


def test_long_parquet_and_json_case_insensitive(tmp_path: Path) -> None:
    frame = pl.DataFrame({"SYMBOL": ["A", "B"], "Date": [date(2024, 1, 2)] * 2, "Close": [1.0, 2.0]})
    frame.write_parquet(tmp_path / "m.parquet")
    df = LocalDataLoader(tmp_path / "m.parquet").load()
    assert df.height == 2 and df["close"].to_list() == [1.0, 2.0]
    assert df["volume"].null_count() == 2  # optional column filled with nulls
    (tmp_path / "m.json").write_text('[{"symbol":"A","date":"2024-01-02","close":3.5}]')
    assert LocalDataLoader(tmp_path / "m.json").load()["close"].to_list() == [3.5]


def test_column_mapping(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("ticker,day,px_last\nA,2024-01-02,5\n")
    df = LocalDataLoader(tmp_path / "x.csv", column_mapping={"symbol": "ticker", "date": "day", "close": "PX_LAST"}).load()
    assert df.row(0, named=True)["close"] == 5.0 and df["symbol"].to_list() == ["A"]


def test_missing_required_column_names_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("symbol,date,open\nA,2024-01-02,1\nB,2024-01-02,2\n")
    with pytest.raises(DataLoadError, match=r"bad\.csv.*\['close'\].*2 rows"):
        LocalDataLoader(path).load()


def test_unparseable_dates_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "dates.csv"
    path.write_text("symbol,date,close\nA,2024-01-02,1\nA,not-a-date,2\nA,31/31/2024,3\n")
    with pytest.raises(DataLoadError, match=r"dates\.csv.*'date' has 2 unparseable"):
        LocalDataLoader(path).load()


def test_empty_file_and_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataLoadError, match=r"empty\.csv: empty file"):
        LocalDataLoader(path).load()
    with pytest.raises(DataLoadError, match="does not exist"):
        LocalDataLoader(tmp_path / "nope").load()


def test_bad_rows_go_to_quarantine_with_reason() -> None:
    df = pl.DataFrame(
        {"symbol": ["A", "A", "A", "B", "B"],
         "date": [date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 3), date(2024, 1, 2), date(2024, 1, 3)],
         "open": [1.0, 1.0, 1.0, 1.0, 1.0], "high": [1.0] * 5, "low": [1.0] * 5,
         "close": [1.0, 2.0, 2.1, float("nan"), -3.0], "volume": [1.0] * 5},
        schema=MARKET_SCHEMA,
    )
    out = validate_market_data(df, source="test")
    assert out.clean.height == 1 and out.clean.row(0, named=True)["date"] == date(2024, 1, 2)
    assert out.quarantine_counts == {"duplicate (symbol, date)": 2, "missing or NaN close": 1, "non-positive close": 1}
    assert set(out.quarantine["source"].to_list()) == {"test"}

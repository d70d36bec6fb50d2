"""Loaders on good and bad files; quarantine of bad rows inside good files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from mlops_assets.data.loaders import PRICE_TOLERANCE, DataLoadError, LocalDataLoader, validate_market_data
from mlops_assets.data.schema import MARKET_SCHEMA, PARSE_ERROR_COLUMN
from mlops_assets.errors import InvalidInput


def _yahoo_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n" + "\n".join(rows) + "\n")
    return path


def test_yahoo_folder_with_us_dates(tmp_path: Path) -> None:
    _yahoo_csv(tmp_path / "aapl.csv", ["1/2/2024,10,11,9,10.5,10.4,1000", "1/3/2024,10.5,12,10,11.5,11.4,1200"])
    _yahoo_csv(tmp_path / "MSFT.csv", ["2024-01-02,20,21,19,20.5,20.4,2000"])
    df = LocalDataLoader(tmp_path).load()
    assert df.schema == pl.Schema({**MARKET_SCHEMA, PARSE_ERROR_COLUMN: pl.String()})
    assert df[PARSE_ERROR_COLUMN].null_count() == df.height
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
    with pytest.raises(DataLoadError) as info:
        LocalDataLoader(path).load()
    assert isinstance(info.value, InvalidInput)
    assert info.value.field == "close" and info.value.source == str(path)
    assert "2 rows" in info.value.problem and str(info.value).startswith(str(path))


def test_missing_close_in_a_yahoo_file_is_named_once(tmp_path: Path) -> None:
    """Before: a Yahoo file without Close was reported as missing ['symbol', 'close']."""
    path = tmp_path / "GSPC.csv"
    path.write_text("Date,Open,High,Low,Adj Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n")
    with pytest.raises(DataLoadError) as info:
        LocalDataLoader(path).load()
    assert info.value.field == "close"
    assert "symbol" not in str(info.value)


def test_missing_mapped_column_is_named_by_its_source_name(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("ticker,day,last\nA,2024-01-02,5\n")
    with pytest.raises(DataLoadError) as info:
        LocalDataLoader(path, column_mapping={"symbol": "ticker", "date": "day", "close": "PX_LAST"}).load()
    assert info.value.field == "PX_LAST" and "'PX_LAST'" in info.value.problem


def test_unparseable_dates_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "dates.csv"
    path.write_text("symbol,date,close\nA,2024-01-02,1\nA,not-a-date,2\nA,31/31/2024,3\n")
    with pytest.raises(DataLoadError) as info:
        LocalDataLoader(path).load()
    assert info.value.field == "date" and info.value.problem.startswith("2 unparseable")


def test_empty_file_and_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataLoadError) as info:
        LocalDataLoader(path).load()
    assert info.value.field == "rows" and info.value.source == str(path)
    with pytest.raises(DataLoadError) as info:
        LocalDataLoader(tmp_path / "nope").load()
    assert info.value.field == "DATA_SOURCE_PATH"


def test_bad_rows_go_to_quarantine_with_reason() -> None:
    df = pl.DataFrame(
        {"symbol": ["A", "A", "A", "B", "B"],
         "date": [date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 3), date(2024, 1, 2), date(2024, 1, 3)],
         "open": [1.0, 1.0, 1.0, 1.0, 1.0], "high": [3.0] * 5, "low": [0.5] * 5,
         "close": [1.0, 2.0, 2.1, float("nan"), -3.0], "volume": [1.0] * 5},
        schema=MARKET_SCHEMA,
    )
    out = validate_market_data(df, source="test")
    assert out.clean.height == 1 and out.clean.row(0, named=True)["date"] == date(2024, 1, 2)
    assert out.quarantine_counts == {"duplicate (symbol, date)": 2, "missing or NaN close": 1, "non-positive close": 1}
    assert set(out.quarantine["source"].to_list()) == {"test"}


# -- impossible prices: each finding reproduced through a Yahoo-layout file ---------------------------

GOOD = "2024-01-02,10,11,9,10.5,10.5,1000"


@pytest.mark.parametrize(("row", "reason", "detail"), [
    ("2024-01-03,10,11,9,inf,inf,1000", "infinite close", "close=inf"),
    ("2024-01-03,n/a,11,9,10.5,10.5,1000", "unparseable open", "open=n/a"),
    ("2024-01-03,10,1l,9,10.5,10.5,1000", "unparseable high", "high=1l"),
    ("2024-01-03,10,11,9,10.5,10.5,1e3x", "unparseable volume", "volume=1e3x"),
    ("2024-01-03,10,11,9,,10.5,1000", "missing or NaN close", None),
    ("2024-01-03,10,,9,10.5,10.5,1000", "missing high", None),
    ("2024-01-03,10,9,11,10,10,1000", "high below low", "high=9.0, low=11.0"),
    ("2024-01-03,10,11,9,11.5,11.5,1000", "close outside [low, high]", "close=11.5, low=9.0, high=11.0"),
    ("2024-01-03,10,11,9,8.5,8.5,1000", "close outside [low, high]", None),
    ("2024-01-03,12,11,9,10.5,10.5,1000", "open outside [low, high]", "open=12.0, low=9.0, high=11.0"),
    ("2024-01-03,10,11,9,10.5,10.5,-5", "negative volume", "volume=-5.0"),
    ("2024-01-03,10,11,-9,10.5,10.5,1000", "non-positive low", "low=-9.0"),
])
def test_impossible_rows_are_quarantined_with_their_reason(tmp_path: Path, row: str, reason: str,
                                                          detail: str | None) -> None:
    _yahoo_csv(tmp_path / "abc.csv", [GOOD, row, "2024-01-04,10,11,9,10.5,10.5,1000"])
    out = validate_market_data(LocalDataLoader(tmp_path).load(), source="local")
    assert out.quarantine_counts == {reason: 1}
    bad = out.quarantine.row(0, named=True)
    assert bad["date"] == date(2024, 1, 3) and bad["symbol"] == "ABC" and bad["source"] == "local"
    if detail is not None:
        assert bad["detail"] == detail
    assert out.clean.height == 2 and PARSE_ERROR_COLUMN not in out.clean.columns
    assert out.clean.schema == pl.Schema(MARKET_SCHEMA)


def test_null_in_a_required_column_of_a_long_file(tmp_path: Path) -> None:
    frame = pl.DataFrame({"symbol": ["A", None, "B"], "date": [date(2024, 1, 2)] * 3, "close": [1.0, 2.0, None]})
    frame.write_parquet(tmp_path / "m.parquet")
    out = validate_market_data(LocalDataLoader(tmp_path / "m.parquet").load())
    assert out.quarantine_counts == {"missing symbol": 1, "missing or NaN close": 1}
    assert out.clean["symbol"].to_list() == ["A"]


def test_absent_optional_columns_quarantine_nothing(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("symbol,date,close,volume\nA,2024-01-02,5,\nA,2024-01-03,6,\n")
    out = validate_market_data(LocalDataLoader(tmp_path / "x.csv").load())
    assert out.quarantine.is_empty() and out.clean.height == 2


def test_float_noise_within_the_stated_tolerance_is_kept() -> None:
    high = 1248.810059
    noisy, wrong = high * (1 + PRICE_TOLERANCE / 10), high * (1 + PRICE_TOLERANCE * 10)
    df = pl.DataFrame({"symbol": ["A", "A"], "date": [date(2024, 1, 2), date(2024, 1, 3)], "open": [1240.0] * 2,
                       "high": [high] * 2, "low": [1219.1] * 2, "close": [noisy, wrong], "volume": [1.0] * 2},
                      schema=MARKET_SCHEMA)
    out = validate_market_data(df)
    assert out.clean["date"].to_list() == [date(2024, 1, 2)]
    assert out.quarantine_counts == {"close outside [low, high]": 1}


def test_a_slice_of_real_prices_loads_like_any_yahoo_folder(tmp_path: Path) -> None:
    """The shipped S&P 500 and NASDAQ prices, written as a user's folder of Yahoo exports."""
    from mlops_assets.data.real import real_prices, write_yahoo_folder

    files = write_yahoo_folder(tmp_path, start=date(2008, 9, 1), end=date(2008, 12, 31))
    assert sorted(p.name for p in files) == ["GSPC.csv", "IXIC.csv"]
    out = validate_market_data(LocalDataLoader(tmp_path).load(), source="local")
    expected = real_prices(start=date(2008, 9, 1), end=date(2008, 12, 31))
    assert out.quarantine.is_empty()
    assert out.clean.height == sum(df.height for df in expected.values())
    gspc = out.clean.filter(pl.col("symbol") == "GSPC")
    assert gspc["close"].to_list() == expected["GSPC"]["Close"].to_list()
    assert gspc["date"].min() == date(2008, 9, 2)  # the first trading day of the slice (Sept 1 was Labor Day)


def test_all_real_prices_pass_validation(tmp_path: Path) -> None:
    """1999-2018, both indexes: no row is impossible (IXIC has two days of zero volume, which is kept)."""
    from mlops_assets.data.real import write_yahoo_folder

    write_yahoo_folder(tmp_path)
    out = validate_market_data(LocalDataLoader(tmp_path).load(), source="local")
    assert out.quarantine.is_empty(), out.quarantine_counts
    assert out.clean.height == 2 * 5031
    assert out.clean.filter(pl.col("volume") == 0).height == 2

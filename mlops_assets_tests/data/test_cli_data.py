"""``mlops data sample-real``: the shipped real prices as a folder the local loader reads."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from mlops_assets.cli import app
from mlops_assets.data.loaders import LocalDataLoader, validate_market_data

runner = CliRunner()


def test_sample_real_writes_a_yahoo_folder_the_loader_reads(tmp_path: Path) -> None:
    out = tmp_path / "prices"
    result = runner.invoke(app, ["data", "sample-real", "--out", str(out), "--symbols", "gspc,IXIC",
                                 "--start", "2018-11-01", "--end", "2018-12-31"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["GSPC.csv", "IXIC.csv"]
    assert "2018-11-01 .. 2018-12-31" in result.output and "DATA_LOADER_TYPE=local" in result.output
    header = (out / "GSPC.csv").read_text().splitlines()[0]
    assert header == "Date,Open,High,Low,Close,Adj Close,Volume"
    validated = validate_market_data(LocalDataLoader(out).load())
    assert validated.quarantine.is_empty()
    assert set(validated.clean["symbol"]) == {"GSPC", "IXIC"}
    assert validated.clean["date"].min() == date(2018, 11, 1) and validated.clean["date"].max() == date(2018, 12, 31)


def test_one_symbol_and_the_repeated_option(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "sample-real", "--out", str(tmp_path / "one"), "--symbols", "IXIC",
                                 "--start", "2018-12-01"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["IXIC.csv"]
    # December 2018: 21 weekdays, less the 5th (national day of mourning) and Christmas
    assert pl.read_csv(tmp_path / "one" / "IXIC.csv").height == 19
    result = runner.invoke(app, ["data", "sample-real", "--out", str(tmp_path / "two"), "--symbols", "IXIC",
                                 "--symbols", "GSPC", "--start", "2018-12-01"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["GSPC.csv", "IXIC.csv"]


def test_clear_errors_name_the_option(tmp_path: Path) -> None:
    cases = {
        ("--symbols", "DJI"): "symbols: unknown ['DJI']",
        ("--start", "2018-13-01"): "start: '2018-13-01' is not a date",
        ("--start", "2020-01-01"): "no GSPC prices between 2020-01-01",
        ("--start", "2018-02-01", "--end", "2018-01-01"): "start: 2018-02-01 is after end 2018-01-01",
    }
    for args, message in cases.items():
        result = runner.invoke(app, ["data", "sample-real", "--out", str(tmp_path / "o"), *args])
        assert result.exit_code != 0 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["data", "sample-real", "--out", str(blocker)])
    assert result.exit_code != 0 and "is not a folder" in result.output

"""Real daily prices that ship inside a public package, written as a folder of Yahoo Finance exports.

``arch`` ships the S&P 500 and the NASDAQ composite, daily OHLCV from 1999-01-04 to 2018-12-31, under
``arch/data/`` (gzipped CSV in Yahoo's layout: ``Date,Open,High,Low,Close,Adj Close,Volume``). Nothing
is downloaded: :func:`write_yahoo_folder` copies them into a folder that :class:`LocalDataLoader`
reads like any other folder of Yahoo exports (one file per symbol, the symbol is the file name).
"""

from __future__ import annotations

import datetime as dt
import gzip
import importlib.resources
from pathlib import Path

import polars as pl

from mlops_assets.errors import InvalidInput

# symbol (the file name a Yahoo export would have) -> the data set's folder under arch/data/
REAL_SERIES: dict[str, str] = {"GSPC": "sp500", "IXIC": "nasdaq"}


def _raw_csv(series: str) -> bytes:
    try:
        resource = importlib.resources.files("arch.data") / series / f"{series}.csv.gz"
        return gzip.decompress(resource.read_bytes())
    except ModuleNotFoundError as exc:  # pragma: no cover - arch is a declared dependency
        raise InvalidInput("arch", ["is not installed; `pip install arch` ships the real prices"]) from exc


def real_prices(symbols: list[str] | None = None, start: dt.date | None = None,
                end: dt.date | None = None) -> dict[str, pl.DataFrame]:
    """The shipped real daily prices, per symbol, in Yahoo's column layout (``Date`` as a date)."""
    wanted = list(REAL_SERIES) if not symbols else [s.upper() for s in symbols]
    unknown = [s for s in wanted if s not in REAL_SERIES]
    if unknown:
        raise InvalidInput("symbols", [f"unknown {unknown}; the shipped series are {sorted(REAL_SERIES)}"])
    if start is not None and end is not None and start > end:
        raise InvalidInput("start", [f"{start} is after end {end}"])
    out: dict[str, pl.DataFrame] = {}
    for symbol in wanted:
        df = pl.read_csv(_raw_csv(REAL_SERIES[symbol]), try_parse_dates=False)
        df = df.with_columns(pl.col("Date").str.strptime(pl.Date, "%m/%d/%Y")).sort("Date")
        if start is not None:
            df = df.filter(pl.col("Date") >= start)
        if end is not None:
            df = df.filter(pl.col("Date") <= end)
        if df.is_empty():
            raise InvalidInput("start", [f"no {symbol} prices between {start} and {end} (data: 1999-2018)"])
        out[symbol] = df
    return out


def write_yahoo_folder(out: Path | str, symbols: list[str] | None = None, start: dt.date | None = None,
                       end: dt.date | None = None) -> list[Path]:
    """Write one Yahoo-layout CSV per symbol (``<out>/<SYMBOL>.csv``, ISO dates); returns the files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidInput("out", [f"{out} exists and is not a folder"])
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for symbol, df in real_prices(symbols, start, end).items():
        path = out / f"{symbol}.csv"
        tmp = path.with_suffix(".csv.tmp")
        df.with_columns(pl.col("Date").dt.strftime("%Y-%m-%d")).write_csv(tmp)
        tmp.replace(path)
        written.append(path)
    return written

"""The canonical market schema every data loader returns.

One long-format table, one row per (symbol, date). Only ``symbol``, ``date`` and ``close`` are
required; ``open``, ``high``, ``low`` and ``volume`` are used when present. A loader may add
:data:`PARSE_ERROR_COLUMN`; validation removes it.
"""

from __future__ import annotations

import polars as pl

REQUIRED_COLUMNS: tuple[str, ...] = ("symbol", "date", "close")
OPTIONAL_COLUMNS: tuple[str, ...] = ("open", "high", "low", "volume")
MARKET_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "date": pl.Date(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}
# Loaders of text files add this column: for each row, the source cells that could not be parsed as
# numbers (``"open='n/a'"``), or null. :func:`validate_market_data` quarantines those rows and drops it.
PARSE_ERROR_COLUMN = "parse_error"
ENTITY_KEY = "symbol"
TIME_KEY = "date"

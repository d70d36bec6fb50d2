"""The canonical market schema every data loader returns.

One long-format table, one row per (symbol, date). Only ``symbol``, ``date`` and ``close`` are
required; ``open``, ``high``, ``low`` and ``volume`` are used when present.
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
ENTITY_KEY = "symbol"
TIME_KEY = "date"

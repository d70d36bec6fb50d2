"""Data loaders: each returns a polars DataFrame in the canonical market schema.

``DATA_LOADER_TYPE`` picks one: ``synthetic`` (default, generated), ``local``
(:class:`LocalDataLoader`: Parquet, CSV or JSON files, including a folder of Yahoo Finance
per-symbol CSV exports) or ``feature_store`` (:class:`FeatureStoreDataLoader`: a feature view or
training dataset from the offline store, for code that runs outside Dagster).

A file that cannot be used at all (missing required column, unparseable dates, empty) raises
:class:`DataLoadError` (an :class:`~mlops_assets.errors.InvalidInput`) naming the file, the column by
the name it has in the file, and the count. Rows that are bad inside a good file are separated by
:func:`validate_market_data` into a quarantine frame with the reason and the offending values:
missing or unparseable values, NaN, infinite or non-positive prices, ``high < low``, an open or close
outside ``[low, high]``, negative volume, a duplicate ``(symbol, date)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl

from mlops_assets.data.schema import MARKET_SCHEMA, OPTIONAL_COLUMNS, PARSE_ERROR_COLUMN, REQUIRED_COLUMNS
from mlops_assets.errors import InvalidInput

SUPPORTED_SUFFIXES = {".parquet", ".pq", ".csv", ".json", ".jsonl", ".ndjson"}
PRICE_COLUMNS = ("open", "high", "low", "close")
# Yahoo Finance exports: Date,Open,High,Low,Close,Adj Close,Volume (the symbol is the file name)
YAHOO_COLUMNS = {"date", "open", "high", "low", "close", "adj close", "volume"}


# Relative tolerance of the OHLC consistency checks (high >= low, low <= open/close <= high). Exports
# often carry float32 values printed with 6 decimals (1228.099976 for 1228.1), whose relative error is
# below 1.2e-7 (float32 epsilon); one part per million absorbs that with margin and still catches
# every real inconsistency (0.001 on an index at 1000, a hundredth of a cent on a $10 stock).
PRICE_TOLERANCE = 1e-6


class DataLoadError(InvalidInput):
    """A source cannot be loaded at all: ``field`` is the column (as the file names it) or the setting,
    ``source`` the file; ``str()`` starts with the file."""

    def __init__(self, field: str, reasons: str | list[str], hint: str = "", source: Path | str | None = None) -> None:
        self.source = str(source) if source is not None else ""
        super().__init__(field, reasons, hint)

    def __str__(self) -> str:
        return f"{self.source}: {super().__str__()}" if self.source else super().__str__()


class DataLoader(Protocol):
    def load(self) -> pl.DataFrame: ...


@dataclass(frozen=True)
class ValidatedData:
    clean: pl.DataFrame
    quarantine: pl.DataFrame  # canonical columns + "reason" + "source"

    @property
    def quarantine_counts(self) -> dict[str, int]:
        if self.quarantine.is_empty():
            return {}
        counts = self.quarantine.group_by("reason").len().sort("reason")
        return dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True))


@dataclass
class LocalDataLoader:
    """Load market data from a file or a folder of files (Parquet, CSV, JSON).

    ``column_mapping`` maps canonical names to the names used in the files (``{"close": "px_last"}``);
    without it, names match the canonical ones case-insensitively (``Adj Close`` is not ``close``).
    A file without a symbol column but with a date and a price column is one symbol's file (the
    Yahoo Finance layout): the symbol is the file name. ``load()`` returns the canonical columns plus
    :data:`~mlops_assets.data.schema.PARSE_ERROR_COLUMN`, which :func:`validate_market_data` reads.
    """

    path: Path
    column_mapping: dict[str, str] = field(default_factory=dict)

    def files(self) -> list[Path]:
        path = Path(self.path)
        if not path.exists():
            raise DataLoadError("DATA_SOURCE_PATH", [f"{path} does not exist"])
        if path.is_file():
            return [path]
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
        if not files:
            raise DataLoadError("DATA_SOURCE_PATH", [f"no Parquet, CSV or JSON files in the folder {path}"])
        return files

    def load(self) -> pl.DataFrame:
        frames = [self.load_file(p) for p in self.files()]
        return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]

    def load_file(self, path: Path) -> pl.DataFrame:
        raw = _read_any(path)
        if raw.height == 0:
            raise DataLoadError("rows", ["empty file (0 rows)"], source=path)
        df = self._canonical_columns(raw, path)
        return _coerce(df, path)

    def _canonical_columns(self, raw: pl.DataFrame, path: Path) -> pl.DataFrame:
        by_lower = {c.strip().lower(): c for c in raw.columns}
        mapping = {k.lower(): v for k, v in self.column_mapping.items()}
        selected: dict[str, pl.Expr] = {}
        for canonical in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS):
            source = mapping.get(canonical, canonical)
            actual = by_lower.get(source.strip().lower())
            if actual is not None:
                selected[canonical] = pl.col(actual)
        prices = {mapping.get(c, c).strip().lower() for c in PRICE_COLUMNS} | {"adj close"}
        if "symbol" not in selected and "symbol" not in mapping and "date" in selected and prices & set(by_lower):
            # a per-symbol file (the Yahoo Finance layout): the symbol is the file name
            selected["symbol"] = pl.lit(path.stem.upper())
        missing = [mapping.get(c, c) for c in REQUIRED_COLUMNS if c not in selected]
        if missing:
            names = ", ".join(repr(m) for m in missing)
            raise DataLoadError(
                ",".join(missing),
                [(f"missing required column {names} (matched case-insensitively) in all {raw.height} rows; "
                  f"found {raw.columns}")],
                hint="map it with data.column_mapping in the config file", source=path,
            )
        return raw.select([expr.alias(name) for name, expr in selected.items()])


def _read_any(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pl.read_parquet(path)
        if suffix == ".csv":
            return pl.read_csv(path, infer_schema_length=0)  # all strings: we parse ourselves
        if suffix == ".json":
            return pl.read_json(path)
        if suffix in {".jsonl", ".ndjson"}:
            return pl.read_ndjson(path)
    except pl.exceptions.NoDataError:
        return pl.DataFrame()
    except Exception as exc:  # a corrupt file: name it
        raise DataLoadError("file", [f"cannot be read as {suffix[1:]}: {exc}"], source=path) from exc
    raise DataLoadError("file", [f"unsupported file type {suffix!r}; use one of {sorted(SUPPORTED_SUFFIXES)}"],
                        source=path)


def _parse_dates(col: pl.Series) -> pl.Series:
    if col.dtype == pl.Date:
        return col
    if col.dtype == pl.Datetime:
        return col.dt.date()
    text = col.cast(pl.String).str.strip_chars()
    iso = text.str.to_date("%Y-%m-%d", strict=False)
    iso_time = text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    us = text.str.to_date("%m/%d/%Y", strict=False)
    return iso.fill_null(iso_time).fill_null(us)


def _coerce(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Canonical types; unparseable numbers become nulls, named per row in :data:`PARSE_ERROR_COLUMN`."""
    dates = _parse_dates(df["date"])
    bad_dates = int((dates.is_null() & df["date"].is_not_null()).sum() + df["date"].is_null().sum())
    if bad_dates:
        example = df.filter(dates.is_null())["date"].head(3).to_list()
        raise DataLoadError("date", [f"{bad_dates} unparseable value(s) of {df.height} (e.g. {example})"],
                            hint="use ISO YYYY-MM-DD or US M/D/YYYY", source=path)
    out = df.with_columns(dates.alias("date"), pl.col("symbol").cast(pl.String).str.strip_chars())
    numeric = [c for c in (*PRICE_COLUMNS, "volume") if c in out.columns]
    problems: list[pl.Expr] = []
    for c in numeric:
        if out[c].dtype == pl.String:
            text = out[c].str.strip_chars()
            parsed = text.cast(pl.Float64, strict=False)
            bad = parsed.is_null() & text.is_not_null() & (text != "")
        else:
            text = out[c].cast(pl.String)
            parsed = out[c].cast(pl.Float64, strict=False)
            bad = parsed.is_null() & out[c].is_not_null()
        n_bad = int(bad.sum())
        if n_bad and n_bad == out.height:
            example = text.head(3).to_list()
            raise DataLoadError(c, [f"no numeric values ({n_bad} of {out.height} unparseable, e.g. {example})"],
                                source=path)
        problems.append(pl.when(pl.lit(bad)).then(pl.lit(f"{c}=") + pl.lit(text).str.slice(0, 40)))
        out = out.with_columns(parsed.alias(c))
    for c in MARKET_SCHEMA:
        if c not in out.columns:
            out = out.with_columns(pl.lit(None, dtype=MARKET_SCHEMA[c]).alias(c))
    parse_error = pl.concat_str(problems, separator="; ", ignore_nulls=True) if problems else pl.lit("")
    return out.select(
        *[pl.col(c).cast(t) for c, t in MARKET_SCHEMA.items()],
        pl.when(parse_error != "").then(parse_error).otherwise(None).cast(pl.String).alias(PARSE_ERROR_COLUMN),
    )


_NO_DETAIL = pl.lit(None, dtype=pl.String)


def _fmt(c: str) -> pl.Expr:
    return pl.lit(f"{c}=") + pl.col(c).cast(pl.String)


def _below(a: str, b: str) -> pl.Expr:
    """``a < b`` beyond :data:`PRICE_TOLERANCE` (relative to ``b``)."""
    return pl.col(a) < pl.col(b) - PRICE_TOLERANCE * pl.col(b).abs()


def _row_rules(df: pl.DataFrame) -> list[tuple[pl.Expr, pl.Expr, pl.Expr]]:
    """(condition, reason, detail) per rule, in the order they are tried: a row gets the first that holds."""
    # an optional column counts as present when the source filled it in for at least one row
    present = [c for c in (*PRICE_COLUMNS, "volume") if c in df.columns and df[c].null_count() < df.height]
    prices = [c for c in PRICE_COLUMNS if c in present]
    rules: list[tuple[pl.Expr, pl.Expr, pl.Expr]] = [
        (pl.col("symbol").is_null() | (pl.col("symbol") == ""), pl.lit("missing symbol"), _NO_DETAIL),
        (pl.col("date").is_null(), pl.lit("missing date"), _NO_DETAIL),
    ]
    if PARSE_ERROR_COLUMN in df.columns:
        rules.append((pl.col(PARSE_ERROR_COLUMN).is_not_null(),
                      pl.lit("unparseable ") + pl.col(PARSE_ERROR_COLUMN).str.extract(r"^(\w+)=", 1),
                      pl.col(PARSE_ERROR_COLUMN)))
    rules.append((pl.col("close").is_null() | pl.col("close").is_nan(), pl.lit("missing or NaN close"), _fmt("close")))
    for c in present:
        rules.append((pl.col(c).is_null(), pl.lit(f"missing {c}"), _NO_DETAIL))
    for c in prices:
        rules += [(pl.col(c).is_nan(), pl.lit(f"NaN {c}"), _fmt(c)),
                  (pl.col(c).is_infinite(), pl.lit(f"infinite {c}"), _fmt(c)),
                  (pl.col(c) <= 0, pl.lit(f"non-positive {c}"), _fmt(c))]
    if "volume" in present:
        rules += [(pl.col("volume").is_nan() | pl.col("volume").is_infinite(), pl.lit("NaN or infinite volume"),
                   _fmt("volume")),
                  (pl.col("volume") < 0, pl.lit("negative volume"), _fmt("volume"))]
    if {"high", "low"} <= set(prices):
        bounds = pl.lit(", ") + _fmt("low") + pl.lit(", ") + _fmt("high")
        rules.append((_below("high", "low"), pl.lit("high below low"), _fmt("high") + pl.lit(", ") + _fmt("low")))
        for c in ("close", "open"):
            if c in prices:
                rules.append((_below(c, "low") | _below("high", c), pl.lit(f"{c} outside [low, high]"),
                              _fmt(c) + bounds))
    rules.append((pl.struct("symbol", "date").is_duplicated(), pl.lit("duplicate (symbol, date)"), _NO_DETAIL))
    return rules


def validate_market_data(df: pl.DataFrame, source: str = "") -> ValidatedData:
    """Split rows into clean and quarantined; each quarantined row has a ``reason`` (the first rule it
    breaks), a ``detail`` (the values involved) and the ``source``. The clean frame is sorted and has
    the canonical columns only."""
    rules = _row_rules(df)
    reason: pl.Expr | None = None
    detail: pl.Expr | None = None
    for condition, why, values in rules:
        reason = (pl.when(condition) if reason is None else reason.when(condition)).then(why)  # type: ignore[union-attr]
        detail = (pl.when(condition) if detail is None else detail.when(condition)).then(values)  # type: ignore[union-attr]
    tagged = df.with_columns(reason.otherwise(None).alias("reason"),  # type: ignore[union-attr]
                             detail.otherwise(None).alias("detail"))  # type: ignore[union-attr]
    if PARSE_ERROR_COLUMN in tagged.columns:
        tagged = tagged.drop(PARSE_ERROR_COLUMN)
    clean = tagged.filter(pl.col("reason").is_null()).drop("reason", "detail").sort("symbol", "date")
    quarantine = tagged.filter(pl.col("reason").is_not_null()).with_columns(pl.lit(source).alias("source"))
    return ValidatedData(clean=clean, quarantine=quarantine)


@dataclass
class SyntheticDataLoader:
    n_symbols: int = 50
    n_days: int = 1000
    seed: int = 42

    def load(self) -> pl.DataFrame:
        from mlops_assets.data.synthetic import generate_market_data

        return generate_market_data(n_symbols=self.n_symbols, n_days=self.n_days, seed=self.seed)


@dataclass
class FeatureStoreDataLoader:
    """Read a feature view table or a training dataset from the offline store (DuckDB).

    For code that runs outside Dagster (notebooks, scripts). It opens the warehouse read-only, so it
    cannot run while a Dagster run holds the file.
    """

    warehouse_path: Path
    table: str

    def load(self) -> pl.DataFrame:
        from mlops_assets.data.warehouse import Warehouse

        return Warehouse(self.warehouse_path).read_table(self.table)


def make_loader(settings) -> DataLoader:  # settings: mlops_assets.settings.Settings
    """The loader that ``DATA_LOADER_TYPE`` names."""
    data = settings.data
    if data.loader_type == "synthetic":
        return SyntheticDataLoader(n_symbols=data.n_symbols, n_days=data.n_days, seed=data.seed)
    if data.loader_type == "local":
        return LocalDataLoader(path=data.source_path, column_mapping=data.column_mapping)
    if data.loader_type == "feature_store":
        if not data.feature_store_table:
            raise DataLoadError("data.feature_store_table", ["required when DATA_LOADER_TYPE is feature_store"])
        return FeatureStoreDataLoader(settings.warehouse_path, data.feature_store_table)
    raise DataLoadError("DATA_LOADER_TYPE", [f"unknown loader {data.loader_type!r}"])

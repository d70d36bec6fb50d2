"""Data loaders: each returns a polars DataFrame in the canonical market schema.

``DATA_LOADER_TYPE`` picks one: ``synthetic`` (default, generated), ``local``
(:class:`LocalDataLoader`: Parquet, CSV or JSON files, including a folder of Yahoo Finance
per-symbol CSV exports) or ``feature_store`` (:class:`FeatureStoreDataLoader`: a feature view or
training dataset from the offline store, for code that runs outside Dagster).

A file that cannot be used at all (missing required column, unparseable dates, empty) raises
:class:`DataLoadError` naming the file, the column and the count. Rows that are bad inside a good
file are separated by :func:`validate_market_data` into a quarantine frame with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl

from mlops_assets.data.schema import MARKET_SCHEMA, OPTIONAL_COLUMNS, REQUIRED_COLUMNS

SUPPORTED_SUFFIXES = {".parquet", ".pq", ".csv", ".json", ".jsonl", ".ndjson"}
PRICE_COLUMNS = ("open", "high", "low", "close")
# Yahoo Finance exports: Date,Open,High,Low,Close,Adj Close,Volume (the symbol is the file name)
YAHOO_COLUMNS = {"date", "open", "high", "low", "close", "adj close", "volume"}


class DataLoadError(ValueError):
    """A source file cannot be loaded; the message names the file, the column and the count."""


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
    """

    path: Path
    column_mapping: dict[str, str] = field(default_factory=dict)

    def files(self) -> list[Path]:
        path = Path(self.path)
        if not path.exists():
            raise DataLoadError(f"{path}: does not exist (DATA_SOURCE_PATH)")
        if path.is_file():
            return [path]
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
        if not files:
            raise DataLoadError(f"{path}: no Parquet, CSV or JSON files in this folder")
        return files

    def load(self) -> pl.DataFrame:
        frames = [self.load_file(p) for p in self.files()]
        return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]

    def load_file(self, path: Path) -> pl.DataFrame:
        raw = _read_any(path)
        if raw.height == 0:
            raise DataLoadError(f"{path}: empty file (0 rows)")
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
        if "symbol" not in selected and set(by_lower) >= {"date", "close"} and "symbol" not in mapping:
            # a per-symbol file (the Yahoo Finance layout): the symbol is the file name
            selected["symbol"] = pl.lit(path.stem.upper())
        missing = [c for c in REQUIRED_COLUMNS if c not in selected]
        if missing:
            raise DataLoadError(
                f"{path}: missing required column(s) {missing} in all {raw.height} rows; "
                f"found {raw.columns}. Map them with data.column_mapping in the config file."
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
        raise DataLoadError(f"{path}: cannot be read as {suffix[1:]}: {exc}") from exc
    raise DataLoadError(f"{path}: unsupported file type {suffix!r}; use one of {sorted(SUPPORTED_SUFFIXES)}")


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
    dates = _parse_dates(df["date"])
    bad_dates = int((dates.is_null() & df["date"].is_not_null()).sum() + df["date"].is_null().sum())
    if bad_dates:
        example = df.filter(dates.is_null())["date"].head(3).to_list()
        raise DataLoadError(
            f"{path}: column 'date' has {bad_dates} unparseable value(s) of {df.height} (e.g. {example}); "
            "use ISO YYYY-MM-DD or US M/D/YYYY"
        )
    out = df.with_columns(dates.alias("date"), pl.col("symbol").cast(pl.String).str.strip_chars())
    numeric = [c for c in (*PRICE_COLUMNS, "volume") if c in out.columns]
    for c in numeric:
        parsed = out[c].cast(pl.Float64, strict=False)
        bad = int((parsed.is_null() & out[c].is_not_null() & (out[c].cast(pl.String) != "")).sum())
        if bad == out.height:
            raise DataLoadError(f"{path}: column {c!r} has no numeric values ({bad} of {out.height} unparseable)")
        out = out.with_columns(parsed.alias(c))
    for c in MARKET_SCHEMA:
        if c not in out.columns:
            out = out.with_columns(pl.lit(None, dtype=MARKET_SCHEMA[c]).alias(c))
    return out.select([pl.col(c).cast(t) for c, t in MARKET_SCHEMA.items()])


def validate_market_data(df: pl.DataFrame, source: str = "") -> ValidatedData:
    """Split rows into clean and quarantined (with a reason each); the clean frame is sorted."""
    present_prices = [c for c in PRICE_COLUMNS if c in df.columns and df[c].null_count() < df.height]
    reason = pl.when(pl.col("symbol").is_null() | (pl.col("symbol") == "")).then(pl.lit("missing symbol"))
    reason = reason.when(pl.col("close").is_null() | pl.col("close").is_nan()).then(pl.lit("missing or NaN close"))
    for c in present_prices:
        reason = reason.when(pl.col(c).is_nan()).then(pl.lit(f"NaN {c}"))
        reason = reason.when(pl.col(c) <= 0).then(pl.lit(f"non-positive {c}"))
    if "volume" in df.columns:
        reason = reason.when(pl.col("volume") < 0).then(pl.lit("negative volume"))
    reason = reason.when(pl.struct("symbol", "date").is_duplicated()).then(pl.lit("duplicate (symbol, date)"))
    tagged = df.with_columns(reason.otherwise(None).alias("reason"))
    clean = tagged.filter(pl.col("reason").is_null()).drop("reason").sort("symbol", "date")
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
            raise DataLoadError("data.feature_store_table: required when DATA_LOADER_TYPE is feature_store")
        return FeatureStoreDataLoader(settings.warehouse_path, data.feature_store_table)
    raise DataLoadError(f"DATA_LOADER_TYPE: unknown loader {data.loader_type!r}")

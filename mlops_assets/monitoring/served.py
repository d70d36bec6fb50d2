"""The served-prediction log: Parquet segments written by the inference app, read back for drift.

The inference app (``serving/predlog.py``) appends every prediction to an in-memory buffer and a
background thread closes a *segment* every N rows or T seconds (and at shutdown): the rows are
written to a hidden temporary file (``.pred-....parquet.tmp``) and then renamed into place, so a
file named ``pred-*.parquet`` is always complete ("closed"). File names carry the worker's start
time, its pid and a sequence number, so several workers never write the same name, and a reader
may take every closed segment at any time.

One row per served instance (a batch request gives one row per instance, ``row`` numbers them):
``SEGMENT_SCHEMA`` below, where ``feature_names``/``feature_values`` are the exact values fed to
the model, in the model's feature order (a missing value, imputed by the model, is null).
:func:`read_closed_segments` turns them into one Float64 column per feature (a name that clashes
with a log column gets the ``feature_`` prefix) and adds the ``segment`` name, so an ingesting
asset can remember which segments it already took.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from mlops_assets.data import segments

from mlops_assets.errors import MessageInput

SEGMENT_PREFIX = "pred-"
SHADOW_PREFIX = "shadow-"  # the shadow model's rows (same request ids, variant "shadow"): a sibling stream
SEGMENT_SUFFIX = ".parquet"
NAMES_COLUMN = "feature_names"
VALUES_COLUMN = "feature_values"
REQUEST_FEATURES_COLUMN = "request_features"  # per row: the feature names the request itself supplied
SEGMENT_COLUMN = "segment"
FEATURE_PREFIX = "feature_"

SEGMENT_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "row": pl.Int32(),
    "ts": pl.Datetime("us", "UTC"),
    "entity": pl.String(),
    "model_name": pl.String(),
    "model_version": pl.String(),
    "alias": pl.String(),
    "variant": pl.String(),
    "snapshot_version": pl.String(),
    "prediction": pl.Float64(),
    "probability": pl.Float64(),
    "latency_ms": pl.Float64(),
    NAMES_COLUMN: pl.List(pl.String()),
    VALUES_COLUMN: pl.List(pl.Float64()),
    REQUEST_FEATURES_COLUMN: pl.List(pl.String()),
}


class ServedLogError(MessageInput):
    """The prediction log cannot be read; the message names the directory or file."""
    subject = "prediction_log"


def write_segment(frame: pl.DataFrame, log_dir: str | Path, name: str) -> Path:
    """Write ``frame`` (``SEGMENT_SCHEMA``) as the closed segment ``name``: temp file, fsync, rename."""
    try:
        return segments.write_segment(frame, log_dir, name, SEGMENT_SCHEMA)
    except segments.SegmentError as exc:
        raise ServedLogError(str(exc)) from None


def list_closed_segments(log_dir: str | Path, prefix: str = SEGMENT_PREFIX) -> list[Path]:
    """Closed segments, oldest name first (temporary files are never listed); ``prefix``
    :data:`SHADOW_PREFIX` lists the shadow stream instead of the served one."""
    directory = Path(log_dir)
    if not directory.exists():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.name.startswith(prefix) and p.name.endswith(SEGMENT_SUFFIX))


def _empty_frame() -> pl.DataFrame:
    schema = {c: t for c, t in SEGMENT_SCHEMA.items() if c not in (NAMES_COLUMN, VALUES_COLUMN)}
    return pl.DataFrame(schema={**schema, SEGMENT_COLUMN: pl.String()})


def expand_features(frame: pl.DataFrame) -> pl.DataFrame:
    """Replace the name/value lists by one Float64 column per feature (clashing names get a prefix).

    Rows of models with other feature lists get nulls in the columns they do not have.
    """
    if NAMES_COLUMN not in frame.columns:
        return frame
    if frame.height == 0:
        return frame.drop(NAMES_COLUMN, VALUES_COLUMN)
    key = "__feature_key"
    parts = []
    taken = set(frame.columns)
    for part in frame.with_columns(pl.col(NAMES_COLUMN).list.join("\x1f").alias(key)).partition_by(key):
        names = part[NAMES_COLUMN][0].to_list()
        values = pl.col(VALUES_COLUMN)
        parts.append(part.with_columns(
            values.list.get(i).fill_nan(None).alias(f"{FEATURE_PREFIX}{n}" if n in taken else n)
            for i, n in enumerate(names)
        ).drop(NAMES_COLUMN, VALUES_COLUMN, key))
    return pl.concat(parts, how="diagonal_relaxed").sort("ts", "request_id", "row")


def read_closed_segments(log_dir: str | Path, exclude: Iterable[str] = (), *,
                         features: bool = True, prefix: str = SEGMENT_PREFIX) -> pl.DataFrame:
    """Every closed segment in ``log_dir`` not named in ``exclude``, as one frame.

    Columns: ``SEGMENT_SCHEMA`` (the feature lists expanded into one column per feature unless
    ``features=False``) plus ``segment`` (the file name), ordered by time. An empty or missing
    directory gives an empty frame with the log columns. ``prefix=SHADOW_PREFIX`` reads the shadow
    model's rows (written beside the served ones by the writer process) instead.
    """
    skip = set(exclude)
    paths = [p for p in list_closed_segments(log_dir, prefix) if p.name not in skip]
    if not paths:
        return _empty_frame()
    frames = []
    for path in paths:
        try:
            frame = pl.read_parquet(path)
        except Exception as exc:  # a foreign or damaged file: name it
            raise ServedLogError(f"{path}: not a readable prediction-log segment ({exc}); move it away") \
                from exc
        frames.append(frame.cast({c: t for c, t in SEGMENT_SCHEMA.items() if c in frame.columns})
                      .with_columns(pl.lit(path.name).alias(SEGMENT_COLUMN)))
    combined = pl.concat(frames, how="diagonal_relaxed")
    return expand_features(combined) if features else combined


def find_prediction(log_dir: str | Path, request_id: str, row: int = 0) -> dict[str, Any] | None:
    """The logged row of ``request_id`` (instance ``row`` of a batch) with its features, or None."""
    paths = list_closed_segments(log_dir)
    if not paths:
        return None
    found = (pl.scan_parquet(paths, missing_columns="insert", extra_columns="ignore")
             .filter((pl.col("request_id") == request_id) & (pl.col("row") == row))
             .head(1).collect())
    if found.height == 0:
        return None
    record = found.row(0, named=True)
    names, values = record.pop(NAMES_COLUMN) or [], record.pop(VALUES_COLUMN) or []
    record["features"] = {n: (None if v is None or math.isnan(v) else v) for n, v in zip(names, values)}
    return record


def log_fingerprint(log_dir: str | Path) -> str:
    """A digest of the closed segments' names: it changes when a segment closes (or is removed), and
    costs one directory listing, so a sensor can poll it and start a run only when the log changed.
    Closed segments are never rewritten (write, fsync, rename), so their names identify their content.
    An empty or missing directory gives ``""``."""
    import hashlib

    names = [p.name for p in list_closed_segments(log_dir)]
    if not names:
        return ""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


LATENCY_QUANTILES = {"latency_p50_ms": 0.50, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}


def served_summary(served: pl.DataFrame) -> pl.DataFrame:
    """Per model version: served rows, distinct requests, latency percentiles (linear interpolation, as
    ``numpy.percentile``) and the first and last request time, newest version first.

    ``served`` is :func:`read_closed_segments`' frame (``model_version``, ``request_id``,
    ``latency_ms``, ``ts``); an empty log gives an empty frame with the same columns.
    """
    schema = {"model_version": pl.String(), "rows": pl.UInt32(), "requests": pl.UInt32(),
              **{name: pl.Float64() for name in LATENCY_QUANTILES},
              "first_ts": pl.Datetime("us", "UTC"), "last_ts": pl.Datetime("us", "UTC")}
    if served.height == 0:
        return pl.DataFrame(schema=schema)
    latency = pl.col("latency_ms").cast(pl.Float64)
    summary = served.group_by(pl.col("model_version").cast(pl.String)).agg(
        pl.len().alias("rows"),
        pl.col("request_id").n_unique().alias("requests"),
        *[latency.quantile(q, interpolation="linear").alias(name) for name, q in LATENCY_QUANTILES.items()],
        pl.col("ts").min().alias("first_ts"),
        pl.col("ts").max().alias("last_ts"),
    )
    number = pl.col("model_version").cast(pl.Int64, strict=False)
    return (summary.sort(number, "model_version", descending=True, nulls_last=True)
            .select(list(schema)).cast(schema))  # type: ignore[arg-type]

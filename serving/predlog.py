"""The prediction log writer: a list append on the request path, Parquet segments off it.

``PredictionLog.append`` puts one tuple per request on a ``collections.deque`` (thread-safe, no
lock); ``mlops_assets.data.segments.SegmentLog`` closes segments off the request path (temp file,
fsync, rename) every ``flush_rows`` rows or ``flush_seconds`` seconds and at shutdown.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from mlops_assets.data.segments import SegmentLog
from mlops_assets.monitoring.served import NAMES_COLUMN, SEGMENT_PREFIX, SEGMENT_SCHEMA, VALUES_COLUMN



class LogRecord(NamedTuple):
    """One served request: ``x`` holds the feature rows fed to the model (``features`` order).

    A NamedTuple, because building it is on the request path (a frozen dataclass costs 5x more).
    """

    request_id: str
    ts: float
    latency_ms: float
    model_name: str
    model_version: str
    alias: str
    variant: str
    snapshot_version: str | None
    entities: list[str | None]
    features: tuple[str, ...]
    x: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray | None


def _probability_column(probabilities: np.ndarray | None, n: int) -> np.ndarray:
    """P(class 1) for binary, the predicted class's probability for multiclass, NaN (null) for regression."""
    if probabilities is None:
        return np.full(n, np.nan)
    p = np.asarray(probabilities, dtype=np.float64)
    return p.max(axis=1) if p.ndim == 2 else p.reshape(-1)


def _group_frame(names: tuple[str, ...], recs: list[LogRecord]) -> pl.DataFrame:
    """Rows of records that share one feature list; per-record work is a few C calls, no per-row Python."""
    (request_id, ts, latency, model_name, version, alias, variant, snapshot, entities, _, xs, predictions,
     probabilities) = zip(*recs)
    counts = np.fromiter(map(len, entities), dtype=np.int64, count=len(recs))
    owner = np.repeat(np.arange(len(recs)), counts)  # the record of each row
    starts = np.cumsum(counts) - counts
    per_request = pl.DataFrame(
        {"request_id": request_id, "ts": np.asarray(ts) * 1e6, "model_name": model_name,
         "model_version": version, "alias": alias, "variant": variant, "snapshot_version": snapshot,
         "latency_ms": latency},
        schema_overrides={"snapshot_version": pl.String()},
    )
    x = np.concatenate([np.asarray(m, dtype=np.float64).reshape(n, -1) for m, n in zip(xs, counts.tolist())])
    return per_request[owner].with_columns(
        pl.Series("row", np.arange(len(owner)) - np.repeat(starts, counts)),
        pl.col("ts").cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        pl.Series("entity", list(chain.from_iterable(entities)), dtype=pl.String()),
        pl.Series("prediction", np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1)
                                                for p in predictions])),
        pl.Series("probability", np.concatenate([_probability_column(p, n)
                                                 for p, n in zip(probabilities, counts)]), nan_to_null=True),
        pl.lit(list(names), dtype=SEGMENT_SCHEMA[NAMES_COLUMN]).alias(NAMES_COLUMN),
        pl.Series(VALUES_COLUMN, x).cast(SEGMENT_SCHEMA[VALUES_COLUMN]),
    ).select(list(SEGMENT_SCHEMA)).cast(SEGMENT_SCHEMA)


def records_to_frame(records: list[LogRecord]) -> pl.DataFrame:
    """Expand request records into one row per served instance (``SEGMENT_SCHEMA``), grouped by
    feature list (one group per served model version)."""
    groups: dict[tuple[str, ...], list[LogRecord]] = {}
    for rec in records:
        groups.setdefault(rec.features, []).append(rec)
    frames = [_group_frame(names, recs) for names, recs in groups.items()]
    return pl.concat(frames) if frames else pl.DataFrame(schema=SEGMENT_SCHEMA)


class PredictionLog(SegmentLog[LogRecord]):
    """Buffered, append-only prediction log for one worker process (``mlops_assets/data/segments.py``)."""

    def __init__(self, log_dir: str | Path, flush_rows: int = 5000, flush_seconds: float = 2.0) -> None:
        super().__init__(log_dir, prefix=SEGMENT_PREFIX, schema=SEGMENT_SCHEMA, to_frame=records_to_frame,
                         flush_rows=flush_rows, flush_seconds=flush_seconds,
                         rows_of=lambda record: len(record.entities), name="prediction-log")

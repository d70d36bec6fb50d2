"""The prediction log's records: packed on the request path, expanded into segment frames.

Shared by the serving worker (``predlog.py``: it packs and queues, and writes segments itself when it
must) and its writer process (``predlog_writer.py``: it writes them normally).

Why bytes: joining 5,000 byte strings and reading them with ``np.frombuffer`` is one C call;
concatenating 5,000 small arrays costs ~1 ms per column (and per-record Python for the
probabilities more again), and pickling bytes is cheaper than pickling arrays.
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter
from typing import NamedTuple

import numpy as np
import polars as pl

from mlops_assets.monitoring.served import (
    NAMES_COLUMN,
    SEGMENT_PREFIX,
    SEGMENT_SCHEMA,
    SEGMENT_SUFFIX,
    REQUEST_FEATURES_COLUMN,
    VALUES_COLUMN,
)


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
    # per row, the feature names the request itself supplied (None: none, the online lookup gave all);
    # None for the whole record when no row supplied any (the usual enriched request)
    request_features: list[tuple[str, ...] | None] | None = None


def probability_column(probabilities: np.ndarray | None, n: int) -> np.ndarray:
    """P(class 1) for binary, the predicted class's probability for multiclass, NaN (null) for regression."""
    if probabilities is None:
        return np.full(n, np.nan)
    p = np.asarray(probabilities, dtype=np.float64)
    return p.max(axis=1) if p.ndim == 2 else p.reshape(-1)


Packed = tuple  # LogRecord's fields, with x, predictions and probabilities as float64 bytes
N_PACKED = 14


def pack(record: LogRecord) -> Packed:
    """The queued form of ``record`` (on the request path: keep it cheap)."""
    n = len(record.entities)
    return (*record[:10], np.asarray(record.x, dtype=np.float64).tobytes(),
            np.asarray(record.predictions, dtype=np.float64).tobytes(),
            probability_column(record.probabilities, n).tobytes(), record.request_features)


def pack_arrays(head: tuple, x: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray | None,
                request_features: list | None = None) -> Packed:
    """A packed record from its first ten fields and its arrays (the shadow scorer builds them)."""
    return (*head, np.asarray(x, dtype=np.float64).tobytes(), np.asarray(predictions, dtype=np.float64).tobytes(),
            probability_column(probabilities, len(head[8])).tobytes(), request_features)


def _group_frame(names: tuple[str, ...], items: list[Packed]) -> pl.DataFrame:
    """Rows of packed records that share one feature list: a few whole-array calls, no per-row Python."""
    # one C-level pass per field (zip(*items) would build 5,000 iterators: ~5x slower)
    (request_id, ts, latency, model_name, version, alias, variant, snapshot, entities, _, xs, predictions,
     probabilities, supplied) = [list(map(itemgetter(i), items)) for i in range(N_PACKED)]
    counts = np.fromiter(map(len, entities), dtype=np.int64, count=len(items))
    n_rows = int(counts.sum())
    per_request = pl.DataFrame(
        {"request_id": request_id, "ts": np.asarray(ts) * 1e6, "model_name": model_name,
         "model_version": version, "alias": alias, "variant": variant, "snapshot_version": snapshot,
         "latency_ms": latency},
        schema_overrides={"snapshot_version": pl.String(), "latency_ms": pl.Float64()},
    )
    if n_rows == len(items):  # one row per request: nothing to expand
        row = np.zeros(n_rows, dtype=np.int64)
    else:
        owner = np.repeat(np.arange(len(items)), counts)  # the request of each row
        row = np.arange(n_rows) - np.repeat(np.cumsum(counts) - counts, counts)
        per_request = per_request[owner]
    x = np.frombuffer(b"".join(xs), dtype=np.float64).reshape(n_rows, len(names))
    return per_request.with_columns(
        pl.Series("row", row),
        pl.col("ts").cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        pl.Series("entity", list(chain.from_iterable(entities)), dtype=pl.String()),
        pl.Series("prediction", np.frombuffer(b"".join(predictions), dtype=np.float64)),
        pl.Series("probability", np.frombuffer(b"".join(probabilities), dtype=np.float64), nan_to_null=True),
        pl.lit(list(names), dtype=SEGMENT_SCHEMA[NAMES_COLUMN]).alias(NAMES_COLUMN),
        pl.Series(VALUES_COLUMN, x).cast(SEGMENT_SCHEMA[VALUES_COLUMN]),
        _supplied_column(supplied, entities),
    ).select(list(SEGMENT_SCHEMA)).cast(SEGMENT_SCHEMA)


def _supplied_column(supplied: list, entities: list) -> pl.Series | pl.Expr:
    """``request_features``: null for every row when no request supplied a value (no per-row Python)."""
    if not any(supplied):
        return pl.lit(None, dtype=SEGMENT_SCHEMA[REQUEST_FEATURES_COLUMN]).alias(REQUEST_FEATURES_COLUMN)
    rows = chain.from_iterable(
        (list(names) if names else None for names in given) if given else [None] * len(rows_entities)
        for given, rows_entities in zip(supplied, entities))
    return pl.Series(REQUEST_FEATURES_COLUMN, list(rows), dtype=SEGMENT_SCHEMA[REQUEST_FEATURES_COLUMN])


def packed_to_frame(items: list[Packed]) -> pl.DataFrame:
    """Expand packed records into one row per served instance (``SEGMENT_SCHEMA``), grouped by
    feature list (one group per served model version)."""
    features = items[0][9] if items else ()
    if all(item[9] == features for item in items):  # the usual case: one model version
        groups = {features: items} if items else {}
    else:
        groups = {}
        for item in items:
            groups.setdefault(item[9], []).append(item)
    frames = [_group_frame(names, group) for names, group in groups.items()]
    return pl.concat(frames) if frames else pl.DataFrame(schema=SEGMENT_SCHEMA)


def segment_name(token: str, pid: int | str, seq: int, suffix: str = "", prefix: str = SEGMENT_PREFIX) -> str:
    """``pred-<process start>-<worker pid>-<seq><suffix>.parquet``: unique per worker and segment
    (``prefix`` ``shadow-``: the shadow rows of that segment)."""
    return f"{prefix}{token}-{pid}-{seq:06d}{suffix}{SEGMENT_SUFFIX}"


def rows_of(records: list[Packed]) -> int:
    """The rows (served instances) in ``records``."""
    return sum(len(r[8]) for r in records)

"""The prediction log writer: a list append on the request path, Parquet segments off it.

``PredictionLog.append`` puts one tuple per request on a ``collections.deque`` (thread-safe, no
lock). A daemon thread closes a segment (``mlops_assets.monitoring.served.write_segment``: temp
file, fsync, rename) every ``flush_rows`` rows or ``flush_seconds`` seconds, and ``close()``
writes what is left at shutdown. Segment names carry this process's start time, pid and a
sequence number, so several workers share one directory safely.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from mlops_assets.monitoring.served import (
    NAMES_COLUMN,
    SEGMENT_SCHEMA,
    VALUES_COLUMN,
    segment_name,
    write_segment,
)

log = logging.getLogger("serving.predlog")


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


class PredictionLog:
    """Buffered, append-only prediction log for one worker process."""

    def __init__(self, log_dir: str | Path, flush_rows: int = 5000, flush_seconds: float = 2.0) -> None:
        self.log_dir = Path(log_dir)
        self.flush_rows = int(flush_rows)
        self.flush_seconds = float(flush_seconds)
        self._token = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{int(time.time() * 1000) % 1000:03d}"
        self._seq = 0
        self._queue: deque[LogRecord] = deque()
        self._pending_rows = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # serialises flushes (thread vs close())
        self._thread: threading.Thread | None = None
        self.segments_written = 0
        self.rows_written = 0
        self.rows_dropped = 0

    # -- request path -------------------------------------------------------------------------
    def append(self, record: LogRecord) -> None:
        """O(1): queue the record; wake the flusher when a segment's worth is waiting."""
        self._queue.append(record)
        self._pending_rows += len(record.entities)
        if self._pending_rows >= self.flush_rows:
            self._wake.set()

    # -- background ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never let the flusher die; the rows are counted as dropped
                log.exception("prediction log flush failed")

    def flush(self) -> Path | None:
        """Write everything queued as one closed segment; returns its path (None when empty)."""
        with self._lock:
            n = len(self._queue)
            if n == 0:
                return None
            records = [self._queue.popleft() for _ in range(n)]
            self._pending_rows = len(self._queue)
            rows = sum(len(r.entities) for r in records)
            try:
                frame = records_to_frame(records)
                self._seq += 1
                path = write_segment(frame, self.log_dir, segment_name(self._token, os.getpid(), self._seq))
            except Exception:
                self.rows_dropped += rows
                raise
            self.segments_written += 1
            self.rows_written += rows
            return path

    def close(self) -> None:
        """Stop the flusher and write the remaining rows (called at shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            self.flush()
        except Exception:
            log.exception("final prediction log flush failed")

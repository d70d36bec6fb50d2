"""Append-only logs as closed Parquet segments: the prediction log and the LLM usage log.

``SegmentLog.append`` puts a record on a ``collections.deque`` (thread-safe, O(1), no lock on the
request path). A daemon thread closes a segment every ``flush_rows`` rows or ``flush_seconds``
seconds, and ``close()`` writes what is left at shutdown. A segment is written to a hidden temporary
name, fsynced, then renamed, so readers only ever see whole files; names carry the process start
time, pid and a sequence number, so several worker processes share one directory safely.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import polars as pl

from mlops_assets.errors import MessageInput

log = logging.getLogger(__name__)
R = TypeVar("R")
TMP_SUFFIX = ".tmp"


class SegmentError(MessageInput):
    """A segment cannot be written; the message names the segment and the missing columns."""
    subject = "segment"


def write_segment(frame: pl.DataFrame, log_dir: str | Path, name: str, schema: Mapping[str, pl.DataType]) -> Path:
    """Write ``frame`` (with ``schema``'s columns) as the closed segment ``name``: temp file, fsync, rename."""
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise SegmentError(f"segment {name}: columns {missing} are missing")
    out_dir = Path(log_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}{TMP_SUFFIX}"
    # zstd level 1: half the CPU of the default level for a few percent more bytes; the flush shares
    # a serving worker's core with its requests
    frame.select(list(schema)).cast(dict(schema)).write_parquet(tmp, compression="zstd", compression_level=1)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    final = out_dir / name
    os.replace(tmp, final)
    return final


def process_token() -> str:
    """This process's start time (UTC, ms): with the pid, it keeps segment names unique."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{int(time.time() * 1000) % 1000:03d}"


class SegmentLog(Generic[R]):
    """Buffered, append-only log of records ``R`` for one worker process, flushed as segments.

    ``to_frame`` turns a list of records into one frame of ``schema``; ``rows_of`` counts the rows a
    record becomes (a batch request is several rows); segment names are ``<prefix><token>-<pid>-<seq>``.
    """

    def __init__(self, log_dir: str | Path, *, prefix: str, schema: Mapping[str, pl.DataType],
                 to_frame: Callable[[list[R]], pl.DataFrame], flush_rows: int = 1000, flush_seconds: float = 5.0,
                 rows_of: Callable[[R], int] | None = None, name: str = "segment-log") -> None:
        if flush_rows < 1 or flush_seconds <= 0:
            raise SegmentError(f"{name}: flush_rows must be >= 1 and flush_seconds > 0")
        self.log_dir = Path(log_dir)
        self.prefix, self.schema, self.name = prefix, schema, name
        self.flush_rows, self.flush_seconds = int(flush_rows), float(flush_seconds)
        self._to_frame, self._rows_of = to_frame, rows_of or (lambda _: 1)
        self._token = process_token()
        self._seq = 0
        self._queue: deque[R] = deque()
        self._pending_rows = 0
        self._lock = threading.Lock()  # serialises flushes (thread vs close())
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.segments_written = 0
        self.rows_written = 0
        self.rows_dropped = 0

    def segment_name(self, seq: int) -> str:
        return f"{self.prefix}{self._token}-{os.getpid()}-{seq:06d}.parquet"

    def append(self, record: R) -> None:
        """O(1): queue the record; wake the flusher (or flush, without one) when a segment is due."""
        self._queue.append(record)
        self._pending_rows += self._rows_of(record)
        if self._pending_rows >= self.flush_rows:
            if self._thread is not None:
                self._wake.set()
            else:
                self.flush()

    def flush(self) -> Path | None:
        """Write everything queued as one closed segment; returns its path (None when nothing was queued)."""
        with self._lock:
            n = len(self._queue)
            if n == 0:
                return None
            records = [self._queue.popleft() for _ in range(n)]
            self._pending_rows = sum(self._rows_of(r) for r in self._queue)
            rows = sum(self._rows_of(r) for r in records)
            try:
                self._seq += 1
                path = write_segment(self._to_frame(records), self.log_dir, self.segment_name(self._seq), self.schema)
            except Exception:
                self.rows_dropped += rows
                raise
            self.segments_written += 1
            self.rows_written += rows
            return path

    def start(self) -> SegmentLog[R]:
        """Flush every ``flush_seconds`` in a daemon thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never let the flusher die; the rows are counted as dropped
                log.exception("%s: flush failed", self.name)

    def close(self) -> None:
        """Stop the flusher and write what is left (at shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            self.flush()
        except Exception:
            log.exception("%s: final flush failed", self.name)

    def __enter__(self) -> SegmentLog[R]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

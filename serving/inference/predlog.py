"""The prediction log on the worker side: a packed tuple per request, segments written by another process.

``PredictionLog.append`` packs the request (its numbers as float64 bytes: ~5 us) and puts the tuple
on a ``collections.deque`` (thread-safe, no lock on the request path). Every ``send_seconds`` a
daemon thread pickles what is queued (~1 us a record) and hands it through a pipe to the worker's
*writer process* (``predlog_writer.py``, under ``SCHED_IDLE``), which builds and writes the
Parquet segments: every ``flush_rows`` rows or ``flush_seconds`` seconds and at shutdown, each to
a temporary name, fsynced, renamed (``mlops_assets.data.segments.write_segment``).

Why another process: the worker serves requests on one core with one GIL. Building and writing a
segment of 5,000 requests costs ~15 ms of CPU; in a thread here it held the GIL in bursts, and the
requests that arrived meanwhile waited (p99 at concurrency 1: 1.2-1.8 ms with it, 0.5 ms without).
The writer process takes no GIL from the worker and yields its core to the worker at once.

This is the one design: there is no mode that writes in the worker by choice. The worker numbers
the segments (``pred-<start>-<pid>-<seq>.parquet``) and writes them itself, in the flusher thread,
only as a fallback:

* the writer process cannot start: every segment, from then on;
* it dies: from then on; the rows it held unwritten are lost and counted in ``rows_dropped``;
* it is starved: when the pipe has been full for ``flush_seconds`` (a worker saturating its core
  leaves an idle-priority process no time), the rows waiting in the worker are written here, so
  memory stays bounded.

Shadow scoring (``shadow=ShadowConfig(...)``, from ``serving.shadow_alias``): the writer process also
scores every closed segment with that alias's model and writes the sibling ``shadow-`` segment
(``predlog_shadow.py``). The worker only counts what it reports (``shadow_rows_written``,
``shadow_rows_missing``, ``shadow_version``); rows the worker writes itself (the fallback) have no
shadow rows and are counted as missing. The writer scores such segments later, when it gets idle CPU
(catch-up, ``predlog_backfill.py``), and reports them as ``shadow_rows_caught_up`` (its catch-up
covers the whole log directory, so this counts other workers' segments too).

Without ``start()`` (tests, scripts) there is no writer process and ``flush()`` writes in the calling
thread. The records themselves (``LogRecord``, ``pack``, ``packed_to_frame``): ``predlog_format.py``;
the pipe to the writer process (starting it, framing, acknowledgements): ``predlog_pipe.py``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from mlops_assets.data.segments import SegmentError, process_token
from mlops_assets.monitoring.served import write_segment
from serving.inference.predlog_format import LogRecord, Packed, pack, packed_to_frame, rows_of, segment_name
from serving.inference.predlog_pipe import WAIT_SECONDS, WriterPipe
from serving.inference.predlog_shadow import ShadowConfig

log = logging.getLogger(__name__)


class PredictionLog:
    """Buffered, append-only prediction log of one worker process (see the module docstring)."""

    def __init__(self, log_dir: str | Path, flush_rows: int = 5000, flush_seconds: float = 2.0, *,
                 send_seconds: float = 0.02, python: str = sys.executable,
                 shadow: ShadowConfig | None = None) -> None:
        """``python``: the interpreter that runs the writer process (this one by default); ``shadow``:
        score every segment with that model too, in the writer process (None: off)."""
        if flush_rows < 1 or flush_seconds <= 0 or send_seconds <= 0:
            raise SegmentError("prediction-log: flush_rows must be >= 1, flush_seconds and send_seconds > 0")
        self.log_dir = Path(log_dir)
        self.flush_rows, self.flush_seconds = int(flush_rows), float(flush_seconds)
        self.send_seconds = float(send_seconds)
        self.python = python
        self.shadow = shadow
        self.shadow_rows_written = 0
        self.shadow_rows_missing = 0
        self.shadow_rows_caught_up = 0  # rows of served segments without shadow rows, scored later by the writer
        self.shadow_version: str | None = None  # the shadow version the writer process last reported
        self.shadow_problem: str | None = None
        self._token = process_token()
        self._queue: deque[Packed] = deque()
        self._queued_rows = 0  # a hint for waking the flusher early; exact counts come from the records
        self._lock = threading.Lock()  # one flusher at a time (the thread, flush(), close())
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._held: list[Packed] = []  # taken off the queue, not yet handed on
        self._held_rows = 0
        self._held_since = 0.0
        self._pipe: WriterPipe | None = None  # the writer process, while it runs
        self._counts = threading.Condition()  # guards the counters below and the pipe's acknowledgements
        self._sent_before = 0  # rows handed to writer processes that are gone
        self.segments_written = 0
        self.rows_written = 0
        self.rows_dropped = 0
        self.local_segments = 0  # written by this process (the fallback)
        self._starved_writes, self._starved_logged = 0, -1e9
        self.writer_priority = ""  # "idle" (SCHED_IDLE), "nice" (19) or "normal"

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid while it runs."""
        pipe = self._pipe
        return pipe.pid if pipe is not None else None

    @property
    def rows_sent(self) -> int:
        """Rows handed to the writer process."""
        pipe = self._pipe
        return self._sent_before + (pipe.rows_sent if pipe is not None else 0)

    def append(self, record: LogRecord) -> None:
        """Pack ``record`` and queue it (O(1), on the request path)."""
        self._queue.append(pack(record))
        self._queued_rows += len(record.entities)
        if self._queued_rows >= self.flush_rows:
            if self._thread is not None:
                self._wake.set()
            else:
                self.flush()

    # -- the flusher ------------------------------------------------------------------------------
    def start(self) -> PredictionLog:
        """Start the writer process and the flusher thread."""
        if self._thread is None:
            if self._pipe is None:
                self._pipe = WriterPipe.open(self.python, self.log_dir, self._token, self.shadow,
                                             self._counts, self._tally)
                if self._pipe is not None:
                    self.writer_priority = self._pipe.priority
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.send_seconds)
            self._wake.clear()
            try:
                with self._lock:
                    self._tick()
            except Exception:  # never let the flusher die; failed rows are counted as dropped
                log.exception("prediction-log: flush failed")

    def _take(self) -> None:
        """Move what is queued to ``_held``."""
        n = len(self._queue)
        if n:
            if not self._held:
                self._held_since = time.monotonic()
            taken = [self._queue.popleft() for _ in range(n)]
            self._held.extend(taken)
            self._held_rows += rows_of(taken)
            self._queued_rows = 0

    def _release(self) -> list[Packed]:
        """Everything held, handed on (to the writer or a segment here)."""
        records, self._held, self._held_rows = self._held, [], 0
        return records

    def _tick(self) -> None:
        """One pass of the flusher: hand what is queued to the writer, or write a segment here."""
        self._take()
        if self._pipe is not None and self._pipe.reader_done:  # its output ended: the writer is gone
            self._writer_died("it exited")
        if self._pipe is not None:
            taken = self._push()
            if self._pipe is not None:  # (a broken pipe retires the writer: then write here, below)
                self._hand_over() if taken else self._relieve_starved_writer()
                return
        if self._held_due():
            self._write_local()

    def _held_due(self) -> bool:
        return bool(self._held) and (self._held_rows >= self.flush_rows
                                     or time.monotonic() - self._held_since >= self.flush_seconds)

    def _hand_over(self) -> None:
        """Send what is held to the writer, closing the open segment when it is due."""
        pipe = self._pipe
        assert pipe is not None
        if not self._held and not pipe.open_rows:
            return
        since = pipe.open_since if pipe.open_rows else self._held_since
        due = (pipe.open_rows + self._held_rows >= self.flush_rows
               or time.monotonic() - since >= self.flush_seconds)
        if self._held or due:
            self._send(close=due)
            self._push()

    def _relieve_starved_writer(self) -> None:
        """The writer has not taken the last frame for ``flush_seconds``: write what is due here, so
        this process's memory stays bounded (a worker saturating its core starves an idle process)."""
        blocked_since = self._pipe.blocked_since if self._pipe is not None else None
        if blocked_since is None or time.monotonic() - blocked_since < self.flush_seconds:
            return
        if not self._held_due():
            return
        rows = self._held_rows
        self._write_local()
        self._starved_writes += 1
        if time.monotonic() - self._starved_logged >= 60:
            self._starved_logged = time.monotonic()
            log.warning("prediction-log: the writer process is starved (its pipe has been full for %.1f s "
                        "or more); wrote %d rows in the worker (%d times so far)", self.flush_seconds, rows,
                        self._starved_writes)

    def flush(self) -> Path | None:
        """Close a segment with everything logged so far and return its path (None: nothing to write)."""
        with self._lock:
            self._take()
            if self._pipe is not None and self._push(wait=WAIT_SECONDS) and self._pipe is not None:
                if not self._held and not self._pipe.open_rows:
                    return None
                seq = self._send(close=True)
                if self._push(wait=WAIT_SECONDS) and self._pipe is not None:
                    ack = self._pipe.ack(seq)
                    if ack is None and self._pipe.reader_done:
                        self._writer_died("it exited before confirming the segment")
                        return self._write_local() if self._held else None
                    if ack is None:
                        log.error("prediction-log: the writer process did not confirm segment %s in %.0f s",
                                  seq, WAIT_SECONDS)
                        return None
                    if "error" in ack:
                        raise SegmentError(ack["error"])
                    return self.log_dir / ack["segment"] if ack["segment"] else None
            if self._pipe is not None:  # it took nothing for WAIT_SECONDS: stop feeding it
                log.error("prediction-log: the writer process took nothing for %.0f s; it writes what it "
                          "holds and exits, and this process writes the rest", WAIT_SECONDS)
                self._retire_writer()
            return self._write_local() if self._held else None

    def close(self) -> None:
        """Stop the flusher, write what is left and let the writer process finish (at shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=WAIT_SECONDS)
            self._thread = None
        try:
            self.flush()
        except Exception:
            log.exception("prediction-log: final flush failed")
        pipe = self._drop_pipe()
        if pipe is not None:
            pipe.finish()  # end of input: the writer writes anything left and exits

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing here -------------------------------------------------------------------------------
    def _write_local(self) -> Path:
        records = self._release()
        rows = rows_of(records)
        self._seq += 1
        try:
            path = write_segment(packed_to_frame(records), self.log_dir,
                                 segment_name(self._token, os.getpid(), self._seq))
        except Exception:
            with self._counts:
                self.rows_dropped += rows
            raise
        with self._counts:
            self.segments_written += 1
            self.rows_written += rows
            self.local_segments += 1
            if self.shadow is not None:
                self.shadow_rows_missing += rows
        return path

    # -- handing over to the writer process -------------------------------------------------------
    def _send(self, close: bool) -> int | None:
        """Frame ``_held`` (closing the segment when ``close``) for the writer; returns the close's seq."""
        assert self._pipe is not None
        since, records = self._held_since, self._release()
        seq = None
        if close:
            self._seq += 1
            seq = self._seq
        self._pipe.send(records, seq, since)
        return seq

    def _push(self, wait: float = 0.0) -> bool:
        """Write the pending frame (see ``WriterPipe.push``); True once it is all taken, or when the
        pipe broke (the writer is then retired and this process writes from now on)."""
        pipe = self._pipe
        if pipe is None:
            return True
        try:
            return pipe.push(wait)
        except OSError as exc:  # broken pipe: the writer is gone
            self._writer_died(exc)
            return True

    def _drop_pipe(self) -> WriterPipe | None:
        """Forget the writer process (its rows sent stay counted)."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            self._sent_before += pipe.rows_sent
        return pipe

    def _take_back(self, pipe: WriterPipe) -> None:
        """The unsent frame's records go back to ``_held`` (the writer never read that frame)."""
        records = pipe.unsent()
        self._held = records + self._held
        self._held_rows += rows_of(records)

    def _retire_writer(self) -> None:
        """End the writer's input: it drops a frame cut short (those records are still here), writes
        what it holds as its ``-eof`` segment and exits."""
        pipe = self._drop_pipe()
        if pipe is not None:
            pipe.close_input()
            self._take_back(pipe)

    def _writer_died(self, exc: BaseException | str) -> None:
        pipe = self._drop_pipe()
        lost = pipe.reap() if pipe is not None else 0
        with self._counts:
            self.rows_dropped += lost
        log.error("prediction-log: the writer process stopped (%s); %d rows it held are lost; "
                  "writing segments in this process from now on", exc, lost)
        if pipe is not None:
            self._take_back(pipe)

    def _tally(self, ack: dict[str, Any]) -> None:
        """Count one acknowledgement of the writer process (the pipe's reader thread, under ``_counts``)."""
        if "shadow_caught_up" in ack:  # a served segment's shadow rows written later (any worker's)
            self.shadow_rows_caught_up += ack["rows"]
        elif "shadow_version" in ack:
            self.shadow_version = ack["shadow_version"]
        elif "shadow" in ack:
            if "segment" in ack:
                self.shadow_rows_written += ack["rows"]
            else:
                self.shadow_rows_missing += ack.get("missing", 0)
                self.shadow_problem = ack.get("reason")
        elif "error" in ack:
            self.rows_dropped += ack["rows"]
            log.error("prediction-log: segment %s failed: %s", ack["seq"], ack["error"])
        elif ack.get("segment"):
            self.segments_written += 1
            self.rows_written += ack["rows"]

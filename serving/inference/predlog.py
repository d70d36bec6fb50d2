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
shadow rows and are counted as missing.

Without ``start()`` (tests, scripts) there is no writer process and ``flush()`` writes in the calling
thread. The records themselves (``LogRecord``, ``pack``, ``packed_to_frame``): ``predlog_format.py``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pickle
import select
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from mlops_assets.data.segments import SegmentError, process_token
from mlops_assets.monitoring.served import write_segment
from serving.inference.predlog_format import LogRecord, Packed, pack, packed_to_frame, rows_of, segment_name
from serving.inference.predlog_shadow import ShadowConfig
from serving.inference.predlog_writer import HEADER, lower_priority

log = logging.getLogger(__name__)
PIPE_BYTES = 1 << 20  # the writer's pipe (the default unprivileged maximum): ~5,000 packed requests
WAIT_SECONDS = 30.0  # how long flush() and close() wait for the writer process


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
        # the writer process, and the frame it has not taken yet
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._fd = -1
        self._outbox: memoryview | None = None
        self._outbox_records: list[Packed] = []
        self._blocked_since: float | None = None
        self._open_rows, self._open_since = 0, 0.0  # handed to the writer since its last close
        self._counts = threading.Condition()  # guards the counters and acknowledgements below
        self._acked_rows = 0
        self._acks: dict[int, dict[str, Any]] = {}
        self._reader_done = False
        self.segments_written = 0
        self.rows_written = 0
        self.rows_dropped = 0
        self.local_segments = 0  # written by this process (the fallback)
        self.rows_sent = 0  # handed to the writer process
        self._starved_writes, self._starved_logged = 0, -1e9
        self.writer_priority = ""  # "idle" (SCHED_IDLE), "nice" (19) or "normal"

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

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
            if self._proc is None:
                self._start_writer()
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

    def _take_back_outbox(self) -> None:
        """The unsent frame's records go back to ``_held`` (the writer never read that frame)."""
        self._held = self._outbox_records + self._held
        self._held_rows += rows_of(self._outbox_records)
        self._outbox, self._outbox_records, self._blocked_since = None, [], None

    def _tick(self) -> None:
        """One pass of the flusher: hand what is queued to the writer, or write a segment here."""
        self._take()
        if self._proc is not None and self._reader_done:  # its output ended: the writer is gone
            self._writer_died("it exited")
        if self._proc is not None:
            taken = self._push()
            if self._proc is not None:  # (a broken pipe retires the writer: then write here, below)
                self._hand_over() if taken else self._relieve_starved_writer()
                return
        if self._held_due():
            self._write_local()

    def _held_due(self) -> bool:
        return bool(self._held) and (self._held_rows >= self.flush_rows
                                     or time.monotonic() - self._held_since >= self.flush_seconds)

    def _hand_over(self) -> None:
        """Send what is held to the writer, closing the open segment when it is due."""
        if not self._held and not self._open_rows:
            return
        since = self._open_since if self._open_rows else self._held_since
        due = (self._open_rows + self._held_rows >= self.flush_rows
               or time.monotonic() - since >= self.flush_seconds)
        if self._held or due:
            self._send(close=due)
            self._push()

    def _relieve_starved_writer(self) -> None:
        """The writer has not taken the last frame for ``flush_seconds``: write what is due here, so
        this process's memory stays bounded (a worker saturating its core starves an idle process)."""
        if self._blocked_since is None or time.monotonic() - self._blocked_since < self.flush_seconds:
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
            if self._proc is not None and self._push(wait=WAIT_SECONDS) and self._proc is not None:
                if not self._held and not self._open_rows:
                    return None
                seq = self._send(close=True)
                if self._push(wait=WAIT_SECONDS) and self._proc is not None:
                    ack = self._ack(seq)
                    if ack is None and self._reader_done:
                        self._writer_died("it exited before confirming the segment")
                        return self._write_local() if self._held else None
                    if ack is None:
                        log.error("prediction-log: the writer process did not confirm segment %s in %.0f s",
                                  seq, WAIT_SECONDS)
                        return None
                    if "error" in ack:
                        raise SegmentError(ack["error"])
                    return self.log_dir / ack["segment"] if ack["segment"] else None
            if self._proc is not None:  # it took nothing for WAIT_SECONDS: stop feeding it
                log.error("prediction-log: the writer process took nothing for %.0f s; it writes what it "
                          "holds and exits, and this process writes the rest", WAIT_SECONDS)
                self._retire_writer()
            return self._write_local() if self._held else None

    def _retire_writer(self) -> None:
        """End the writer's input: it drops a frame cut short (those records are still here), writes
        what it holds as its ``-eof`` segment and exits."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        self._take_back_outbox()
        self._open_rows = 0

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
        proc = self._proc
        if proc is not None:
            self._proc = None
            assert proc.stdin is not None
            proc.stdin.close()  # end of input: the writer writes anything left and exits
            try:
                proc.wait(timeout=WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                log.error("prediction-log: the writer process (pid %d) is still busy after %.0f s",
                          proc.pid, WAIT_SECONDS)
            if self._reader is not None:
                self._reader.join(timeout=1.0)

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

    # -- the writer process -----------------------------------------------------------------------
    def _start_writer(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the project root, so the writer imports this tree
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [self.python, "-m", "serving.inference.predlog_writer", str(self.log_dir), self._token,
                 str(os.getpid()), *([self.shadow.to_json()] if self.shadow is not None else [])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        except OSError as exc:
            log.error("prediction-log: cannot start the writer process (%s); writing segments here", exc)
            return
        self.writer_priority = lower_priority(proc.pid)
        assert proc.stdin is not None
        self._fd = proc.stdin.fileno()
        os.set_blocking(self._fd, False)
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[attr-defined]
        except (AttributeError, OSError):  # not Linux, or over the host's limit: the default is fine
            pass
        self._proc, self._reader_done = proc, False
        self._reader = threading.Thread(target=self._read_acks, args=(proc,), name="prediction-log-acks",
                                        daemon=True)
        self._reader.start()

    def _send(self, close: bool) -> int | None:
        """Frame ``_held`` (closing the segment when ``close``) for the writer; returns the close's seq."""
        records = self._release()
        seq = None
        if close:
            self._seq += 1
            seq = self._seq
        payload = pickle.dumps((records, seq), protocol=pickle.HIGHEST_PROTOCOL)
        self._outbox = memoryview(HEADER.pack(len(payload)) + payload)
        self._outbox_records = records
        rows = rows_of(records)
        if close:
            self._open_rows = 0
        else:
            if not self._open_rows:
                self._open_since = self._held_since
            self._open_rows += rows
        return seq

    def _push(self, wait: float = 0.0) -> bool:
        """Write the pending frame without blocking (or for up to ``wait`` s); True once it is all taken."""
        deadline = time.monotonic() + wait
        while self._outbox is not None and self._proc is not None:
            try:
                n = os.write(self._fd, self._outbox)
            except BlockingIOError:
                if self._blocked_since is None:
                    self._blocked_since = time.monotonic()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                select.select([], [self._fd], [], min(left, 0.1))
                continue
            except OSError as exc:  # broken pipe: the writer is gone
                self._writer_died(exc)
                return True
            if n < len(self._outbox):
                self._outbox = self._outbox[n:]
                continue
            self.rows_sent += rows_of(self._outbox_records)
            self._outbox, self._outbox_records, self._blocked_since = None, [], None
        return True

    def _writer_died(self, exc: BaseException | str) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
            if self._reader is not None:
                self._reader.join(timeout=5)  # take its last acknowledgements
        with self._counts:
            lost = max(self.rows_sent - self._acked_rows, 0)
            self.rows_dropped += lost
        log.error("prediction-log: the writer process stopped (%s); %d rows it held are lost; "
                  "writing segments in this process from now on", exc, lost)
        self._take_back_outbox()
        self._open_rows = 0

    def _read_acks(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                ack = json.loads(line)
            except ValueError:
                continue
            with self._counts:
                if "shadow" in ack or "shadow_version" in ack:
                    self._shadow_ack(ack)
                    continue
                self._acked_rows += ack["rows"]
                if "error" in ack:
                    self.rows_dropped += ack["rows"]
                    log.error("prediction-log: segment %s failed: %s", ack["seq"], ack["error"])
                elif ack.get("segment"):
                    self.segments_written += 1
                    self.rows_written += ack["rows"]
                self._acks[ack["seq"]] = ack
                for old in [s for s in self._acks if s < ack["seq"] - 64]:
                    del self._acks[old]
                self._counts.notify_all()
        with self._counts:
            self._reader_done = True
            self._counts.notify_all()

    def _shadow_ack(self, ack: dict[str, Any]) -> None:
        """Count what the writer reports of shadow scoring (under ``_counts``)."""
        if "shadow_version" in ack:
            self.shadow_version = ack["shadow_version"]
        elif "segment" in ack:
            self.shadow_rows_written += ack["rows"]
        else:
            self.shadow_rows_missing += ack.get("missing", 0)
            self.shadow_problem = ack.get("reason")
        self._counts.notify_all()

    def _ack(self, seq: int | None) -> dict[str, Any] | None:
        with self._counts:
            self._counts.wait_for(lambda: seq in self._acks or self._reader_done, timeout=WAIT_SECONDS)
            return self._acks.get(seq) if seq is not None else None

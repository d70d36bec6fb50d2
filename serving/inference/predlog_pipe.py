"""The worker's end of the pipe to its prediction-log writer process.

``PredictionLog`` (``predlog.py``) decides what to hand over and when a segment closes; a
:class:`WriterPipe` carries it to the writer process (``predlog_writer.py``, protocol there):

* ``open`` starts ``python -m serving.inference.predlog_writer`` and lowers its priority at once
  (``SCHED_IDLE``, before it starts threads), with a non-blocking stdin pipe of ``PIPE_BYTES``;
* ``send`` frames records (a length and a pickle) and ``push`` writes the frame without blocking the
  flusher (or for up to a given wait); a broken pipe raises ``OSError`` to the log;
* a thread reads the writer's JSON acknowledgements: the log counts each one (its ``tally``), the
  pipe keeps the closes for ``ack``, which waits for one;
* ``unsent`` gives back the records of a frame the writer never read, ``reap`` waits for a writer
  that died and says how many rows it took and never wrote, ``finish`` ends its input at shutdown.

It knows nothing of the log's buffer or its counters; all of it runs under the log's flusher lock
except the acknowledgement thread, which takes the log's ``counts`` condition.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pickle
import select
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from serving.inference.predlog_format import Packed, rows_of
from serving.inference.predlog_shadow import ShadowConfig
from serving.inference.predlog_writer import HEADER, lower_priority

log = logging.getLogger("serving.inference.predlog")  # its messages are the prediction log's
PIPE_BYTES = 1 << 20  # the writer's pipe (the default unprivileged maximum): ~5,000 packed requests
WAIT_SECONDS = 30.0  # how long flush() and close() wait for the writer process


class WriterPipe:
    """One running writer process, seen from the worker (see the module docstring)."""

    def __init__(self, proc: subprocess.Popen[bytes], counts: threading.Condition,
                 tally: Callable[[dict[str, Any]], None]) -> None:
        """``counts``: the condition guarding the log's counters and this pipe's acknowledgements;
        ``tally``: counts one acknowledgement for the log (called under ``counts``)."""
        self.proc, self.pid = proc, proc.pid
        self.priority = lower_priority(proc.pid)  # "idle" (SCHED_IDLE), "nice" (19) or "normal"
        assert proc.stdin is not None
        self.fd = proc.stdin.fileno()
        os.set_blocking(self.fd, False)
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[attr-defined]
        except (AttributeError, OSError):  # not Linux, or over the host's limit: the default is fine
            pass
        self.counts, self._tally = counts, tally
        self.outbox: memoryview | None = None  # the frame the writer has not taken yet
        self.outbox_records: list[Packed] = []
        self.blocked_since: float | None = None
        self.open_rows, self.open_since = 0, 0.0  # handed to the writer since its last close
        self.rows_sent = 0  # handed to this writer (all frames it took)
        self.acked_rows = 0
        self.acks: dict[int, dict[str, Any]] = {}
        self.reader_done = False
        self._reader = threading.Thread(target=self._read_acks, name="prediction-log-acks", daemon=True)
        self._reader.start()

    @classmethod
    def open(cls, python: str, log_dir: Path, token: str, shadow: ShadowConfig | None,
             counts: threading.Condition, tally: Callable[[dict[str, Any]], None]) -> WriterPipe | None:
        """Start the writer process for ``log_dir`` (None when it cannot start: the log writes its segments)."""
        root = str(Path(__file__).resolve().parents[2])  # the project root, so the writer imports this tree
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [python, "-m", "serving.inference.predlog_writer", str(log_dir), token,
                 str(os.getpid()), *([shadow.to_json()] if shadow is not None else [])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        except OSError as exc:
            log.error("prediction-log: cannot start the writer process (%s); writing segments here", exc)
            return None
        return cls(proc, counts, tally)

    # -- feeding it ---------------------------------------------------------------------------------
    def send(self, records: list[Packed], seq: int | None, since: float) -> None:
        """Frame ``records`` for the writer (``seq``: then close the segment under that number);
        ``since``: when the oldest of them was logged. The frame goes out with ``push``."""
        payload = pickle.dumps((records, seq), protocol=pickle.HIGHEST_PROTOCOL)
        self.outbox = memoryview(HEADER.pack(len(payload)) + payload)
        self.outbox_records = records
        if seq is not None:
            self.open_rows = 0
        else:
            if not self.open_rows:
                self.open_since = since
            self.open_rows += rows_of(records)

    def push(self, wait: float = 0.0) -> bool:
        """Write the pending frame without blocking (or for up to ``wait`` s); True once it is all taken.
        A broken pipe (the writer is gone) raises ``OSError``."""
        deadline = time.monotonic() + wait
        while self.outbox is not None:
            try:
                n = os.write(self.fd, self.outbox)
            except BlockingIOError:
                if self.blocked_since is None:
                    self.blocked_since = time.monotonic()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                select.select([], [self.fd], [], min(left, 0.1))
                continue
            if n < len(self.outbox):
                self.outbox = self.outbox[n:]
                continue
            self.rows_sent += rows_of(self.outbox_records)
            self.outbox, self.outbox_records, self.blocked_since = None, [], None
        return True

    def unsent(self) -> list[Packed]:
        """The records of the frame the writer never read (it is dropped here)."""
        records = self.outbox_records
        self.outbox, self.outbox_records, self.blocked_since = None, [], None
        return records

    # -- ending it ----------------------------------------------------------------------------------
    def close_input(self) -> None:
        """End the writer's input: it drops a frame cut short, writes what it holds as its ``-eof``
        segment and exits (without waiting for it)."""
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def reap(self) -> int:
        """Wait for a writer that stopped, and for its last acknowledgements; the rows it took and
        never wrote."""
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._reader.join(timeout=5)  # take its last acknowledgements
        with self.counts:
            return max(self.rows_sent - self.acked_rows, 0)

    def finish(self) -> None:
        """End of input at shutdown: the writer writes anything left and exits; wait for it."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            log.error("prediction-log: the writer process (pid %d) is still busy after %.0f s",
                      self.pid, WAIT_SECONDS)
        self._reader.join(timeout=1.0)

    # -- its acknowledgements ---------------------------------------------------------------------
    def _read_acks(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ack = json.loads(line)
            except ValueError:
                continue
            with self.counts:
                self._tally(ack)
                if "seq" in ack:  # a segment closed (the other lines are about shadow rows)
                    self.acked_rows += ack["rows"]
                    self.acks[ack["seq"]] = ack
                    for old in [s for s in self.acks if s < ack["seq"] - 64]:
                        del self.acks[old]
                self.counts.notify_all()
        with self.counts:
            self.reader_done = True
            self.counts.notify_all()

    def ack(self, seq: int | None) -> dict[str, Any] | None:
        """The writer's acknowledgement of the close ``seq`` (None: not within ``WAIT_SECONDS``, or it is gone)."""
        with self.counts:
            self.counts.wait_for(lambda: seq in self.acks or self.reader_done, timeout=WAIT_SECONDS)
            return self.acks.get(seq) if seq is not None else None

"""The prediction-log writer process: one per inference worker, it turns packed records into segments.

``python -m serving.inference.predlog_writer LOG_DIR TOKEN PID`` is started by
``serving.inference.predlog.PredictionLog`` with pipes on stdin and stdout. Why a process: building
and writing a Parquet segment of 5,000 requests takes ~15 ms of CPU; in a thread of the worker it
holds the worker's GIL in bursts, and requests that arrive meanwhile wait (the p99 at concurrency 1
was 1.2-1.8 ms with it, 0.5 ms without). Here it runs under ``SCHED_IDLE``: on the worker's core it
only gets time the worker does not want, and the kernel preempts it at once when a request wakes the
worker.

Protocol (private to the two processes):

* stdin: frames of a 4-byte little-endian length and a pickle of ``(records, close_seq)``:
  ``records`` a list of ``predlog_format.Packed`` tuples; ``close_seq`` None, or the sequence
  number under which everything received so far is written as one closed segment
  (``pred-<TOKEN>-<PID>-<seq>.parquet``). The worker numbers segments, so its own fallback
  segments (written while this process is starved or gone) never clash with these.
* stdout: one JSON line per close: ``{"seq", "rows", "segment"}`` or ``{"seq", "rows", "error"}``;
  with shadow scoring on, after it one line ``{"shadow": seq, "rows", "segment"}`` (shadow rows
  written) or ``{"shadow": seq, "missing", "reason"}`` (rows left without a shadow prediction), and
  ``{"shadow_version": v}`` whenever the loaded shadow version changes.
* optional 4th argument: a ``predlog_shadow.ShadowConfig`` as JSON: score every closed segment with
  that alias's model too and write its rows as the sibling ``shadow-...`` segment, after the served
  one (``predlog_shadow.py``). The served segment never waits for it or depends on it. While no
  frame is waiting, the writer also catches up on served segments of the log directory that have no
  sibling (``predlog_backfill.py``), one segment at a time, and reports each sibling it writes as
  ``{"shadow_caught_up": served segment, "segment", "rows", "version"}``.
* end of stdin (the worker closed it or died): what is left is written as
  ``pred-<TOKEN>-<PID>-<last seq + 1>-eof.parquet`` and the process exits. SIGINT and SIGTERM are
  ignored, so a Ctrl-C or a process-group signal cannot cut off that last segment; the writer lives
  exactly as long as its pipe. It stays in the worker's process group, so tools that account or
  list by group (the serving benchmark's CPU figures among them) include it.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import struct
import sys

HEADER = struct.Struct("<I")


def lower_priority(pid: int) -> str:
    """Let process ``pid`` run only when its core is otherwise idle (Linux ``SCHED_IDLE``), else at
    nice 19. The worker calls it right after starting the writer, before the writer starts threads
    (they inherit the policy)."""
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined]
        return "idle"
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, pid, 19)
            return "nice"
        except OSError:
            return "normal"


def _read_exact(fd: int, n: int) -> bytes | None:
    """``n`` bytes from ``fd``; None at end of input (a frame cut short counts as the end)."""
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def read_frames(fd: int, idle=None):
    """Yield ``(records, close_seq)`` frames from ``fd`` until its end. ``idle``: called while no
    input is waiting (one bounded piece of background work); it returns how long to wait for input
    before calling it again (0: call it again as soon as no input is waiting)."""
    while True:
        while idle is not None and not _readable(fd, 0):
            pause = idle()
            if pause > 0 and _readable(fd, pause):
                break
        header = _read_exact(fd, HEADER.size)
        if header is None:
            return
        payload = _read_exact(fd, HEADER.unpack(header)[0])
        if payload is None:
            return
        yield pickle.loads(payload)


def priority_lowered() -> bool:
    """Whether the worker already put this process under ``SCHED_IDLE`` (threads started from now on
    inherit it); elsewhere the first frame says so."""
    try:
        return os.sched_getscheduler(0) == os.SCHED_IDLE  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return False


def serve(fd: int, out, log_dir: str, token: str, pid: str, shadow=None) -> int:
    """The writer loop; returns the number of segments written. ``shadow``: a
    ``predlog_shadow.ShadowScorer`` (or None: no shadow scoring), started here once this process runs
    at its lowered priority, or at the first frame."""
    from mlops_assets.monitoring.served import SHADOW_PREFIX, write_segment
    from serving.inference.predlog_backfill import CatchUp, publish_once
    from serving.inference.predlog_format import packed_to_frame, rows_of, segment_name

    told_version: list = [None]

    def shadow_close(records: list, seq: int, suffix: str = "") -> None:
        """Score ``records`` with the shadow model and write them as the sibling segment (after the
        served one: it can only add rows, never cost one)."""
        if shadow is None or not records:
            return
        version = getattr(shadow.model, "version", None)
        if version != told_version[0]:
            told_version[0] = version
            tell({"shadow_version": version})
        scored, missing, reason = shadow.score(records)
        if scored:
            name = segment_name(token, pid, seq, suffix, SHADOW_PREFIX)
            try:
                # create-if-absent: another writer's catch-up may have scored this segment already
                if publish_once(packed_to_frame(scored), log_dir, name) is not None:
                    tell({"shadow": seq, "rows": rows_of(scored), "segment": name})
            except Exception as exc:  # noqa: BLE001 - counted as missing shadow rows
                missing += rows_of(scored)
                reason = f"{name}: {type(exc).__name__}: {exc}"
                shadow.note(reason)
        if missing:
            tell({"shadow": seq, "missing": missing, "reason": reason})

    def close(records: list, seq: int, suffix: str = "") -> dict:
        rows = rows_of(records)
        name = segment_name(token, pid, seq, suffix)
        try:
            write_segment(packed_to_frame(records), log_dir, name)
            return {"seq": seq, "rows": rows, "segment": name}
        except Exception as exc:  # noqa: BLE001 - reported to the worker, which counts the rows dropped
            return {"seq": seq, "rows": rows, "error": f"{name}: {type(exc).__name__}: {exc}"}

    def tell(ack: dict) -> None:
        try:
            out.write(json.dumps(ack) + "\n")
            out.flush()
        except (BrokenPipeError, OSError):  # the worker stopped reading: keep writing segments anyway
            pass

    catch_up = CatchUp(shadow, log_dir, tell) if shadow is not None else None

    def idle() -> float:
        """While no frame waits: start the shadow poller once it runs at idle priority, then catch up."""
        assert shadow is not None and catch_up is not None
        if not shadow.started:
            if not priority_lowered():
                return 0.5
            shadow.start()
        try:
            return catch_up.step()
        except Exception as exc:  # noqa: BLE001 - catch-up must never stop the served segments
            shadow.note(f"catch-up failed: {type(exc).__name__}: {exc}")
            return catch_up.scan_seconds

    pending: list = []
    last_seq, written = 0, 0
    for records, close_seq in read_frames(fd, idle if catch_up is not None else None):
        if shadow is not None:
            shadow.start()  # its poller thread starts after the worker set this process's priority
        pending.extend(records)
        if close_seq is not None:
            ack = close(pending, close_seq) if pending else {"seq": close_seq, "rows": 0, "segment": None}
            written += bool(ack.get("segment"))
            tell(ack)
            shadow_close(pending, close_seq)
            pending, last_seq = [], max(last_seq, close_seq)
    if pending:  # the worker went away without a last close
        ack = close(pending, last_seq + 1, "-eof")
        written += bool(ack.get("segment"))
        if "error" in ack:
            print(f"prediction-log writer: {ack['error']}", file=sys.stderr)
        shadow_close(pending, last_seq + 1, "-eof")
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (3, 4):
        print("usage: python -m serving.inference.predlog_writer LOG_DIR TOKEN PID [SHADOW_JSON]",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    shadow = None
    if len(args) == 4:
        from serving.inference.predlog_shadow import ShadowConfig, ShadowScorer

        shadow = ShadowScorer(ShadowConfig.from_json(args[3]))
    serve(sys.stdin.buffer.fileno(), sys.stdout, *args[:3], shadow=shadow)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

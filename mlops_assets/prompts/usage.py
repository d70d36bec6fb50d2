"""The LLM usage log: one row per ``/invoke`` call, append-only Parquet segments, and its summary.

The serving app builds a :class:`UsageRecord` per call (:meth:`UsageRecord.from_answer` takes the
LLM wrapper's answer dict; :meth:`UsageRecord.failure` a call that raised) and hands it to
:meth:`UsageLogger.log`: a ``deque`` append, O(1) and thread-safe, nothing else on the request
path. :meth:`UsageLogger.flush` (called by the background thread from :meth:`UsageLogger.start`,
by ``log`` when ``flush_rows`` are waiting and no thread runs, and by :meth:`UsageLogger.close`)
writes what is queued as one *closed* segment: a hidden temporary file, fsync, then a rename to
``usage-<process start>-<pid>-<seq>.parquet``, so readers only ever see complete files and
several workers can share the directory (``settings.serving_log_dir / "llm"``).

:func:`read_usage` reads every closed segment; :func:`summarise_usage` gives per template and
version: calls, success rate, latency p50/p95/p99, tokens in/out and how many answers were flagged.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, UTC
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from mlops_assets.data import segments

from mlops_assets.errors import MessageInput

USAGE_SUBDIR = "llm"
SEGMENT_PREFIX = "usage-"
SEGMENT_SUFFIX = ".parquet"
STATUS_OK, STATUS_BLOCKED, STATUS_ERROR = "ok", "blocked", "error"

USAGE_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    "request_id": pl.String(),
    "template_id": pl.String(),
    "template_version": pl.String(),
    "prompt_mlflow_version": pl.Int64(),
    "model": pl.String(),
    "status": pl.String(),           # ok | blocked (flagged and withheld) | error
    "http_status": pl.Int32(),
    "latency_ms": pl.Float64(),      # the whole call as the client saw it
    "llm_latency_ms": pl.Float64(),  # the model round trip only
    "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(),
    "flags": pl.List(pl.String()),   # moderation / groundedness flags of the answer
    "error": pl.String(),
    "cost_usd": pl.Float64(),        # what the call cost, when the caller says (external usage)
    "caller": pl.String(),           # who called: the application (external usage) or null (/invoke)
}
# columns added after segments were first written: older segments are read with them null
LATER_COLUMNS = ("cost_usd", "caller")

SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "template_id": pl.String(), "template_version": pl.String(), "calls": pl.Int64(), "succeeded": pl.Int64(),
    "success_rate": pl.Float64(), "blocked": pl.Int64(), "errors": pl.Int64(), "flagged": pl.Int64(),
    "latency_p50_ms": pl.Float64(), "latency_p95_ms": pl.Float64(), "latency_p99_ms": pl.Float64(),
    "tokens_in": pl.Int64(), "tokens_out": pl.Int64(), "first_call": pl.Datetime("us", "UTC"),
    "last_call": pl.Datetime("us", "UTC"),
}


class UsageLogError(MessageInput):
    """A usage record or segment is invalid; the message names the field or file."""
    subject = "usage"


def usage_log_dir(serving_log_dir: str | Path) -> Path:
    """Where the LLM usage segments live: ``<serving log dir>/llm``."""
    return Path(serving_log_dir) / USAGE_SUBDIR


class UsageRecord(NamedTuple):
    """One ``/invoke`` call (a NamedTuple: cheap to build on the request path)."""

    ts: float
    request_id: str | None
    template_id: str
    template_version: str | None
    prompt_mlflow_version: int | None
    model: str | None
    status: str
    http_status: int
    latency_ms: float
    llm_latency_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    flags: tuple[str, ...]
    error: str | None = None
    cost_usd: float | None = None
    caller: str | None = None

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any], *, latency_ms: float | None = None,
                    request_id: str | None = None, http_status: int = 200) -> UsageRecord:
        """From the dict ``LangGraphWrapper.predict`` returns (``blocked`` answers count as not ok)."""
        usage = answer.get("usage") or {}
        return cls(
            ts=time.time(), request_id=request_id or answer.get("request_id"),
            template_id=str(answer.get("prompt_id") or ""), template_version=answer.get("prompt_version"),
            prompt_mlflow_version=answer.get("prompt_mlflow_version"), model=answer.get("model"),
            status=STATUS_BLOCKED if answer.get("blocked") else STATUS_OK, http_status=int(http_status),
            latency_ms=float(latency_ms if latency_ms is not None else answer.get("latency_ms") or 0.0),
            llm_latency_ms=answer.get("llm_latency_ms"),
            prompt_tokens=int(usage.get("prompt_tokens", 0) or 0),
            completion_tokens=int(usage.get("completion_tokens", 0) or 0),
            flags=tuple(str(f) for f in answer.get("flags") or ()),
        )

    @classmethod
    def failure(cls, template_id: str, *, latency_ms: float, http_status: int, error: str,
                template_version: str | None = None, prompt_mlflow_version: int | None = None,
                request_id: str | None = None, model: str | None = None) -> UsageRecord:
        """A call that produced no answer (provider error, bad request, missing features)."""
        return cls(time.time(), request_id, template_id, template_version, prompt_mlflow_version, model,
                   STATUS_ERROR, int(http_status), float(latency_ms), None, 0, 0, (), error[:500])


def records_to_frame(records: list[UsageRecord]) -> pl.DataFrame:
    """Records as a frame with :data:`USAGE_SCHEMA`."""
    cols: dict[str, list[Any]] = {name: [] for name in USAGE_SCHEMA}
    for rec in records:
        for name, value in zip(UsageRecord._fields, rec):
            if name == "ts":
                value = datetime.fromtimestamp(value, tz=UTC)
            elif name == "flags":
                value = list(value)
            cols[name].append(value)
    return pl.DataFrame(cols, schema=USAGE_SCHEMA)


def write_segment(frame: pl.DataFrame, log_dir: str | Path, name: str) -> Path:
    """Write ``frame`` as the closed usage segment ``name``: hidden temp file, fsync, rename."""
    try:
        return segments.write_segment(frame, log_dir, name, USAGE_SCHEMA)
    except segments.SegmentError as exc:
        raise UsageLogError(str(exc)) from None


class UsageLogger(segments.SegmentLog[UsageRecord]):
    """Buffered, append-only usage log for one worker process (thread-safe); see ``data/segments.py``."""

    def __init__(self, log_dir: str | Path, flush_rows: int = 1000, flush_seconds: float = 5.0) -> None:
        if flush_rows < 1 or flush_seconds <= 0:
            raise UsageLogError("flush_rows must be >= 1 and flush_seconds > 0")
        super().__init__(log_dir, prefix=SEGMENT_PREFIX, schema=USAGE_SCHEMA, to_frame=records_to_frame,
                         flush_rows=flush_rows, flush_seconds=flush_seconds, name="llm-usage-log")

    def log(self, record: UsageRecord) -> None:
        """Queue one record (O(1)); flush when ``flush_rows`` are waiting."""
        self.append(record)


def append_usage(log_dir: str | Path, records: list[UsageRecord], source: str = "api") -> Path:
    """Append ``records`` to the usage log at once, as one closed segment of their own (for calls that
    other services report over the management API: nothing is buffered, so an answered request is on
    disk). The name ``usage-<source>-<utc time>-<pid>-<random>.parquet`` never collides with a worker's."""
    import os
    import secrets

    if not records:
        raise UsageLogError("records: nothing to append")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    name = f"{SEGMENT_PREFIX}{source}-{stamp}-{os.getpid()}-{secrets.token_hex(6)}{SEGMENT_SUFFIX}"
    return write_segment(records_to_frame(records), log_dir, name)


def list_segments(log_dir: str | Path) -> list[Path]:
    """Closed usage segments, oldest name first (temporary files are never listed)."""
    directory = Path(log_dir)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.name.startswith(SEGMENT_PREFIX) and p.name.endswith(SEGMENT_SUFFIX))


def read_usage(log_dir: str | Path) -> pl.DataFrame:
    """Every closed segment in ``log_dir`` as one frame (:data:`USAGE_SCHEMA`); empty when there is none."""
    paths = list_segments(log_dir)
    if not paths:
        return pl.DataFrame(schema=USAGE_SCHEMA)
    frames = []
    for path in paths:
        try:
            frame = pl.read_parquet(path)
            missing = [c for c in LATER_COLUMNS if c not in frame.columns]
            frame = frame.with_columns(pl.lit(None, dtype=USAGE_SCHEMA[c]).alias(c) for c in missing)
            frames.append(frame.select(list(USAGE_SCHEMA)).cast(USAGE_SCHEMA))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise UsageLogError(f"{path}: not a readable usage segment ({exc}); move it aside") from exc
    return pl.concat(frames, how="vertical")


def summarise_usage(df: pl.DataFrame) -> pl.DataFrame:
    """Per template and version: calls, success rate, latency percentiles, tokens, flagged answers.

    Percentiles are linear-interpolated (numpy's default); a call is a success when its status is
    ``ok``; ``flagged`` counts answers with at least one flag (blocked or not).
    """
    if df.is_empty():
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    latency = pl.col("latency_ms")
    return (
        df.group_by("template_id", "template_version")
        .agg(
            pl.len().cast(pl.Int64).alias("calls"),
            (pl.col("status") == STATUS_OK).sum().cast(pl.Int64).alias("succeeded"),
            (pl.col("status") == STATUS_BLOCKED).sum().cast(pl.Int64).alias("blocked"),
            (pl.col("status") == STATUS_ERROR).sum().cast(pl.Int64).alias("errors"),
            (pl.col("flags").list.len() > 0).sum().cast(pl.Int64).alias("flagged"),
            latency.quantile(0.50, "linear").alias("latency_p50_ms"),
            latency.quantile(0.95, "linear").alias("latency_p95_ms"),
            latency.quantile(0.99, "linear").alias("latency_p99_ms"),
            pl.col("prompt_tokens").sum().cast(pl.Int64).alias("tokens_in"),
            pl.col("completion_tokens").sum().cast(pl.Int64).alias("tokens_out"),
            pl.col("ts").min().alias("first_call"),
            pl.col("ts").max().alias("last_call"),
        )
        .with_columns((pl.col("succeeded") / pl.col("calls")).alias("success_rate"))
        .select(list(SUMMARY_SCHEMA))
        .cast(SUMMARY_SCHEMA)
        .sort("template_id", "template_version", nulls_last=True)
    )

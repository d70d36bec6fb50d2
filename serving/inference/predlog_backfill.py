"""Catch-up shadow scoring: served segments closed without a shadow sibling are scored later.

The writer process (``predlog_writer.py``) scores each segment it closes with the shadow model
right away (``predlog_shadow.py``). Some served segments get no sibling that way:

* the worker wrote them itself (the fallback: its writer was starved at idle priority under
  saturating load, could not start, or died);
* the shadow model was not loaded yet (the writer just started, or the alias did not exist), or it
  failed to score.

:class:`CatchUp` finds them and scores them, in the writer's main thread, one segment per step and
only while no frame from the worker is waiting (served segments always come first; the process runs
under ``SCHED_IDLE``, so this only takes CPU nothing else wants):

* a *pass* lists the log directory once and takes at most ``catch_up_segments`` served segments
  (``pred-*.parquet``, closed, in this directory only) that have no sibling ``shadow-*.parquet``,
  were modified at least ``catch_up_settle_seconds`` ago (their own writer scores them right after
  closing them) and within ``catch_up_hours`` (older ones are left alone: the log may be pruned, and
  the comparison is about recent traffic). It picks them at random, so the writers of several
  workers catching up on one backlog rarely score the same segment; the next pass follows at once
  while some are left, else after ``poll_seconds``;
* a *step* reads one of them and scores its rows from the segment itself: ``feature_names`` and
  ``feature_values`` are exactly the vectors the served model saw, so the shadow model sees them too
  (``predlog_shadow.score_vectors``, the same code as the normal path). Rows served by the shadow
  version itself are not scored again; a segment with nothing left to score, or whose scoring
  failed, is remembered (in this process) until the shadow version changes;
* the sibling is published with :func:`publish_once`: the finished, fsynced file is hard-linked to
  its final name, which fails when the name exists. Several workers' writers on one log directory
  (and the normal path racing a catch-up) therefore write at most one sibling per served segment,
  and a reader (``read_closed_segments(prefix=SHADOW_PREFIX)``) only ever sees whole files.

A caught-up row carries the shadow version that scored it: the alias's version at catch-up time,
which differs from the version the alias pointed to when the request was served if the alias moved in
between. ``latency_ms`` is the scoring time per row, as on the normal path.

Nothing here can cost a served row (served segments are only read), and every problem is logged once
per distinct problem on stderr (``ShadowScorer.note``). Each sibling written is reported to the
worker as ``{"shadow_caught_up": served segment, "segment", "rows", "version"}``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from mlops_assets.monitoring.served import (
    NAMES_COLUMN,
    SEGMENT_PREFIX,
    SEGMENT_SCHEMA,
    SEGMENT_SUFFIX,
    SHADOW_PREFIX,
    VALUES_COLUMN,
    write_segment,
)
from serving.inference.predlog_format import probability_column
from serving.inference.predlog_shadow import SHADOW_VARIANT, score_vectors

KEPT = ["request_id", "row", "ts", "entity", "snapshot_version", "request_features"]  # as served


def shadow_sibling(served_name: str) -> str:
    """The shadow segment's name for the served segment ``served_name`` (``pred-X`` -> ``shadow-X``)."""
    return SHADOW_PREFIX + served_name[len(SEGMENT_PREFIX):]


def publish_once(frame: pl.DataFrame, log_dir: str | Path, name: str) -> Path | None:
    """Write ``frame`` as the closed segment ``name`` unless that name exists; its path, or None when
    another writer got there first.

    The frame goes to a hidden file of this process and thread (temp, fsync, rename), which is then
    hard-linked to ``name``: the link fails if the name exists, so two writers never both create it,
    and the name only ever points to a finished file. On a file system without hard links an
    ``O_EXCL`` claim file decides instead (then a writer that dies holding a claim leaves that one
    segment without a sibling)."""
    directory = Path(log_dir)
    final = directory / name
    if final.exists():
        return None
    part = write_segment(frame, directory, f".{name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        try:
            os.link(part, final)
            return final
        except FileExistsError:
            return None
        except OSError:  # no hard links here (EPERM, ENOTSUP): claim the name instead
            return _publish_claimed(part, final)
    finally:
        part.unlink(missing_ok=True)


def _publish_claimed(part: Path, final: Path) -> Path | None:
    claim = final.with_name(f".{final.name}.claim")
    try:
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return None
    try:
        if final.exists():
            return None
        os.rename(part, final)
        return final
    finally:
        claim.unlink(missing_ok=True)


def shadow_frame(served: pl.DataFrame, model: Any) -> pl.DataFrame:
    """The shadow rows of ``served`` (a segment's rows, ``SEGMENT_SCHEMA``) scored with ``model``
    (a ``loaded.LoadedModel``): the same request ids, rows, times and entities, ``variant="shadow"``,
    the model's name, version and alias, and the vectors it was given."""
    key = "__names"
    parts = []
    for part in served.with_columns(pl.col(NAMES_COLUMN).list.join("\x1f").alias(key)).partition_by(key):
        names = part[NAMES_COLUMN][0].to_list()
        x = (part[VALUES_COLUMN].list.eval(pl.element().fill_null(float("nan")))
             .list.to_array(len(names)).to_numpy().astype(np.float64, copy=False).reshape(part.height, len(names)))
        xs, predictions, probabilities, per_row_ms = score_vectors(model, names, x)
        parts.append(part.select(KEPT).with_columns(
            pl.lit(model.name, dtype=pl.String()).alias("model_name"),
            pl.lit(model.version, dtype=pl.String()).alias("model_version"),
            pl.lit(model.alias, dtype=pl.String()).alias("alias"),
            pl.lit(SHADOW_VARIANT, dtype=pl.String()).alias("variant"),
            pl.Series("prediction", np.asarray(predictions, dtype=np.float64).reshape(-1)),
            pl.Series("probability", probability_column(probabilities, part.height), nan_to_null=True),
            pl.lit(per_row_ms, dtype=pl.Float64()).alias("latency_ms"),
            pl.lit(list(model.features), dtype=SEGMENT_SCHEMA[NAMES_COLUMN]).alias(NAMES_COLUMN),
            pl.Series(VALUES_COLUMN, xs.astype(np.float64)).cast(SEGMENT_SCHEMA[VALUES_COLUMN]),
        ))
    return pl.concat(parts).select(list(SEGMENT_SCHEMA)).cast(SEGMENT_SCHEMA)


class CatchUp:
    """Catch-up shadow scoring of one writer process over its log directory (module docstring)."""

    def __init__(self, scorer: Any, log_dir: str | Path, tell: Callable[[dict[str, Any]], None]) -> None:
        """``scorer``: the writer's ``predlog_shadow.ShadowScorer`` (its model and config); ``tell``:
        reports one acknowledgement to the worker."""
        cfg = scorer.config
        self.scorer, self.log_dir, self.tell = scorer, Path(log_dir), tell
        self.horizon = float(cfg.catch_up_hours) * 3600.0
        self.settle = float(cfg.catch_up_settle_seconds)
        self.per_pass = max(int(cfg.catch_up_segments), 1)
        self.scan_seconds = max(float(cfg.poll_seconds), 0.1)
        self.enabled = self.horizon > 0
        self.rows_caught_up = 0
        self._todo: list[str] = []
        self._settled: dict[str, str] = {}  # served segment -> the shadow version that left it without a sibling
        self._expired: set[str] = set()  # served segments older than the horizon (they stay older)
        self._random = random.Random()
        self._next_scan = 0.0

    def step(self) -> float:
        """One bounded piece of work (a listing, or one segment); the seconds until more is worth
        trying (0: there is more to do now)."""
        model = self.scorer.model
        if not self.enabled or model is None:
            return self.scan_seconds
        if not self._todo:
            now = time.monotonic()
            if now < self._next_scan:
                return self._next_scan - now
            self._todo, more = self.pending(model.version)
            self._next_scan = now + (0.0 if more else self.scan_seconds)
            return 0.0
        self.catch_up(self._todo.pop(0), model)
        return 0.0

    def pending(self, version: str) -> tuple[list[str], bool]:
        """One pass's served segments to score (at most ``per_pass``, at random) and whether more were
        left for the next pass."""
        try:
            names = [e.name for e in os.scandir(self.log_dir) if e.name.endswith(SEGMENT_SUFFIX)]
        except FileNotFoundError:
            return [], False
        present = set(names)
        self._settled = {n: v for n, v in self._settled.items() if n in present}
        self._expired &= present
        now, found = time.time(), []
        for name in names:
            if (not name.startswith(SEGMENT_PREFIX) or shadow_sibling(name) in present
                    or name in self._expired or self._settled.get(name) == version):
                continue
            try:
                age = now - os.stat(self.log_dir / name).st_mtime
            except FileNotFoundError:
                continue
            if age > self.horizon:
                self._expired.add(name)
            elif age >= self.settle:
                found.append(name)
        if len(found) <= self.per_pass:
            return found, False
        return self._random.sample(found, self.per_pass), True

    def catch_up(self, name: str, model: Any) -> int:
        """Score the served segment ``name`` with ``model`` and publish its sibling; the rows written
        (0: nothing to score, someone else wrote it, or a problem, which is noted)."""
        sibling = shadow_sibling(name)
        if (self.log_dir / sibling).exists():
            return 0
        try:
            served = pl.read_parquet(self.log_dir / name)
            served = served.cast({c: t for c, t in SEGMENT_SCHEMA.items() if c in served.columns})
        except FileNotFoundError:  # pruned since the listing
            return 0
        except Exception as exc:  # noqa: BLE001 - a damaged segment is the reader's to report; skip it
            return self._settle(name, model, f"catch-up cannot read {name}: {type(exc).__name__}: {exc}")
        eligible = served.filter(~((pl.col("model_name") == model.name)
                                   & (pl.col("model_version") == model.version)).fill_null(False))
        if eligible.is_empty():  # served by the shadow version itself
            return self._settle(name, model, None)
        try:
            frame = shadow_frame(eligible, model)
        except Exception as exc:  # noqa: BLE001 - never a lost served row
            return self._settle(name, model, f"catch-up scoring with {model.name} version {model.version} "
                                             f"failed: {type(exc).__name__}: {exc}")
        try:
            path = publish_once(frame, self.log_dir, sibling)
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk: tried again at the next pass
            self.scorer.note(f"catch-up cannot write {sibling}: {type(exc).__name__}: {exc}")
            return 0
        if path is None:
            return 0
        self.rows_caught_up += frame.height
        self.tell({"shadow_caught_up": name, "segment": sibling, "rows": frame.height, "version": model.version})
        return frame.height

    def _settle(self, name: str, model: Any, problem: str | None) -> int:
        """Leave ``name`` alone until the shadow version changes (``problem``: noted once)."""
        self._settled[name] = model.version
        if problem:
            self.scorer.note(problem)
        return 0

"""Catch-up shadow scoring on a real registry, real writer processes and real segments: served
segments closed without shadow rows (the worker's own fallback, or closed before the shadow alias
existed) get exactly one shadow sibling later, scored on the served vectors; two writers catching up
on one log directory write one sibling per segment."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlops_assets.monitoring.served import SHADOW_PREFIX, list_closed_segments
from mlops_assets_tests.serving.conftest import World, copy_version, wait_until
from serving.inference.predlog import PredictionLog
from serving.inference.predlog_backfill import publish_once, shadow_sibling
from serving.inference.predlog_format import LogRecord
from serving.inference.predlog_shadow import ShadowConfig

pytestmark = pytest.mark.xdist_group("serving")
KEY = ["request_id", "row"]


def _config(world: World, name: str) -> ShadowConfig:
    return ShadowConfig(name, "challenger", world.settings.mlflow_tracking_uri, poll_seconds=0.1,
                        catch_up_settle_seconds=0.2, catch_up_segments=2)


def _records(world: World, prefix: str, n: int, version: tuple[str, str] = ("m", "1")) -> list[LogRecord]:
    """``n`` served requests of 1-3 rows on real feature rows, the features in reverse model order (the
    shadow model takes its features by name)."""
    features = tuple(reversed(world.features))
    values = world.data.select(features).to_numpy().astype(np.float32)
    out = []
    for i in range(n):
        rows = values[(i * 3) % 600:(i * 3) % 600 + 1 + i % 3].copy()
        if i % 4 == 1:
            rows[0, 2] = np.nan  # a missing value is logged as such and imputed by the shadow model too
        out.append(LogRecord(f"{prefix}-{i}", time.time(), 0.4, version[0], version[1], "production",
                             "production", "snap", [f"S{j}" for j in range(len(rows))], features, rows,
                             np.ones(len(rows)), np.full(len(rows), 0.6, dtype=np.float32)))
    return out


def _fallback_log(log_dir: Path) -> PredictionLog:
    """The worker's own fallback: its writer process cannot start, so it writes every segment itself."""
    return PredictionLog(log_dir, flush_rows=10_000, flush_seconds=60,
                         python=str(log_dir.parent / "no-such-python")).start()


def _write(log: PredictionLog, records: list[LogRecord]) -> Path:
    for record in records:
        log.append(record)
    path = log.flush()
    assert path is not None
    return path


def _siblings_complete(log_dir: Path, skip: set[str] = frozenset()) -> bool:
    names = {p.name for p in list_closed_segments(log_dir)} - skip
    shadows = {p.name for p in list_closed_segments(log_dir, SHADOW_PREFIX)}
    return bool(names) and {shadow_sibling(n) for n in names} <= shadows


def _pairs(log_dir: Path, skip: set[str] = frozenset()) -> tuple[pl.DataFrame, pl.DataFrame]:
    served = pl.concat([pl.read_parquet(p).with_columns(pl.lit(p.name).alias("segment"))
                        for p in list_closed_segments(log_dir) if p.name not in skip])
    shadow = pl.concat([pl.read_parquet(p).with_columns(pl.lit(p.name).alias("segment"))
                        for p in list_closed_segments(log_dir, SHADOW_PREFIX)])
    return served, shadow


def test_segments_without_shadow_rows_are_caught_up_once_on_the_served_vectors(world: World,
                                                                                 tmp_path: Path) -> None:
    name = "shadow_catch_up"
    challenger = copy_version(world, name, world.v2)  # no alias yet
    log_dir = tmp_path / "log"
    # 1. the worker's own fallback: two segments, one more with requests the shadow version served itself
    fallback = _fallback_log(log_dir)
    for s in range(2):
        _write(fallback, _records(world, f"fb{s}", 5))
    mixed = _write(fallback, _records(world, "own", 2, version=(name, challenger)) + _records(world, "mixed", 3))
    # and one older than the horizon (24 h by default): left alone
    old = _write(fallback, _records(world, "old", 2))
    fallback.close()
    assert fallback.local_segments == 4 and fallback.rows_sent == 0
    day_ago = time.time() - 48 * 3600
    os.utime(old, (day_ago, day_ago))
    # 2. a writer process with shadow scoring on, before the alias exists: served rows, no shadow rows
    config = _config(world, name)
    live = PredictionLog(log_dir, flush_rows=10_000, flush_seconds=60, shadow=config).start()
    for s in range(2):
        _write(live, _records(world, f"early{s}", 4))
    wait_until(lambda: live.shadow_rows_missing == live.rows_written > 0, timeout=30,
               what="the writer counts the rows it could not score")
    assert live.local_segments == 0  # these two came from the writer process
    assert list_closed_segments(log_dir, SHADOW_PREFIX) == []
    # 3. the alias appears: the writer loads it and catches up on every segment within the horizon
    world.client().set_registered_model_alias(name, "challenger", challenger)
    wait_until(lambda: _siblings_complete(log_dir, {old.name}), timeout=120, interval=0.2,
               what="a shadow sibling for every served segment")
    first = {p.name: p.stat().st_mtime_ns for p in list_closed_segments(log_dir, SHADOW_PREFIX)}
    time.sleep(1.5)  # several more passes: nothing is scored twice, the old segment stays alone
    assert {p.name: p.stat().st_mtime_ns for p in list_closed_segments(log_dir, SHADOW_PREFIX)} == first
    assert shadow_sibling(old.name) not in first and len(first) == 5
    live.close()
    assert not [p for p in log_dir.iterdir() if p.name.endswith((".part", ".tmp", ".claim"))]

    served, shadow = _pairs(log_dir, {old.name})
    scored = served.filter(~pl.col("request_id").str.starts_with("own-"))  # served by the shadow version itself
    assert shadow.height == scored.height == shadow.unique(KEY).height  # one shadow row per served row
    assert live.shadow_rows_caught_up == shadow.height and live.shadow_rows_written == 0
    joined = scored.join(shadow, on=KEY, suffix="_shadow")
    assert joined.height == scored.height
    assert (joined["segment_shadow"] == joined["segment"].str.replace("^pred-", SHADOW_PREFIX)).all()
    for col in ("ts", "entity", "snapshot_version"):
        assert joined[col].equals(joined[f"{col}_shadow"], check_names=False)
    assert set(shadow["model_name"]) == {name} and set(shadow["model_version"]) == {challenger}
    assert set(shadow["variant"]) == {"shadow"} and set(shadow["alias"]) == {"challenger"}
    # exactly the served vectors, taken by name into the shadow model's order
    order = [world.features[::-1].index(f) for f in world.features]
    served_x = np.array(joined["feature_values"].to_list(), dtype=np.float64)[:, order]
    shadow_x = np.array(joined["feature_values_shadow"].to_list(), dtype=np.float64)
    assert joined["feature_names_shadow"][0].to_list() == list(world.features)
    assert np.array_equal(served_x, shadow_x, equal_nan=True) and np.isnan(shadow_x).any()
    # and the predictions are the shadow model's own on those vectors
    from mlops_assets.models.wrapper import load_wrapper

    expected = load_wrapper(f"models:/{name}/{challenger}", world.client()).predict(shadow_x.astype(np.float32))
    assert np.array_equal(np.asarray(expected.predictions, dtype=float), joined["prediction_shadow"].to_numpy())
    p = np.asarray(expected.probabilities, dtype=float).reshape(len(shadow_x), -1)
    p = p.max(axis=1) if p.shape[1] > 1 else p[:, 0]
    assert np.allclose(p, joined["probability_shadow"].to_numpy(), atol=1e-5, rtol=1e-4)
    assert shadow_sibling(mixed.name) in first


def test_a_starved_writer_catches_up_on_the_segments_its_worker_wrote_itself(world: World, tmp_path: Path) -> None:
    name = "shadow_catch_up_starved"
    copy_version(world, name, world.v2, alias="challenger")
    log_dir = tmp_path / "log"
    log = PredictionLog(log_dir, flush_rows=500, flush_seconds=0.2, shadow=_config(world, name)).start()
    warm = iter(range(10**6))
    try:
        wait_until(lambda: [log.append(r) for r in _records(world, f"warm{next(warm)}", 3)]
                   and log.shadow_rows_written > 0, timeout=90, interval=0.3, what="the writer scores shadow rows")
        os.kill(log.writer_pid, signal.SIGSTOP)  # as if the worker left its core no idle time
        try:
            for i in range(40):
                for record in _records(world, f"load{i}", 300):
                    log.append(record)
            wait_until(lambda: log.local_segments > 0, timeout=30, what="the worker writes segments itself")
        finally:
            os.kill(log.writer_pid, signal.SIGCONT)  # the load is over: idle CPU again
        wait_until(lambda: _siblings_complete(log_dir), timeout=120, interval=0.2,
                   what="a shadow sibling for every served segment, the worker's own ones too")
    finally:
        log.close()
    served, shadow = _pairs(log_dir)
    assert log.rows_dropped == 0 and served.height == log.rows_written == served.unique(KEY).height
    assert shadow.height == served.height == shadow.unique(KEY).height  # every served row, once
    assert log.shadow_rows_caught_up > 0 and log.shadow_rows_written + log.shadow_rows_caught_up == served.height


def test_two_writers_catching_up_on_one_log_write_one_sibling_per_segment(world: World, tmp_path: Path) -> None:
    name = "shadow_catch_up_two"
    copy_version(world, name, world.v2, alias="challenger")
    log_dir = tmp_path / "log"
    fallback = _fallback_log(log_dir)
    for s in range(16):
        _write(fallback, _records(world, f"seg{s}", 3))
    fallback.close()
    served_rows = pl.scan_parquet(list_closed_segments(log_dir)).select(pl.len()).collect().item()
    config = _config(world, name)
    # two workers' writer processes on one directory; neither gets a frame: they catch up from their start
    a = PredictionLog(log_dir, flush_rows=10_000, flush_seconds=60, shadow=config).start()
    b = PredictionLog(log_dir, flush_rows=10_000, flush_seconds=60, shadow=config).start()
    try:
        wait_until(lambda: _siblings_complete(log_dir), timeout=120, interval=0.2,
                   what="a shadow sibling for every served segment")
        # each sibling was reported by exactly one writer (a second write would count its rows twice)
        wait_until(lambda: a.shadow_rows_caught_up + b.shadow_rows_caught_up == served_rows, timeout=10,
                   what="the writers' reports")
        time.sleep(1.0)
        assert a.shadow_rows_caught_up + b.shadow_rows_caught_up == served_rows
    finally:
        a.close()
        b.close()
    served, shadow = _pairs(log_dir)
    assert len(list_closed_segments(log_dir, SHADOW_PREFIX)) == 16
    assert shadow.height == served_rows and shadow.unique(KEY).height == served_rows
    per_segment = served.join(shadow, on=KEY, suffix="_shadow")
    assert (per_segment["segment_shadow"] == per_segment["segment"].str.replace("^pred-", SHADOW_PREFIX)).all()
    assert not [p for p in log_dir.iterdir() if p.name.endswith((".part", ".tmp", ".claim"))]


def test_publish_once_lets_one_of_many_racing_writers_create_each_segment(tmp_path: Path) -> None:
    from mlops_assets.monitoring.served import SEGMENT_SCHEMA

    names = [f"shadow-race-{i:03d}.parquet" for i in range(20)]
    won: dict[str, list[int]] = {n: [] for n in names}
    start = threading.Barrier(6)

    def frame(writer: int) -> pl.DataFrame:
        row = {c: None for c in SEGMENT_SCHEMA} | {"request_id": f"writer-{writer}", "row": 0}
        return pl.DataFrame([row] * 500, schema=SEGMENT_SCHEMA)

    def race(writer: int) -> None:
        mine = frame(writer)
        start.wait()
        for n in names:
            if publish_once(mine, tmp_path, n) is not None:
                won[n].append(writer)

    threads = [threading.Thread(target=race, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(w) == 1 for w in won.values()), won
    for n, [writer] in won.items():  # the name holds the winner's whole file
        assert pl.read_parquet(tmp_path / n)["request_id"].to_list() == [f"writer-{writer}"] * 500
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no temporary file left behind

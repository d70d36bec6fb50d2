"""The prediction log: segments written atomically per worker and read back for drift."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlops_assets.monitoring.served import (
    ServedLogError,
    find_prediction,
    list_closed_segments,
    read_closed_segments,
)
from serving.predlog import LogRecord, PredictionLog

FEATURES = ("f0", "f1", "prediction")  # a feature named like a log column gets a prefix when read


def _record(i: int, n: int = 1, version: str = "1", multiclass: bool = False) -> LogRecord:
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3) + i
    x[0, 1] = np.nan
    probs = (np.full((n, 3), 1 / 3, dtype=np.float32) if multiclass
             else np.linspace(0.1, 0.9, n, dtype=np.float32))
    return LogRecord(f"req-{i}", time.time(), 0.5, "m", version, "production", "production", "snap-1",
                     [f"S{j}" for j in range(n)], FEATURES, x, np.arange(n), probs)


def test_segments_round_trip_with_features_expanded(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_rows=1000, flush_seconds=60)
    log.append(_record(0))
    log.append(_record(1, n=3, version="2"))
    first = log.flush()
    log.append(_record(2, multiclass=True, n=2))
    second = log.flush()
    assert log.flush() is None and first != second
    assert [p.name for p in list_closed_segments(tmp_path)] == sorted([first.name, second.name])
    (tmp_path / ".pred-x.parquet.tmp").write_bytes(b"half written")  # never listed
    frame = read_closed_segments(tmp_path)
    assert frame.height == 6
    assert frame["request_id"].to_list() == ["req-0", "req-1", "req-1", "req-1", "req-2", "req-2"]
    assert frame["row"].to_list() == [0, 0, 1, 2, 0, 1]
    assert frame["f0"].to_list() == [0.0, 1.0, 4.0, 7.0, 2.0, 5.0]
    assert frame["f1"].null_count() == 3  # NaN is logged as a missing value
    assert frame["feature_prediction"].to_list() == [2.0, 3.0, 6.0, 9.0, 4.0, 7.0]
    assert frame["probability"].to_list() == pytest.approx([0.1, 0.1, 0.5, 0.9, 1 / 3, 1 / 3])
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    assert set(frame["segment"]) == {first.name, second.name}
    assert read_closed_segments(tmp_path, exclude=[first.name]).height == 2
    raw = read_closed_segments(tmp_path, features=False)
    assert raw["feature_names"][0].to_list() == list(FEATURES)
    assert raw.schema["feature_values"] == pl.List(pl.Float64)
    hit = find_prediction(tmp_path, "req-1", row=2)
    assert hit["entity"] == "S2" and hit["features"] == {"f0": 7.0, "f1": 8.0, "prediction": 9.0}
    assert find_prediction(tmp_path, "req-1", row=7) is None


def test_background_thread_closes_segments_by_rows_and_at_close(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_rows=4, flush_seconds=30)
    log.start()
    for i in range(4):
        log.append(_record(i))
    deadline = time.monotonic() + 10
    while not list_closed_segments(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert read_closed_segments(tmp_path).height == 4  # closed by the row count, long before 30 s
    log.append(_record(9))
    log.close()
    assert read_closed_segments(tmp_path).height == 5 and log.rows_written == 5
    names = [p.name for p in list_closed_segments(tmp_path)]
    assert all(f"-{__import__('os').getpid()}-" in n for n in names)


def test_empty_and_damaged_logs(tmp_path: Path) -> None:
    assert read_closed_segments(tmp_path / "missing").height == 0
    (tmp_path / "pred-bad.parquet").write_text("not parquet")
    with pytest.raises(ServedLogError, match="pred-bad.parquet"):
        read_closed_segments(tmp_path)

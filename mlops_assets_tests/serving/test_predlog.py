"""The prediction log: segments written atomically per worker and read back for drift."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from mlops_assets.data.segments import SegmentError
from mlops_assets.monitoring.served import (
    ServedLogError,
    find_prediction,
    list_closed_segments,
    read_closed_segments,
)
from serving.inference.predlog import PredictionLog
from serving.inference.predlog_format import LogRecord

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


def _wait(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _dead(pid: int) -> bool:
    """A zombie, or already reaped (the flusher thread may notice the death first and wait for it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
    except FileNotFoundError:
        return True


def test_writer_process_writes_segments_at_idle_priority(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_rows=1000, flush_seconds=60).start()
    writer = log.writer_pid
    assert writer is not None and writer != os.getpid()
    assert os.sched_getscheduler(writer) == os.SCHED_IDLE and log.writer_priority == "idle"
    assert os.getpgid(writer) == os.getpgid(0)  # in the worker's group: counted and listed with it

    def ignores_sigint() -> bool:
        status = Path(f"/proc/{writer}/status").read_text()
        mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
        return bool(mask & (1 << (signal.SIGINT - 1)))

    _wait(ignores_sigint)
    os.kill(writer, signal.SIGINT)  # a terminal's Ctrl-C does not cut the writer short
    log.append(_record(0))
    log.append(_record(1, n=2))
    path = log.flush()
    assert path is not None and path.parent == tmp_path and f"-{os.getpid()}-" in path.name
    assert pl.read_parquet(path)["request_id"].to_list() == ["req-0", "req-1", "req-1"]
    assert log.flush() is None  # nothing new
    log.append(_record(2))
    log.close()
    assert log.writer_pid is None and log.local_segments == 0
    assert (log.segments_written, log.rows_written, log.rows_dropped) == (2, 4, 0)
    with pytest.raises(ProcessLookupError):  # it exited at the end of its input
        os.kill(writer, 0)
    assert sorted(read_closed_segments(tmp_path)["request_id"]) == ["req-0", "req-1", "req-1", "req-2"]


def test_a_killed_writer_loses_only_what_it_held(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_rows=1000, flush_seconds=60).start()
    for i in range(3):
        log.append(_record(i))
    _wait(lambda: log.rows_sent == 3)  # handed over, not yet closed into a segment
    writer = log.writer_pid
    os.kill(writer, signal.SIGKILL)
    _wait(lambda: _dead(writer))  # its pipe is closed
    log.append(_record(3))
    log.append(_record(4, n=2))
    log.close()  # the broken pipe switches the log to writing here
    assert log.rows_dropped == 3 and log.local_segments == 1
    assert read_closed_segments(tmp_path)["request_id"].to_list() == ["req-3", "req-4", "req-4"]


def test_a_starved_writer_is_relieved_and_nothing_is_lost_or_doubled(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_rows=500, flush_seconds=0.2).start()
    os.kill(log.writer_pid, signal.SIGSTOP)  # as if the worker left its core no idle time
    try:
        n = 12_000  # several times what the pipe holds
        for i in range(n):
            log.append(_record(i))
        _wait(lambda: log.local_segments > 0)
    finally:
        os.kill(log.writer_pid, signal.SIGCONT)
    log.close()
    ids = read_closed_segments(tmp_path, features=False)["request_id"]
    assert ids.len() == n and ids.n_unique() == n
    assert log.rows_dropped == 0 and log.rows_written == n
    assert 0 < log.rows_sent < n  # some through the writer process, the rest written here


def test_a_worker_that_dies_leaves_its_rows_with_the_writer(tmp_path: Path) -> None:
    script = f"""
import os, sys, time
sys.path[:0] = {sys.path!r}
from mlops_assets_tests.serving.test_predlog import _record
from serving.inference.predlog import PredictionLog
log = PredictionLog({str(tmp_path)!r}, flush_rows=1000, flush_seconds=60).start()
for i in range(5):
    log.append(_record(i))
while log.rows_sent < 5:
    time.sleep(0.01)
os._exit(0)  # no close(): the writer sees the end of its input
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    _wait(lambda: len(list_closed_segments(tmp_path)) == 1, seconds=30)
    (segment,) = list_closed_segments(tmp_path)
    assert segment.name.endswith("-eof.parquet")
    assert read_closed_segments(tmp_path)["request_id"].to_list() == [f"req-{i}" for i in range(5)]


def test_a_writer_that_cannot_start_leaves_the_worker_writing_its_segments(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "log", flush_rows=3, flush_seconds=60,
                        python=str(tmp_path / "no-such-python")).start()
    assert log.writer_pid is None and log.writer_priority == ""
    for i in range(4):
        log.append(_record(i))
    _wait(lambda: log.local_segments == 1)  # closed by the row count in the flusher thread
    log.append(_record(4, n=2))
    log.close()
    assert (log.local_segments, log.rows_written, log.rows_dropped, log.rows_sent) == (2, 6, 0, 0)
    frame = read_closed_segments(tmp_path / "log")
    assert frame["request_id"].to_list() == [f"req-{i}" for i in range(4)] + ["req-4", "req-4"]
    assert all(f"-{os.getpid()}-" in name and not name.endswith("-eof.parquet") for name in frame["segment"])


def test_bad_log_settings_are_named_errors(tmp_path: Path) -> None:
    with pytest.raises(SegmentError, match="flush_rows"):
        PredictionLog(tmp_path, flush_rows=0)
    with pytest.raises(TypeError, match="writer"):  # one design: there is no writer mode to choose
        PredictionLog(tmp_path, writer="thread")


def test_the_log_writer_setting_is_deprecated_with_a_note_and_refuses_unknown_values(tmp_path: Path) -> None:
    from mlops_assets.settings import SettingsError, load_settings

    def settings_with(serving: dict):
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"home": str(tmp_path / "home"), "serving": serving}))
        return load_settings(env={}, config_path=config)

    with pytest.warns(FutureWarning, match="serving.log_writer is deprecated"):
        assert settings_with({"log_writer": "process"}).serving.log_writer == "process"
    with pytest.warns(FutureWarning, match="thread mode was removed"):  # one release of grace, same design
        assert settings_with({"log_writer": "thread"}).serving.log_writer == "thread"
    with pytest.raises(SettingsError, match=r"serving\.log_writer: .*'fibre'.*remove serving\.log_writer"):
        settings_with({"log_writer": "fibre"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note when the key is absent
        assert settings_with({}).serving.log_writer is None


def test_the_writer_process_imports_stay_light() -> None:
    """The writer starts at idle priority beside a busy worker: it must not import scipy/pandas
    (the drift modules) just to write segments (that once took ~2 s of its CPU)."""
    code = ("import sys; import serving.inference.predlog_writer, serving.inference.predlog, "
            "mlops_assets.monitoring.served; "
            "print(sorted(m for m in ('scipy', 'pandas', 'sklearn', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_management_apps_previous_module_name_still_serves_it_with_a_note() -> None:
    import importlib

    import serving.management.main as management

    with pytest.warns(FutureWarning, match="serving.management.main:app"):
        old = importlib.reload(importlib.import_module("serving.api")) if "serving.api" in sys.modules \
            else importlib.import_module("serving.api")
    assert old.app is management.app

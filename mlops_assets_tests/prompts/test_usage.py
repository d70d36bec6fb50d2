"""The LLM usage log: records from the wrapper's answers, closed segments from several threads, summary."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlops_assets.prompts.usage import (USAGE_SCHEMA, UsageLogError, UsageLogger, UsageRecord,
                                           list_segments, read_usage, summarise_usage, usage_log_dir)


def _answer(version: str, latency: float, *, blocked: bool = False, flags: tuple[str, ...] = ()) -> dict:
    """The shape of ``LangGraphWrapper.predict``'s answer (the fields the log reads)."""
    return {"prompt_id": "market_narrative", "prompt_version": version, "prompt_mlflow_version": 3,
            "model": "gpt-4o-mini", "blocked": blocked, "flags": list(flags), "latency_ms": latency,
            "llm_latency_ms": latency - 5, "usage": {"prompt_tokens": 100, "completion_tokens": 40,
                                                     "total_tokens": 140}}


def test_round_trip_from_several_threads_and_summary(tmp_path: Path) -> None:
    log_dir = usage_log_dir(tmp_path / "serving")
    latencies = {"1.0.0": [float(v) for v in range(10, 210, 2)], "1.1.0": [50.0, 70.0, 90.0, 400.0]}
    logger = UsageLogger(log_dir, flush_rows=25)

    def worker(version: str, values: list[float]) -> None:
        for i, value in enumerate(values):
            flagged = version == "1.1.0" and i == 3
            logger.log(UsageRecord.from_answer(_answer(version, value, blocked=flagged,
                                                       flags=("toxic",) if flagged else ()),
                                               request_id=f"{version}-{i}"))

    threads = [threading.Thread(target=worker, args=item) for item in latencies.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logger.log(UsageRecord.failure("market_narrative", template_version="1.1.0", latency_ms=30_000.0,
                                   http_status=502, error="APITimeoutError: timed out"))
    logger.close()
    assert logger.rows_written == 105 and logger.rows_dropped == 0
    assert len(list_segments(log_dir)) >= 4  # flushed every 25 rows, plus the rest at close
    assert not [p for p in log_dir.iterdir() if p.name.endswith(".tmp")]

    df = read_usage(log_dir)
    assert df.schema == pl.Schema(USAGE_SCHEMA) and df.height == 105
    assert df.filter(pl.col("status") == "error")["error"].to_list() == ["APITimeoutError: timed out"]

    summary = {r["template_version"]: r for r in summarise_usage(df).iter_rows(named=True)}
    old, new = summary["1.0.0"], summary["1.1.0"]
    ref = np.array(latencies["1.0.0"])
    assert old["calls"] == 100 and old["success_rate"] == 1.0 and old["flagged"] == 0
    for q, key in ((50, "latency_p50_ms"), (95, "latency_p95_ms"), (99, "latency_p99_ms")):
        assert old[key] == pytest.approx(np.percentile(ref, q))
    assert (old["tokens_in"], old["tokens_out"]) == (100 * 100, 100 * 40)
    # 1.1.0: three ok, one blocked (flagged), one provider error
    assert (new["calls"], new["succeeded"], new["blocked"], new["errors"], new["flagged"]) == (5, 3, 1, 1, 1)
    assert new["success_rate"] == pytest.approx(0.6)
    assert new["latency_p50_ms"] == pytest.approx(np.percentile([50, 70, 90, 400, 30_000], 50))
    assert new["tokens_in"] == 400  # the failed call used no tokens


def test_empty_and_unreadable_logs(tmp_path: Path) -> None:
    empty = read_usage(tmp_path / "missing")
    assert empty.is_empty() and empty.schema == pl.Schema(USAGE_SCHEMA)
    assert summarise_usage(empty).is_empty()
    assert UsageLogger(tmp_path / "x").flush() is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "usage-broken.parquet").write_text("not parquet")
    with pytest.raises(UsageLogError, match="usage-broken.parquet: not a readable usage segment"):
        read_usage(tmp_path / "bad")


def test_background_flush_writes_without_an_explicit_flush(tmp_path: Path) -> None:
    with UsageLogger(tmp_path, flush_rows=1000, flush_seconds=0.05).start() as logger:
        logger.log(UsageRecord.from_answer(_answer("1.0.0", 12.0), latency_ms=15.0))
        for _ in range(100):
            if list_segments(tmp_path):
                break
            threading.Event().wait(0.02)
        assert list_segments(tmp_path), "the background thread did not flush"
    assert read_usage(tmp_path)["latency_ms"].to_list() == [15.0]

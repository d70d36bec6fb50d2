"""The prediction log read back for monitoring: the per-version summary (rows, requests, latency
percentiles) against numpy, and the fingerprint a sensor polls."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

from mlops_assets.monitoring.served import (
    SEGMENT_SCHEMA,
    log_fingerprint,
    read_closed_segments,
    served_summary,
    write_segment,
)


def segment(version: str, latencies: list[float], first_request: int = 0, rows_per_request: int = 1) -> pl.DataFrame:
    t0 = dt.datetime(2026, 3, 2, 14, 30, tzinfo=dt.UTC)
    n = len(latencies)
    return pl.DataFrame({
        "request_id": [f"r{first_request + i // rows_per_request}" for i in range(n)],
        "row": [i % rows_per_request for i in range(n)],
        "ts": [t0 + dt.timedelta(seconds=i) for i in range(n)],
        "entity": ["SPX"] * n, "model_name": ["m"] * n, "model_version": [version] * n,
        "alias": ["production"] * n, "variant": ["main"] * n, "snapshot_version": ["s1"] * n,
        "prediction": [1.0] * n, "probability": [0.6] * n, "latency_ms": latencies,
        "feature_names": [["ret_1d"]] * n, "feature_values": [[0.01]] * n, "request_features": [None] * n,
    }, schema=SEGMENT_SCHEMA)


def test_summary_per_version_matches_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    v9, v10 = rng.gamma(2.0, 3.0, 41).round(3).tolist(), rng.gamma(2.0, 9.0, 17).round(3).tolist()
    write_segment(segment("9", v9[:20]), tmp_path, "pred-a-1.parquet")
    write_segment(segment("9", v9[20:], first_request=20), tmp_path, "pred-a-2.parquet")
    write_segment(segment("10", v10, first_request=100, rows_per_request=2), tmp_path, "pred-b-1.parquet")
    summary = served_summary(read_closed_segments(tmp_path))
    assert summary["model_version"].to_list() == ["10", "9"]  # newest version first, by number not text
    for version, latencies in (("9", v9), ("10", v10)):
        row = summary.filter(pl.col("model_version") == version).row(0, named=True)
        assert row["rows"] == len(latencies)
        for name, q in (("latency_p50_ms", 50), ("latency_p95_ms", 95), ("latency_p99_ms", 99)):
            assert np.isclose(row[name], np.percentile(latencies, q)), (version, name)
    assert summary.filter(pl.col("model_version") == "10")["requests"].item() == 9  # 17 rows, 2 per request


def test_summary_of_an_empty_log_has_the_columns(tmp_path: Path) -> None:
    summary = served_summary(read_closed_segments(tmp_path / "missing"))
    assert summary.height == 0 and "latency_p99_ms" in summary.columns


def test_fingerprint_changes_only_when_a_segment_closes(tmp_path: Path) -> None:
    assert log_fingerprint(tmp_path / "missing") == "" and log_fingerprint(tmp_path) == ""
    write_segment(segment("1", [1.0, 2.0]), tmp_path, "pred-a-1.parquet")
    first = log_fingerprint(tmp_path)
    (tmp_path / ".pred-a-2.parquet.tmp").write_bytes(b"half written")  # an open segment is not listed
    assert first and log_fingerprint(tmp_path) == first
    write_segment(segment("1", [3.0]), tmp_path, "pred-a-2.parquet")
    assert log_fingerprint(tmp_path) not in ("", first)

"""Smoke test of benchmarks/features.py on tiny data: every stage runs and polars equals pandas."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "features.py"


def test_benchmark_runs_and_pandas_reference_agrees(capsys) -> None:  # noqa: ANN001
    spec = importlib.util.spec_from_file_location("bench_features", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--symbols", "12", "--days", "260", "--sample", "2000"])
    assert report["rows"] == 12 * 260
    assert set(report["stages"]) == {"generate", "features", "warehouse", "catalog", "statistics", "online", "dataset"}
    assert report["equality_check"]["rows"] == 2000
    assert report["lock_violations"] == 0 and report["snapshot_entities"] == 12
    assert all(size < 100_000 for size in report["png_bytes"])
    assert "polars vs pandas" in capsys.readouterr().out

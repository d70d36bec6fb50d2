"""evidently_drift_report writes Evidently's HTML and returns Evidently's own verdicts."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from mlops_assets.monitoring.drift import fast_drift
from mlops_assets.monitoring.evidently_report import evidently_drift_report
from mlops_assets_tests.monitoring.conftest import make_window

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Evidently's numpy/scipy warnings


def test_report_writes_html_and_returns_verdicts(tmp_path: Path):
    reference = pl.from_pandas(make_window(1500, seed=30))
    current = pl.from_pandas(make_window(1500, seed=31, shift=0.6))
    columns = ["cont", "wide_int", "regime", "flag", "proba"]
    out = tmp_path / "reports" / "drift.html"

    report = evidently_drift_report(
        reference, current, columns, ["regime", "flag"], out,
        threshold_share=0.4, prediction_columns=["proba"],
    )

    assert report["html_path"] == str(out)
    html = out.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "wide_int" in html and "Wasserstein" in html
    assert "<script src=" not in html  # self-contained: opens offline
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # no temporary file left
    by_column = {c["column"]: c for c in report["columns"]}
    assert sorted(by_column) == sorted(columns)
    assert by_column["cont"]["method"] == "wasserstein"
    assert by_column["cont"]["method_display"] == "Wasserstein distance (normed)"
    assert by_column["regime"]["method"] == "jensenshannon" and by_column["proba"]["kind"] == "prediction"
    assert by_column["cont"]["drifted"] and by_column["cont"]["score"] > 0.1
    assert report["threshold_share"] == 0.4 and report["n_columns"] == 5
    assert report["dataset_drift"] == (report["share_drifted"] >= 0.4)

    fast = fast_drift(reference, current, columns, ["regime", "flag"], threshold_share=0.4)
    assert dict(fast.per_column.select("column", "drifted").iter_rows()) == {
        c: v["drifted"] for c, v in by_column.items()
    }
    assert fast.share_drifted == report["share_drifted"] and fast.dataset_drift == report["dataset_drift"]


def test_benchmark_script_runs_and_agrees(capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "drift.py"
    spec = importlib.util.spec_from_file_location("drift_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = module.main(["--rows", "3000", "--features", "7", "--evidently-rows", "1500"])
    assert figures["n_same_verdict"] == figures["n_same_method"] == figures["n_columns"] == 7
    assert figures["max_abs_score_diff"] < 1e-9 and figures["same_column_set"]
    assert figures["dataset_drift_fast"] == figures["dataset_drift_evidently"]
    assert "verdicts equal: 7/7 columns" in capsys.readouterr().out

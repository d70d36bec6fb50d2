"""Evidently 0.7 drift report: the HTML a person reads, and Evidently's own verdicts.

This runs Evidently's full ``DataDriftPreset`` (slow on large windows: ~1 minute per million rows on a
small machine); :func:`mlops_assets.monitoring.drift.fast_drift` gives the same verdicts quickly. The
Dagster layer renders this report for people (on a sample or a small window if time matters) and uses
``fast_drift`` for decisions.

Evidently is imported inside the functions: importing it takes seconds.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from mlops_assets.monitoring.columns import DriftInputError, Frame, resolve_column_types
from mlops_assets.monitoring.stattests import METHODS_BY_DISPLAY_NAME


def _to_pandas(frame: Frame, name: str) -> pd.DataFrame:
    if isinstance(frame, pl.DataFrame):
        return frame.to_pandas()
    if isinstance(frame, pd.DataFrame):
        return frame
    raise DriftInputError(name, f"must be a pandas or polars DataFrame, got {type(frame).__name__}")


def run_evidently_drift(
    reference: Frame,
    current: Frame,
    columns: Sequence[str] | None = None,
    categorical_columns: Sequence[str] | None = None,
    threshold_share: float = 0.5,
) -> Any:
    """Run ``Report([DataDriftPreset()], include_tests=True)`` and return Evidently's snapshot.

    With ``categorical_columns=None`` Evidently infers column types itself (from the current data);
    otherwise every tested column not in ``categorical_columns`` is declared numerical.
    ``include_tests=True`` only adds Evidently's pass/fail test per column (its drift verdict).
    """
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's opt-out for usage telemetry (UI only today)
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref = _to_pandas(reference, "reference")
    cur = _to_pandas(current, "current")
    definition = None
    tested = list(columns) if columns is not None else None
    if categorical_columns is not None:
        types = resolve_column_types(cur, columns, categorical_columns)
        tested = list(types)
        cats = [c for c, t in types.items() if t.value == "categorical"]
        nums = [c for c, t in types.items() if t.value == "numerical"]
        definition = DataDefinition(numerical_columns=nums, categorical_columns=cats)
    report = Report([DataDriftPreset(columns=tested, drift_share=threshold_share)], include_tests=True)
    return report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )


def verdicts_from_snapshot(snapshot: Any, prediction_columns: Sequence[str] = ()) -> dict[str, Any]:
    """Evidently's per-column method, score, threshold and drift flag, and its dataset verdict.

    Reads the snapshot's ``dict()``: each ``ValueDrift`` metric (score, resolved method and threshold),
    its test (``FAIL`` = drift) and the ``DriftedColumnsCount`` metric with its ``lt`` test.
    """
    payload = snapshot.dict()
    status_by_metric = {t["metric_config"]["metric_id"]: t["status"] for t in payload.get("tests", [])}
    columns: list[dict[str, Any]] = []
    dataset: dict[str, Any] = {}
    for metric in payload["metrics"]:
        config = metric["config"]
        kind = config.get("type", "")
        if kind.endswith(":ValueDrift"):
            display = config["method"]
            method = METHODS_BY_DISPLAY_NAME.get(display)
            status = status_by_metric.get(metric["id"])
            columns.append(
                {
                    "column": config["column"],
                    "kind": "prediction" if config["column"] in prediction_columns else "feature",
                    "method": method.name if method is not None else display,
                    "method_display": display,
                    "score": float(metric["value"]),
                    "threshold": float(config["threshold"]),
                    "drifted": status == "FAIL",
                }
            )
        elif kind.endswith(":DriftedColumnsCount"):
            value = metric["value"]
            share = float(value["share"])
            drift_share = float(config.get("drift_share", 0.5))
            status = status_by_metric.get(metric["id"])
            dataset = {
                "n_drifted": int(value["count"]),
                "share_drifted": share,
                "threshold_share": drift_share,
                "dataset_drift": status == "FAIL" if status is not None else share >= drift_share,
            }
    if not dataset:
        raise DriftInputError("snapshot", "has no DriftedColumnsCount metric", "run a DataDriftPreset report")
    return {"columns": columns, "n_columns": len(columns), **dataset}


def evidently_drift_report(
    reference: Frame,
    current: Frame,
    columns: Sequence[str] | None,
    categorical_columns: Sequence[str] | None,
    out_html: Path,
    threshold_share: float = 0.5,
    prediction_columns: Sequence[str] = (),
) -> dict[str, Any]:
    """Render Evidently's drift report to ``out_html`` and return Evidently's verdicts.

    The result is :func:`verdicts_from_snapshot` plus ``html_path``. The HTML file is written to a
    temporary name and renamed, so a reader never sees half a report.
    """
    snapshot = run_evidently_drift(reference, current, columns, categorical_columns, threshold_share)
    verdicts = verdicts_from_snapshot(snapshot, prediction_columns)
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_html.name}.", suffix=".tmp", dir=out_html.parent)
    os.close(fd)
    try:
        snapshot.save_html(tmp_name)
        os.replace(tmp_name, out_html)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return {**verdicts, "html_path": str(out_html)}

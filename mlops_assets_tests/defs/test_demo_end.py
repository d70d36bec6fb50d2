"""How the demo ends: a gate that refuses is a clean end (exit 0, the reasons printed, and `mlops
status` shows the same verdicts); a failure of the platform itself still exits non-zero.

Real parts: a temporary MLOPS_HOME, the real Dagster instance, MLflow on SQLite, DuckDB; small data.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest
from typer.testing import CliRunner

from mlops_assets_tests.defs.conftest import build, write_config


def _configure(home: Path, monkeypatch: pytest.MonkeyPatch, overrides: dict) -> None:
    from mlops_assets.settings import get_settings

    monkeypatch.setenv("MLOPS_CONFIG", str(write_config(home, overrides)))
    get_settings.cache_clear()


def _demo(home: Path, instance: dg.DagsterInstance) -> tuple[int, list[str]]:
    from mlops_assets.defs.demo import run_demo

    lines: list[str] = []
    code = run_demo(build(home), instance, echo=lines.append)
    return code, lines


def _tail(lines: list[str]) -> list[str]:
    tail = lines[lines.index("== demo result =="):]
    print("\n".join(tail))  # shown with pytest -rP
    return tail


def test_a_compliance_threshold_nothing_passes_ends_cleanly_with_the_reasons(
        small_home: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    # the evaluation gate lets anything through; compliance wants the model to beat the best baseline
    # by a full unit of ROC AUC, which no model can
    _configure(small_home, monkeypatch, {"model": {"gate_threshold": 0.0},
                                         "evaluation": {"metric_margin_over_baseline": 1.0}})
    code, lines = _demo(small_home, instance)
    tail = _tail(lines)
    assert code == 0, "\n".join(lines)
    assert any("REFUSED by compliance_gate" in line for line in tail), tail
    assert any(line.startswith("  evaluation_gate: passed") for line in tail), tail
    # the compliance check that compares the metric with the best baseline (ROC AUC 0.5) plus the margin of 1,
    # with its value, threshold and why
    failed = [line for line in tail if re.match(r"^    metric_vs_baseline: value \S+, threshold 1\.5 - \S", line)]
    assert len(failed) == 1, tail
    assert not any(line.startswith("platform failure") for line in tail)
    assert tail[-1].startswith("exit 0: the gates refused")

    from mlops_assets.cli import app

    status = CliRunner().invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    assert "latest v1 gates:" in status.output
    assert "compliance_gate: REFUSED" in status.output
    assert failed[0].strip() in status.output  # the same check, value, threshold and message


def test_an_evaluation_threshold_nothing_passes_ends_cleanly(
        small_home: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    _configure(small_home, monkeypatch, {"model": {"gate_threshold": 1.0}})
    code, lines = _demo(small_home, instance)
    tail = _tail(lines)
    assert code == 0, "\n".join(lines)
    assert any("REFUSED by evaluation_gate" in line for line in tail), tail
    assert any(line.startswith("  evaluation_gate: REFUSED") for line in tail), tail
    assert any(line.startswith("    test_auc: value ") and "threshold 1" in line for line in tail), tail
    assert any(line.startswith("  compliance_gate: not run") for line in tail), tail
    # the refused version was not evaluated, so nothing was staged
    assert not any(line.startswith("model version") for line in lines)


def test_a_failure_of_the_platform_itself_still_exits_non_zero(
        small_home: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = small_home.parent / "prices"
    bad.mkdir()
    (bad / "ABC.csv").write_text("Date,Open,High,Low,Adj Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n")
    monkeypatch.setenv("DATA_LOADER_TYPE", "local")
    monkeypatch.setenv("DATA_SOURCE_PATH", str(bad))
    _configure(small_home, monkeypatch, {})
    code, lines = _demo(small_home, instance)
    tail = _tail(lines)
    assert code == 1, "\n".join(lines)
    failures = [line for line in tail if line.startswith("platform failure: demo_job: step raw_market_data failed")]
    assert len(failures) == 1 and "close" in failures[0], tail
    assert tail[-1].startswith("exit 1: the platform itself failed")

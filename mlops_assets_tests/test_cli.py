"""The ``mlops`` command: the pre-merge feature schema check, and readable errors."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import polars as pl
from typer.testing import CliRunner

from mlops_assets.cli import app
from mlops_assets.features.views import FEATURE_VIEWS

runner = CliRunner()


def test_features_check_passes_on_the_committed_lock() -> None:
    # the same command CI runs before merge, in its own process
    out = subprocess.run([sys.executable, "-m", "mlops_assets.cli", "features", "check"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "match the lock file" in out.stdout


def test_features_check_fails_on_an_unversioned_schema_change(monkeypatch) -> None:
    view = FEATURE_VIEWS[0]
    dropped = replace(view, features=view.features[:-1])  # a column removed, version unchanged
    monkeypatch.setattr("mlops_assets.features.views.FEATURE_VIEWS", (dropped, *FEATURE_VIEWS[1:]))
    result = runner.invoke(app, ["features", "check"])
    assert result.exit_code == 1
    assert view.features[-1].name in result.output
    assert "Traceback" not in result.output


def test_features_lock_refuses_to_record_a_breaking_change(monkeypatch, tmp_path) -> None:
    lock = tmp_path / "views.lock.json"
    assert runner.invoke(app, ["features", "lock", "--lock", str(lock)]).exit_code == 0
    view = FEATURE_VIEWS[0]
    retyped = replace(view, features=tuple(replace(f, dtype=pl.Float32()) if i == 0 else f
                                           for i, f in enumerate(view.features)))
    monkeypatch.setattr("mlops_assets.features.views.FEATURE_VIEWS", (retyped, *FEATURE_VIEWS[1:]))
    result = runner.invoke(app, ["features", "lock", "--lock", str(lock)])
    assert result.exit_code == 1 and "refusing" in result.output


def test_decisions_without_a_reason_or_on_unknown_versions_fail_readably(mlops_home) -> None:
    result = runner.invoke(app, ["reject", "model", "m", "1"])
    assert result.exit_code == 1 and "--comment" in result.output
    result = runner.invoke(app, ["approve", "widget", "m", "1"])
    assert result.exit_code == 1 and "KIND" in result.output
    result = runner.invoke(app, ["approve", "model", "no_such_model", "7", "--by", "alice"])
    assert result.exit_code == 1 and "no_such_model" in result.output
    assert "Traceback" not in result.output


def test_audit_verify_on_a_fresh_home(mlops_home) -> None:
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "ok: 0 entries" in result.output

"""As of: which version each alias pointed to at T, across three promotions and a rollback, against a
real MLflow SQLite registry and a real governance store; a row edited with sqlite3 reports the break."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlops_assets.errors import Conflict, InvalidInput, NotFound
from mlops_assets.governance.history import HistoryBroken, alias_history, as_of
from mlops_assets.models import promotion as P
from mlops_assets_tests.models import governed
from mlops_assets_tests.models.governed import register

registry, store = governed.registry, governed.store  # fixtures: a real MLflow registry, a governance store


def _tick() -> datetime:
    time.sleep(0.01)
    now = datetime.now(UTC)
    time.sleep(0.01)
    return now


def _history(registry, store):
    client, name = register(registry, store, 3)
    marks = {"before": _tick()}
    for v in ("1", "2", "3"):
        P.approve(client, store, name, v, reviewer="bob", compliance_required=False)
        P.promote(client, store, name, v, actor="sensor", reason=f"release {v}", compliance_required=False)
        marks[v] = _tick()
    P.rollback(client, store, name, 2, actor="oncall", reason="v3 live AUC fell")
    marks["rollback"] = _tick()
    return client, name, marks


def test_as_of_across_three_promotions_and_a_rollback(registry, store) -> None:
    client, name, marks = _history(registry, store)
    assert as_of(store, name, marks["before"]).version("production") is None
    approvals = {d.version: d for d in store.list_deployments(name, alias="production", limit=None)}
    for v in ("1", "2", "3"):
        answer = as_of(store, name, marks[v])
        move = answer.aliases["production"]
        assert answer.version("production") == v and move.kind == "promotion" and move.reason == f"release {v}"
        decision = store.latest_decision("model", name, v)
        assert move.approval_decision_id == decision.id and move.approved_by == "bob"
        assert move.deployment_id == approvals[v].id and move.actor == "sensor"
    back = as_of(store, name, marks["rollback"]).aliases["production"]
    assert (back.version, back.kind, back.previous_version, back.actor) == ("2", "rollback", "3", "oncall")
    assert back.approval_decision_id is None and back.reason == "v3 live AUC fell"
    assert P.alias_target(client, name, "production") == "2"  # the registry agrees with the answer now
    history = alias_history(store, name, "production")
    assert [(m.kind, m.version) for m in history] == [("promotion", "1"), ("promotion", "2"), ("promotion", "3"),
                                                      ("rollback", "2")]
    assert [m.audit_seq for m in history] == sorted(m.audit_seq for m in history)
    assert as_of(store, name, (marks["rollback"] + timedelta(days=1)).isoformat()).version("production") == "2"
    with pytest.raises(InvalidInput):
        as_of(store, name, "yesterday")
    with pytest.raises(NotFound):
        as_of(store, "no-such-model", marks["rollback"])


def _db(store) -> Path:
    return Path(store.url.removeprefix("sqlite:///"))


def test_an_edited_deployment_row_reports_the_break(registry, store) -> None:
    _, name, marks = _history(registry, store)
    first = min(d.id for d in store.list_deployments(name, limit=None))
    with sqlite3.connect(_db(store)) as conn:  # someone with file access rewrites who was in production
        conn.execute("UPDATE deployments SET version = '3' WHERE id = ?", (first,))
    with pytest.raises(HistoryBroken) as info:
        as_of(store, name, marks["1"])
    assert isinstance(info.value, Conflict) and info.value.exit_code == 4
    assert f"deployments row {first} differs from what audit entry" in str(info.value)


def test_an_edited_audit_row_reports_the_break(registry, store) -> None:
    _, name, marks = _history(registry, store)
    seq = alias_history(store, name, "production")[-1].audit_seq
    with sqlite3.connect(_db(store)) as conn:
        conn.execute("UPDATE audit_log SET actor = 'someone else' WHERE seq = ?", (seq,))
    with pytest.raises(HistoryBroken, match=f"entry seq {seq} does not match its hash"):
        as_of(store, name, marks["rollback"])


def test_a_deleted_deployment_row_reports_the_break(registry, store) -> None:
    _, name, marks = _history(registry, store)
    second = sorted(d.id for d in store.list_deployments(name, limit=None))[1]
    with sqlite3.connect(_db(store)) as conn:  # erase v2's first promotion: T=marks["2"] would answer v1
        conn.execute("DELETE FROM deployments WHERE id = ?", (second,))
    with pytest.raises(HistoryBroken, match=f"deployments row {second} recorded by audit entry seq .* is missing"):
        as_of(store, name, marks["2"])


def test_models_as_of_command_prints_the_answer_or_the_break(mlops_home: Path) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from mlops_assets import stores
    from mlops_assets.cli.history import models_as_of
    from mlops_assets.settings import get_settings

    app = typer.Typer()
    app.command("as-of")(models_as_of)
    app.command("unused")(lambda: None)  # two commands: typer keeps the sub-command name
    runner = CliRunner()
    gov = stores.governance_store(get_settings())
    gov.record_deployment(name="cli-model", alias="production", version="4", previous_version=None,
                          actor="sensor", reason="release 4", checklist={"approval": {"decision_id": 9,
                                                                                    "approved_by": "bob"}})
    later = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    done = runner.invoke(app, ["as-of", "cli-model", later])
    assert done.exit_code == 0, done.output
    assert "production: version 4 (promotion" in done.stdout and "approval decision 9 by bob" in done.stdout
    body = json.loads(runner.invoke(app, ["as-of", "cli-model", later, "--json"]).stdout)
    assert body["verified"] and body["aliases"]["production"]["version"] == "4"
    assert runner.invoke(app, ["as-of", "cli-model", "not-a-time"]).exit_code == 2
    assert runner.invoke(app, ["as-of", "other-model", later]).exit_code == 3
    with sqlite3.connect(_db(gov)) as conn:
        conn.execute("UPDATE deployments SET actor = 'mallory'")
    broken = runner.invoke(app, ["as-of", "cli-model", later])
    assert broken.exit_code == 4 and "break:" in broken.output and "version 4" not in broken.stdout

"""The ``mlops`` command: the pre-merge feature schema check, the noun-then-verb tree, the model
decisions on a real registry and governance store in a temporary MLOPS_HOME, the exit codes by error
type, and the old verb-first forms (hidden, with one deprecation line)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
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
    assert result.exit_code == 4  # a Conflict: the state refuses the change
    assert view.features[-1].name in result.output
    assert "error: feature views: 1 schema violation(s)" in result.stderr
    assert "Traceback" not in result.output


def test_features_lock_refuses_to_record_a_breaking_change(monkeypatch, tmp_path) -> None:
    lock = tmp_path / "views.lock.json"
    assert runner.invoke(app, ["features", "lock", "--lock", str(lock)]).exit_code == 0
    view = FEATURE_VIEWS[0]
    retyped = replace(view, features=tuple(replace(f, dtype=pl.Float32()) if i == 0 else f
                                           for i, f in enumerate(view.features)))
    monkeypatch.setattr("mlops_assets.features.views.FEATURE_VIEWS", (retyped, *FEATURE_VIEWS[1:]))
    result = runner.invoke(app, ["features", "lock", "--lock", str(lock)])
    assert result.exit_code == 4 and "refusing" in result.output


def test_audit_verify_on_a_fresh_home(mlops_home) -> None:
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "ok: 0 entries" in result.output


# -- the command tree ---------------------------------------------------------------------------

TREE = {
    "init": None, "status": None, "serve": None, "doctor": None, "backup": None, "restore": None, "replay": None,
    "models": {"list", "approve", "reject", "promote", "rollback", "archive", "import", "as-of", "canary"},
    "prompts": {"check", "list", "submit", "evaluate", "diff", "status", "approve", "reject", "promote",
                "rollback", "deploy-chain"},
    "features": {"check", "lock"},
    "audit": {"verify", "seal-legacy", "log", "export", "verify-bundle"},
    "data": {"sample-real"},
}
OLD_VERBS = {"approve", "reject", "promote", "rollback", "archive", "import-model"}


def test_one_grammar_noun_then_verb() -> None:
    import click
    import typer

    root = typer.main.get_command(app)
    visible = {name: cmd for name, cmd in root.commands.items() if not cmd.hidden}
    assert set(visible) == set(TREE)
    for name, verbs in TREE.items():
        if verbs is None:
            assert not isinstance(visible[name], click.Group), name
        else:
            assert {v for v, c in visible[name].commands.items() if not c.hidden} == verbs, name
    hidden = {name for name, cmd in root.commands.items() if cmd.hidden}
    assert hidden == OLD_VERBS
    shown = runner.invoke(app, ["--help"]).output
    assert "models" in shown and "import-model" not in shown


def test_the_console_script_is_the_one_main() -> None:
    from importlib.metadata import entry_points

    from mlops_assets.cli import main

    (script,) = entry_points(group="console_scripts", name="mlops")
    assert script.value == "mlops_assets.cli:main" and script.load() is main


# -- exit codes by error type -------------------------------------------------------------------


def test_exit_codes_and_lines_by_error_type() -> None:
    from mlops_assets.cli_common import error_line, exit_code
    from mlops_assets.errors import Conflict, Forbidden, InvalidInput, NotFound
    from mlops_assets.governance.records import GovernanceError
    from mlops_assets.settings import SettingsError

    cases = [(InvalidInput("start", "not a date", hint="use YYYY-MM-DD"), 2, "start: not a date (use YYYY-MM-DD)"),
             (NotFound("version", ["no version 7", "see the list"]), 3, "version: no version 7; see the list"),
             (Conflict("version", "the gate refused\nit"), 4, "version: the gate refused it"),
             (GovernanceError("refused to promote", field="version"), 4, "version: refused to promote"),
             (Forbidden("role", "viewers may not approve"), 5, "role: viewers may not approve"),
             (SettingsError("MLOPS_CONFIG: missing"), 2, "settings: MLOPS_CONFIG: missing"),
             (RuntimeError("disk full"), 1, "RuntimeError: disk full"),
             (ValueError("bad"), 1, "ValueError: bad")]
    for exc, code, line in cases:
        assert (exit_code(exc), error_line(exc)) == (code, line), exc


def _mlops(*args: str, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "mlops_assets.cli", *args], capture_output=True, text=True,
                          check=False, env={**os.environ, **env}, timeout=120)


def test_a_settings_error_exits_2_and_an_unexpected_error_1_without_traceback(tmp_path) -> None:
    bad = _mlops("status", MLOPS_HOME=str(tmp_path / "home"), MLOPS_CONFIG=str(tmp_path / "missing.yaml"))
    assert bad.returncode == 2, bad.stderr
    missing = tmp_path / "missing.yaml"
    assert bad.stderr.strip().splitlines() == [f"error: settings: MLOPS_CONFIG: {missing} does not exist"]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    broken = _mlops("audit", "verify", MLOPS_HOME=str(tmp_path / "home"),
                    MLOPS_GOVERNANCE_URL=f"sqlite:///{blocker}/governance.db")
    assert broken.returncode == 1, broken.stderr
    (line,) = [x for x in broken.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: OperationalError: ")
    assert "Traceback" not in broken.stderr


# -- model decisions on a real registry and governance store in MLOPS_HOME -------------------------


@pytest.fixture()
def registered(mlops_home: Path, monkeypatch: pytest.MonkeyPatch):
    """The home's own MLflow registry and governance store (what the CLI opens), one logged pyfunc
    model, and a registered model with two versions registered by alice whose evaluation and compliance gates passed."""
    import mlflow

    from mlops_assets import stores
    from mlops_assets.settings import get_settings
    from mlops_assets_tests.models.governed import register

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: list[str], params=None) -> list[str]:
            return model_input

    # mlflow.set_tracking_uri (which the CLI calls) exports MLFLOW_TRACKING_URI: undone after the test
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    s = get_settings()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", s.mlflow_tracking_uri)
    client, store = stores.mlflow_client(s), stores.governance_store(s)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    try:
        experiment = client.create_experiment("cli-tests", artifact_location=(mlops_home / "runs").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=[])
    finally:
        mlflow.set_tracking_uri(previous)
    client, name = register((client, info.model_uri), store, 2, compliance=True)
    return SimpleNamespace(client=client, store=store, name=name, model_uri=info.model_uri)


def _run(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


def _production(world) -> str | None:
    from mlops_assets.models.promotion import alias_target

    return alias_target(world.client, world.name, "production")


def test_models_list_approve_promote_rollback_archive(registered) -> None:
    name = registered.name
    listed = _run("models", "list", name)
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[0] == f"{name}: 2 version(s)"
    assert "v1    aliases=-" in listed.output
    assert listed.output.count("evaluation=passed (test_auc=0.7, threshold 0.5) compliance=passed") == 2

    refused = _run("models", "approve", name, "1", "--by", "alice")  # alice registered it: four eyes
    assert refused.exit_code == 4, refused.output
    assert refused.stderr.startswith("error: version: ") and refused.stderr.count("\n") == 1
    assert "reviewer_is_not_registerer" in refused.stderr
    assert registered.store.state("model", name, "1") is None

    for version in ("1", "2"):
        approved = _run("models", "approve", name, version, "--by", "bob", "--comment", "ok")
        assert approved.exit_code == 0, approved.output
        assert f"mlops models promote {name} {version}" in approved.output
        promoted = _run("models", "promote", name, version, "--by", "bob")
        assert promoted.exit_code == 0, promoted.output
        assert _production(registered) == version
    listed = _run("models", "list", name, "--json")
    rows = {r["version"]: r for r in json.loads(listed.stdout)["versions"]}
    assert rows["2"]["aliases"] == ["production"] and rows["1"]["aliases"] == []
    assert rows["1"]["state"] == rows["2"]["state"]
    assert rows["1"]["gates"]["evaluation"]["passed"] is True

    no_reason = _run("models", "rollback", name, "--to", "1", "--by", "carol")
    assert no_reason.exit_code == 2 and "error: reason: a rollback needs a reason" in no_reason.stderr
    rolled = _run("models", "rollback", name, "--to", "1", "--reason", "v2 lost money", "--by", "carol")
    assert rolled.exit_code == 0, rolled.output
    assert _production(registered) == "1" and "rolled back to v1 (was 2)" in rolled.output

    serving = _run("models", "archive", name, "1", "--reason", "old", "--by", "carol")
    assert serving.exit_code == 4 and _production(registered) == "1"
    archived = _run("models", "archive", name, "2", "--reason", "superseded", "--by", "carol")
    assert archived.exit_code == 0, archived.output
    assert registered.store.state("model", name, "2").value == "ARCHIVED"
    rejected = _run("models", "reject", name, "2", "--by", "carol")
    assert rejected.exit_code == 2 and "error: comment: a rejection needs a reason" in rejected.stderr


def test_unknown_version_3_bad_input_2_gate_refusal_4(registered) -> None:
    from mlops_assets.models import gates as G

    name = registered.name
    unknown = _run("models", "approve", name, "7", "--by", "bob")
    assert unknown.exit_code == 3
    assert unknown.stderr == f"error: version: model {name!r} has no version 7 in the registry " \
                             "(`mlops models list` shows its versions)\n"
    assert _run("models", "promote", "no_such_model", "1").exit_code == 3
    assert _run("models", "rollback", name, "--to", "9", "--reason", "r").exit_code == 3
    assert _run("models", "list", "no_such_model").exit_code == 3
    assert _run("models", "as-of", name, "not-a-time").exit_code == 2  # the mounted governance command

    for args in (["approve", name, "one"], ["approve", name, "0"], ["promote", name, "1" * 10],
                 ["approve", name, "1", "--waive", "drift_share"]):
        bad = _run("models", *args, "--by", "bob")
        assert bad.exit_code == 2, (args, bad.output)
        assert bad.stderr.startswith(("error: version: ", "error: waive: ")), bad.stderr
    assert registered.store.state("model", name, "1") is None  # nothing was decided

    # version 3 fails its evaluation gate: approving it is refused by the gate (a Conflict)
    version = registered.client.create_model_version(name, registered.model_uri).version
    registered.client.set_model_version_tag(name, version, "registered_by", "alice")
    G.record_evaluation(registered.client, registered.store, name, version, "test_auc", 0.4, 0.5)
    gate = _run("models", "approve", name, str(version), "--by", "bob")
    assert gate.exit_code == 4, gate.output
    assert "check 'evaluation' failed (test_auc=0.4 against threshold 0.5)" in gate.stderr
    not_approved = _run("models", "promote", name, "1", "--by", "bob")
    assert not_approved.exit_code == 4 and "not approved" in not_approved.stderr
    assert _production(registered) is None


def test_old_verbs_print_one_deprecation_line_and_do_the_same(registered) -> None:
    name = registered.name
    approved = _run("approve", "model", name, "1", "--by", "bob")
    assert approved.exit_code == 0, approved.output
    assert approved.stderr.splitlines() == [
        "deprecated: `mlops approve model` is now `mlops models approve`; the old form goes in the next release"]
    assert registered.store.state("model", name, "1").value == "APPROVED"
    promoted = _run("promote", "model", name, "1", "--by", "bob")
    assert promoted.exit_code == 0 and _production(registered) == "1"
    assert promoted.stderr.splitlines()[0].startswith("deprecated: `mlops promote model` is now `mlops models promote`")
    unknown = _run("archive", "model", name, "7", "--reason", "r")
    assert unknown.exit_code == 3  # the same checks and codes as the new form
    assert unknown.stderr.splitlines()[0].startswith("deprecated: `mlops archive model`")
    kind = _run("approve", "widget", name, "1")
    assert kind.exit_code == 2 and "error: KIND: 'widget' is not 'model' or 'prompt'" in kind.stderr
    imported = _run("import-model", "runs:/no-such-run/model", "--by", "alice")
    assert imported.exit_code == 2, imported.output  # RegistryError is InvalidInput
    assert imported.stderr.splitlines()[0] == "deprecated: `mlops import-model` is now `mlops models import`; " \
                                              "the old form goes in the next release"
    assert imported.stderr.splitlines()[1].startswith("error: source_model_uri: ")

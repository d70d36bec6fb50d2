"""The ``mlops`` command: set-up, checks before merge, decisions (approve, reject, promote, roll
back, archive), the audit log, and the serving processes.

Identity: decisions are recorded under ``--by`` or ``MLOPS_USER`` (trusted locally; over HTTP the
management API takes the identity from the API key). Every error prints one line naming what was
wrong and exits non-zero; no tracebacks.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from mlops_assets.cli_common import By, _fail, actor, echo_json, handles_errors, settings
from mlops_assets.settings import PROJECT_ROOT, SettingsError

app = typer.Typer(help="MLOps platform command line.", no_args_is_help=True, pretty_exceptions_enable=False)
features_app = typer.Typer(help="Feature view schemas: the check that runs before merge.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
app.add_typer(features_app, name="features")
app.add_typer(audit_app, name="audit")

@app.command()
@handles_errors
def init() -> None:
    """Create MLOPS_HOME and put the Dagster instance config into DAGSTER_HOME."""
    s = settings()
    s.ensure_dirs()
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or s.dagster_home)
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    source = PROJECT_ROOT / "dagster.yaml"
    if source.exists() and (not target.exists() or target.read_bytes() != source.read_bytes()):
        shutil.copyfile(source, target)
    from mlops_assets.cli_doctor import sweep_on_init

    sweep_on_init(dagster_home)  # fails the runs a crash left STARTED and frees their pool slots
    typer.echo(f"MLOPS_HOME   {s.home}\nDAGSTER_HOME {dagster_home}\nMLflow       {s.mlflow_tracking_uri}")
    if "DAGSTER_HOME" not in os.environ:
        typer.echo(f"export DAGSTER_HOME={dagster_home}  # so dagster keeps its history there")


@features_app.command("check")
@handles_errors
def features_check(lock: Annotated[Path | None, typer.Option(help="lock file")] = None) -> None:
    """Fail if a feature view's schema changed without the version bump the rule asks for."""
    from mlops_assets.features.lock import DEFAULT_LOCK_PATH, check_lock, errors
    from mlops_assets.features.views import FEATURE_VIEWS

    violations = check_lock(FEATURE_VIEWS, lock or DEFAULT_LOCK_PATH)
    for v in violations:
        typer.secho(f"  {v.severity}: {v.view}{'.' + v.column if v.column else ''}: {v.message}",
                    fg=typer.colors.RED if v.severity == "error" else typer.colors.YELLOW, err=True)
    violations = errors(violations)
    if violations:
        _fail(f"{len(violations)} schema violation(s); bump the view's version, then run `mlops features lock`")
    typer.echo(f"ok: {len(FEATURE_VIEWS)} feature view(s) match the lock file")


@features_app.command("lock")
@handles_errors
def features_lock(lock: Annotated[Path | None, typer.Option(help="lock file")] = None) -> None:
    """Write the lock file of view schemas (after a deliberate, correctly versioned change)."""
    from mlops_assets.features.lock import DEFAULT_LOCK_PATH, check_lock, errors, write_lock
    from mlops_assets.features.views import FEATURE_VIEWS

    path = lock or DEFAULT_LOCK_PATH
    if path.exists():
        violations = [v for v in errors(check_lock(FEATURE_VIEWS, path)) if v.kind != "stale_lock"]
        if violations:
            _fail("refusing to lock a change that breaks the versioning rule: "
                  + "; ".join(v.message for v in violations))
    write_lock(FEATURE_VIEWS, path)
    typer.echo(f"wrote {path}")


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except SettingsError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)


# -- model decisions ---------------------------------------------------------------------------

model_app = typer.Typer(help="(internal) model subcommands", no_args_is_help=True)


def _model_context():
    from mlops_assets import stores

    s = settings()
    return s, stores.mlflow_client(s), stores.governance_store(s)


def _check_kind(kind: str) -> None:
    if kind not in ("model", "prompt"):
        _fail(f"KIND: {kind!r} is not 'model' or 'prompt'")


@app.command()
@handles_errors
def approve(kind: Annotated[str, typer.Argument(help="model | prompt")], name: str, version: str,
            comment: Annotated[str, typer.Option(help="why")] = "", by: By = None,
            waive: Annotated[list[str] | None, typer.Option(
                "--waive", help="a failing non-critical check to waive (repeatable; one --reason each)")] = None,
            reason: Annotated[list[str] | None, typer.Option(
                "--reason", help="why the check before it may fail (recorded and audited)")] = None) -> None:
    """Approve a version (after its checklist passes); the approval sensor then promotes it.

    ``--waive CHECK --reason TEXT`` (repeatable) approves a version that fails non-critical checks;
    critical checks (``evaluation.critical_checks``) cannot be waived."""
    _check_kind(kind)
    waive, reason = list(waive or []), list(reason or [])
    if len(waive) != len(reason):
        _fail(f"--waive/--reason: give one --reason per --waive ({len(waive)} waived, {len(reason)} reasons)")
    if waive and kind != "model":
        _fail("--waive: only model approvals take waivers")
    if kind == "prompt":
        from mlops_assets.governance.workflow import approve_prompt

        s = settings()
        echo_json(approve_prompt(s, name, version, reviewer=actor(by), comment=comment or None).to_dict())
        return
    from mlops_assets.models.promotion import approve as approve_model

    from mlops_assets.models.gates import configured_role, gate_policy

    s, client, store = _model_context()
    who = actor(by)
    decision = approve_model(client, store, name, version, reviewer=who,
                             compliance_required=s.evaluation.compliance_required, comment=comment or None,
                             waivers=dict(zip(waive, reason)), policy=gate_policy(s),
                             role=configured_role(s, who) if waive else None)
    waived = f" waiving {', '.join(sorted(decision.waivers))}" if decision.waivers else ""
    typer.echo(f"approved {name} v{version} by {decision.actor}{waived}; the approval sensor promotes it "
               f"(or run `mlops promote model {name} {version}` where no daemon runs)")


@app.command()
@handles_errors
def reject(kind: Annotated[str, typer.Argument(help="model | prompt")], name: str, version: str,
           comment: Annotated[str, typer.Option(help="why (required)")] = "", by: By = None) -> None:
    """Reject a version (also revokes an approval)."""
    _check_kind(kind)
    if not comment.strip():
        _fail("--comment: a rejection needs a reason")
    if kind == "prompt":
        from mlops_assets.governance.workflow import reject_prompt

        echo_json(reject_prompt(settings(), name, version, reviewer=actor(by), reason=comment).to_dict())
        return
    from mlops_assets.models.promotion import reject as reject_model

    _, client, store = _model_context()
    reject_model(client, store, name, version, reviewer=actor(by), reason=comment)
    typer.echo(f"rejected {name} v{version}")


@app.command()
@handles_errors
def promote(kind: Annotated[str, typer.Argument(help="model")], name: str, version: str,
            reason: Annotated[str, typer.Option(help="note for the deployment record")] = "approved for production",
            by: By = None) -> None:
    """Move production to an approved version directly (where no Dagster daemon runs the sensor)."""
    if kind != "model":
        _fail("KIND: only models are promoted this way; prompts move on approval")
    from mlops_assets.models.gates import gate_policy
    from mlops_assets.models.promotion import promote as promote_model

    s, client, store = _model_context()
    d = promote_model(client, store, name, version, alias=s.model.production_alias, actor=actor(by), reason=reason,
                      compliance_required=s.evaluation.compliance_required, production_alias=s.model.production_alias,
                      policy=gate_policy(s))
    typer.echo(f"{name}: {s.model.production_alias} -> v{d.version} (was {d.previous_version}); deployment {d.id}")


@app.command()
@handles_errors
def rollback(kind: Annotated[str, typer.Argument(help="model | prompt")], name: str,
             to: Annotated[str, typer.Option("--to", help="the version to go back to")],
             reason: Annotated[str, typer.Option(help="what went wrong (required)")] = "", by: By = None) -> None:
    """Move production back to a version it served before."""
    _check_kind(kind)
    if not reason.strip():
        _fail("--reason: a rollback needs a reason")
    if kind == "prompt":
        from mlops_assets.governance.workflow import rollback_prompt

        echo_json(rollback_prompt(settings(), name, to, actor=actor(by), reason=reason).to_dict())
        return
    from mlops_assets.models.gates import gate_policy
    from mlops_assets.models.promotion import rollback as rollback_model

    s, client, store = _model_context()
    d = rollback_model(client, store, name, to, alias=s.model.production_alias, actor=actor(by), reason=reason,
                       compliance_required=s.evaluation.compliance_required, policy=gate_policy(s))
    typer.echo(f"{name}: {s.model.production_alias} rolled back to v{d.version} (was {d.previous_version}); "
               f"deployment {d.id}")


@app.command()
@handles_errors
def archive(kind: Annotated[str, typer.Argument(help="model")], name: str, version: str,
            reason: Annotated[str, typer.Option(help="why (required)")] = "", by: By = None) -> None:
    """Retire a version: archived in the store, aliases removed (never the serving one)."""
    if kind != "model":
        _fail("KIND: only model versions are archived")
    if not reason.strip():
        _fail("--reason: archiving needs a reason")
    from mlops_assets.models.promotion import archive as archive_model

    s, client, store = _model_context()
    archive_model(client, store, name, version, actor=actor(by), reason=reason,
                  protected_aliases=(s.model.production_alias,))
    typer.echo(f"archived {name} v{version}")


@app.command()
@handles_errors
def status() -> None:
    """Warehouse tables, model versions with aliases and gates, audit log verification."""
    from mlops_assets import stores
    from mlops_assets.models import tags as T

    s = settings()
    typer.echo(f"MLOPS_HOME {s.home}")
    wh = stores.warehouse(s)
    tables = wh.list_tables() if s.warehouse_path.exists() else []
    typer.echo(f"warehouse: {len(tables)} table(s) {tables}")
    client = stores.mlflow_client(s)
    try:
        versions = client.search_model_versions(f"name='{s.model.name}'")
    except Exception:  # no registry yet
        versions = []
    typer.echo(f"model {s.model.name}: {len(versions)} version(s)")
    for found in sorted(versions, key=lambda m: int(m.version)):
        mv = client.get_model_version(s.model.name, found.version)  # search results carry no aliases
        tags = mv.tags or {}
        typer.echo(f"  v{mv.version:<4} aliases={list(mv.aliases or [])} "
                   f"evaluation={tags.get(T.TAG_EVALUATION_PASSED, '?')} "
                   f"compliance={tags.get(T.TAG_COMPLIANCE_PASSED, '?')} "
                   f"approval={tags.get(T.TAG_APPROVAL_STATE, '-')} "
                   f"{(T.TAG_EVALUATION_VALUE + '=' + tags[T.TAG_EVALUATION_VALUE][:6]) if T.TAG_EVALUATION_VALUE in tags else ''}")
    if versions:  # the latest version's gate verdicts, and the failed checks with value, threshold and why
        from mlops_assets.evaluation.verdicts import describe, version_verdicts

        latest = str(max(int(m.version) for m in versions))
        tags = client.get_model_version(s.model.name, latest).tags or {}
        typer.echo(f"latest v{latest} gates:")
        for line in describe(version_verdicts(tags, s.reports_dir, s.model.name, latest)):
            typer.echo(f"  {line}")
    verification = stores.governance_store(s).verify_audit()
    typer.echo(f"audit log: {'ok' if verification.ok else 'BROKEN'} ({verification.entries} entries)"
               + ("" if verification.ok else f" first bad entry {verification.first_bad_seq}: {verification.reason}"))


# -- audit -------------------------------------------------------------------------------------


@audit_app.command("verify")
@handles_errors
def audit_verify() -> None:
    """Verify the hash chain, the HMACs and the head anchor; report the first bad entry."""
    from mlops_assets import stores

    v = stores.governance_store(settings()).verify_audit()
    if not v.ok and v.first_bad_seq is None and v.head_seq is not None and "row" in (v.reason or ""):
        _fail(f"governed rows do not match the audit log: {v.reason} ({v.entries} entries read)")
    if not v.ok:
        _fail(f"audit log broken at entry {v.first_bad_seq}: {v.reason} ({v.entries} entries read)")
    typer.echo(f"ok: {v.entries} entries, chain and anchor verified; decisions, deployments, gate results "
               "and registrations match their entries")


@audit_app.command("seal-legacy")
@handles_errors
def audit_seal_legacy(reason: Annotated[str, typer.Option(help="why (required), e.g. the upgrade")] = "",
                      by: By = None) -> None:
    """Bind rows an older version wrote (no audit binding) to the chain, once, after an upgrade."""
    from mlops_assets import stores

    if not reason.strip():
        _fail("--reason: sealing legacy rows needs a reason")
    count = stores.governance_store(settings()).seal_legacy_rows(actor(by), reason)
    typer.echo(f"sealed {count} legacy row(s); `mlops audit verify` checks them from now on")


@audit_app.command("log")
@handles_errors
def audit_log(limit: int = 20) -> None:
    """The newest audit entries."""
    from mlops_assets import stores

    for e in stores.governance_store(settings()).list_audit(limit=limit):
        typer.echo(f"{e.seq:>5} {e.ts} {e.actor:<20} {e.action:<22} {e.subject_kind}:{e.subject_id}")


# -- serving -----------------------------------------------------------------------------------


@app.command()
@handles_errors
def serve(workers: Annotated[int, typer.Option(min=1, help="inference worker processes")] = 1) -> None:
    """Start the inference app (serving.port) and the management API (serving.api_port) together.

    Ctrl-C, SIGTERM or SIGHUP stops both gracefully; if either exits, the other is stopped and the
    command fails with a message naming it."""
    from mlops_assets import cli_serve

    s = settings()
    typer.echo(f"inference http://{s.serving.host}:{s.serving.port}  management http://{s.serving.host}:"
               f"{s.serving.api_port}  (Ctrl-C stops both)")
    code = cli_serve.run(cli_serve.serving_apps(s, workers), cli_serve.serving_env(s, workers),
                         echo=lambda m: typer.echo(m, err=True))
    if code:
        raise typer.Exit(code)


@app.command("import-model")
@handles_errors
def import_model(source_uri: Annotated[str, typer.Argument(help="runs:/<id>/model, models:/name/3, models:/name@alias")],
                 task_type: Annotated[str, typer.Option(help="binary | multiclass | regression")] = "binary",
                 by: By = None) -> None:
    """Register an MLflow pyfunc model trained elsewhere as a new version; it is then evaluated and
    approved like a trained one (the model_version_sensor picks it up)."""
    from mlops_assets.models.registry import import_external_model

    s, client, _ = _model_context()
    registered = import_external_model(client, source_uri, s.model.name, registered_by=actor(by), task_type=task_type,
                                       challenger_alias=s.model.challenger_alias)
    typer.echo(f"registered {s.model.name} v{registered.version} from {source_uri}; the evaluation runs when the "
               f"Dagster daemon's model_version_sensor sees it")


# commands that live in their own modules (they look up handles_errors/settings/actor here at run time)
from mlops_assets.cli_data import data_app  # noqa: E402
from mlops_assets.cli_ops import register as register_ops  # noqa: E402
from mlops_assets.cli_prompts import audit_export, audit_verify_bundle, prompts_app  # noqa: E402

register_ops(app)
from mlops_assets.cli_doctor import register as register_doctor  # noqa: E402

register_doctor(app)  # `mlops doctor [--repair]`

app.add_typer(prompts_app, name="prompts")
app.add_typer(data_app, name="data")
audit_app.command("export")(audit_export)
audit_app.command("verify-bundle")(audit_verify_bundle)


if __name__ == "__main__":  # `python -m mlops_assets.cli ...`
    main()

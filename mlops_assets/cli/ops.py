"""The top-level commands of ``mlops``: ``init``, ``status``, ``serve``, ``backup`` and ``restore``.

``backup`` writes a consistent archive of MLOPS_HOME, ``restore`` puts one back into an empty home and
verifies the audit log. Stores on servers are not in the archive (Postgres via ``MLOPS_GOVERNANCE_URL``,
an MLflow tracking server via ``MLFLOW_TRACKING_URI``): the backup names them and ``docs/backup.md``
gives the ``pg_dump`` commands.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated

import typer

from mlops_assets.cli_common import handles_errors, settings
from mlops_assets.errors import Conflict
from mlops_assets.settings import PROJECT_ROOT, Settings, get_settings


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
    from mlops_assets.cli.doctor import sweep_on_init

    sweep_on_init(dagster_home)  # fails the runs a crash left STARTED and frees their pool slots
    typer.echo(f"MLOPS_HOME   {s.home}\nDAGSTER_HOME {dagster_home}\nMLflow       {s.mlflow_tracking_uri}")
    if "DAGSTER_HOME" not in os.environ:
        typer.echo(f"export DAGSTER_HOME={dagster_home}  # so dagster keeps its history there")


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
    except Exception:  # noqa: BLE001 - no registry yet
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


def external_stores(settings: Settings, environ: dict[str, str] | None = None) -> list[str]:
    """Stores configured on servers, which need their own backup (named without credentials)."""
    env = os.environ if environ is None else environ
    notes = []
    if not settings.mlflow_tracking_uri.startswith("sqlite:///"):
        notes.append("MLflow tracking/registry on a server (MLFLOW_TRACKING_URI): back up its database and "
                     "artifact store")
    if not settings.governance_db_url.startswith("sqlite:///"):
        notes.append("governance store on a server (MLOPS_GOVERNANCE_URL): pg_dump it")
    dagster_home = env.get("DAGSTER_HOME")
    if dagster_home and not Path(dagster_home).resolve().is_relative_to(settings.home):
        notes.append(f"DAGSTER_HOME outside MLOPS_HOME ({dagster_home}): back it up "
                     "(or pg_dump its Postgres)")
    return notes


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


NO_SECRETS_HELP = "leave the audit key out (keep it apart, e.g. in a secret manager)"
FORCE_HELP = "move a non-empty MLOPS_HOME aside (to <home>.before-restore-<time>) instead of refusing"


@handles_errors
def backup(out: Annotated[Path, typer.Option("--out", help="archive to write (.tar.gz)")],
           no_secrets: Annotated[bool, typer.Option("--no-secrets", help=NO_SECRETS_HELP)] = False) -> None:
    """Write a consistent archive of MLOPS_HOME (warehouse, SQLite stores and files).

    The warehouse through EXPORT DATABASE, the SQLite stores through their backup API."""
    from mlops_assets.backup import backup_home

    s = settings()
    notes = external_stores(s)
    result = backup_home(s.home, out, include_secrets=not no_secrets, not_included=tuple(notes))
    m = result.manifest
    tables = sum(len(e.tables) for e in m.entries if e.kind == "duckdb")
    typer.echo(f"wrote {result.archive} ({_human(result.bytes)}, {result.seconds:.1f}s): "
               f"{m.count('sqlite')} SQLite database(s), {m.count('duckdb')} DuckDB file(s) with {tables} "
               f"table(s), "
               f"{m.count('file')} file(s); audit key {'included' if m.secrets_included else 'NOT included'}")
    for note in notes:
        typer.secho(f"not in the archive: {note}", fg=typer.colors.YELLOW, err=True)


@handles_errors
def restore(archive: Annotated[Path, typer.Argument(help="archive written by `mlops backup`")],
            force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False) -> None:
    """Restore an archive into MLOPS_HOME (which must be empty unless --force), then verify the audit log."""
    from mlops_assets import stores
    from mlops_assets.backup import restore_home

    s = settings()
    result = restore_home(archive, s.home, force=force)
    if result.moved_aside:
        typer.echo(f"moved the previous home aside to {result.moved_aside}")
    relocated = sum(result.relocated_values.values())
    typer.echo(f"restored {archive} into {result.home} in {result.seconds:.1f}s "
               f"(backup of {result.manifest.created_at}; {relocated} stored path(s) moved to the new home)")
    if not result.manifest.secrets_included and not os.environ.get("MLOPS_AUDIT_KEY"):
        typer.secho("the archive holds no audit key: put the key back into secrets/audit.key (mode 0600) or "
                    "set MLOPS_AUDIT_KEY before anything writes the governance store",
                    fg=typer.colors.YELLOW, err=True)
        return
    get_settings.cache_clear()
    verification = stores.governance_store(settings()).verify_audit()
    if not verification.ok:
        raise Conflict("audit", f"the audit log does not verify after restore: {verification.reason}",
                       hint="if an older database was restored on purpose under a newer anchor, re-anchor it: "
                       "GovernanceStore.reset_anchor (docs/backup.md)")
    typer.echo(f"audit log: ok ({verification.entries} entries)")

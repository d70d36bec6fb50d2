"""Operations commands of ``mlops``: ``backup`` and ``restore`` of MLOPS_HOME.

Mounted on the main command by ``register(app)`` (``mlops backup --out FILE``, ``mlops restore FILE``);
also runnable on its own as ``python -m mlops_assets.cli_ops backup --out FILE``.

Stores on servers are not in the archive (Postgres via ``MLOPS_GOVERNANCE_URL``, an MLflow tracking
server via ``MLFLOW_TRACKING_URI``): the backup names them and ``docs/backup.md`` gives the
``pg_dump`` commands.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mlops_assets.settings import Settings, SettingsError, get_settings

ops_app = typer.Typer(help="Backup and restore of MLOPS_HOME.", no_args_is_help=True,
                      pretty_exceptions_enable=False)


from mlops_assets.cli_common import _fail  # noqa: E402
from mlops_assets.cli_common import handles_errors as _handles_errors  # noqa: E402
from mlops_assets.cli_common import settings as _settings  # noqa: E402


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


@ops_app.command("backup")
@_handles_errors
def backup(out: Annotated[Path, typer.Option("--out", help="archive to write (.tar.gz)")],
           no_secrets: Annotated[bool, typer.Option("--no-secrets", help=NO_SECRETS_HELP)] = False) -> None:
    """Write a consistent archive of MLOPS_HOME: warehouse (EXPORT DATABASE), SQLite stores (backup API),
    files."""
    from mlops_assets.backup import backup_home

    s = _settings()
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


@ops_app.command("restore")
@_handles_errors
def restore(archive: Annotated[Path, typer.Argument(help="archive written by `mlops backup`")],
            force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False) -> None:
    """Restore an archive into MLOPS_HOME (which must be empty unless --force), then verify the audit log."""
    from mlops_assets import stores
    from mlops_assets.backup import restore_home

    s = _settings()
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
    verification = stores.governance_store(_settings()).verify_audit()
    if not verification.ok:
        _fail(f"audit log does not verify after restore: {verification.reason}. If an older database was "
              "restored on purpose under a newer anchor, re-anchor it: GovernanceStore.reset_anchor "
              "(docs/backup.md)")
    typer.echo(f"audit log: ok ({verification.entries} entries)")


def register(app: typer.Typer) -> None:
    """Mount ``backup`` and ``restore`` as top-level commands of ``app`` (the ``mlops`` command)."""
    app.command("backup")(backup)
    app.command("restore")(restore)


def main() -> None:  # pragma: no cover - console entry point
    try:
        ops_app()
    except SettingsError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

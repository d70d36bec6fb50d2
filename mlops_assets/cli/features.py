"""``mlops features ...``: feature view schemas, and the check that runs before merge.

A schema change without the version bump the rule asks for is a ``Conflict`` (exit 4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlops_assets.cli_common import handles_errors
from mlops_assets.errors import Conflict

features_app = typer.Typer(help="Feature view schemas: the check that runs before merge.", no_args_is_help=True)


@features_app.command("check")
@handles_errors
def check(lock: Annotated[Path | None, typer.Option(help="lock file")] = None) -> None:
    """Fail if a feature view's schema changed without the version bump the rule asks for."""
    from mlops_assets.features.lock import DEFAULT_LOCK_PATH, check_lock, errors
    from mlops_assets.features.views import FEATURE_VIEWS

    violations = check_lock(FEATURE_VIEWS, lock or DEFAULT_LOCK_PATH)
    for v in violations:
        typer.secho(f"  {v.severity}: {v.view}{'.' + v.column if v.column else ''}: {v.message}",
                    fg=typer.colors.RED if v.severity == "error" else typer.colors.YELLOW, err=True)
    violations = errors(violations)
    if violations:
        raise Conflict("feature views", f"{len(violations)} schema violation(s)",
                       hint="bump the view's version, then run `mlops features lock`")
    typer.echo(f"ok: {len(FEATURE_VIEWS)} feature view(s) match the lock file")


@features_app.command("lock")
@handles_errors
def write(lock: Annotated[Path | None, typer.Option(help="lock file")] = None) -> None:
    """Write the lock file of view schemas (after a deliberate, correctly versioned change)."""
    from mlops_assets.features.lock import DEFAULT_LOCK_PATH, check_lock, errors, write_lock
    from mlops_assets.features.views import FEATURE_VIEWS

    path = lock or DEFAULT_LOCK_PATH
    if path.exists():
        violations = [v for v in errors(check_lock(FEATURE_VIEWS, path)) if v.kind != "stale_lock"]
        if violations:
            raise Conflict("feature views", ["refusing to lock a change that breaks the versioning rule"]
                           + [v.message for v in violations])
    write_lock(FEATURE_VIEWS, path)
    typer.echo(f"wrote {path}")

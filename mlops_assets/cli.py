"""The ``mlops`` command: set-up, checks before merge, decisions (approve, reject, promote, roll
back, archive), the audit log, and the serving processes.

Identity: decisions are recorded under ``--by`` or ``MLOPS_USER`` (trusted locally; over HTTP the
management API takes the identity from the API key). Every error prints one line naming what was
wrong and exits non-zero; no tracebacks.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer

from mlops_assets.settings import PROJECT_ROOT, Settings, SettingsError, get_settings

app = typer.Typer(help="MLOps platform command line.", no_args_is_help=True, pretty_exceptions_enable=False)
features_app = typer.Typer(help="Feature view schemas: the check that runs before merge.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
prompts_app = typer.Typer(help="The prompt library and its approval workflow.", no_args_is_help=True)
app.add_typer(features_app, name="features")
app.add_typer(audit_app, name="audit")
app.add_typer(prompts_app, name="prompts")

By = Annotated[str | None, typer.Option("--by", help="who decides (default: MLOPS_USER, then the login name)")]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the platform's ValueError-style errors into one readable line and exit code 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (ValueError, LookupError, PermissionError, FileNotFoundError, RuntimeError) as exc:
            _fail(str(exc))
        except Exception as exc:  # an MLflow or database error: name it, no traceback
            _fail(f"{type(exc).__name__}: {exc}")

    return wrapper


def settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        _fail(str(exc))
        raise  # unreachable


def actor(by: str | None) -> str:
    who = by or os.environ.get("MLOPS_USER") or getpass.getuser()
    if not who:
        _fail("no identity: pass --by or set MLOPS_USER")
    return who


def echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


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
    typer.echo(f"MLOPS_HOME   {s.home}\nDAGSTER_HOME {dagster_home}\nMLflow       {s.mlflow_tracking_uri}")
    if "DAGSTER_HOME" not in os.environ:
        typer.echo(f"export DAGSTER_HOME={dagster_home}  # so dagster keeps its history there")


@features_app.command("check")
@handles_errors
def features_check(lock: Annotated[Path | None, typer.Option(help="lock file")] = None) -> None:
    """Fail if a feature view's schema changed without the version bump the rule asks for."""
    from mlops_assets.features.catalog import DEFAULT_LOCK_PATH, check_lock
    from mlops_assets.features.views import FEATURE_VIEWS

    violations = check_lock(FEATURE_VIEWS, lock or DEFAULT_LOCK_PATH)
    for v in violations:
        typer.secho(f"  {v}", fg=typer.colors.RED, err=True)
    if violations:
        _fail(f"{len(violations)} schema violation(s); bump the view's version, then run `mlops features lock`")
    typer.echo(f"ok: {len(FEATURE_VIEWS)} feature view(s) match the lock file")


@features_app.command("lock")
@handles_errors
def features_lock(lock: Annotated[Path | None, typer.Option(help="lock file")] = None) -> None:
    """Write the lock file of view schemas (after a deliberate, correctly versioned change)."""
    from mlops_assets.features.catalog import DEFAULT_LOCK_PATH, check_lock, write_lock
    from mlops_assets.features.views import FEATURE_VIEWS

    path = lock or DEFAULT_LOCK_PATH
    if path.exists():
        violations = check_lock(FEATURE_VIEWS, path)
        if violations:
            _fail("refusing to lock a change that breaks the versioning rule: " + "; ".join(map(str, violations)))
    write_lock(FEATURE_VIEWS, path)
    typer.echo(f"wrote {path}")


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except SettingsError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)

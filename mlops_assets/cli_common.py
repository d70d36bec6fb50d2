"""What every ``mlops`` subcommand shares: one error style (one readable line, exit code 1, no
traceback), the settings, and the identity decisions are recorded under."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any

import typer

from mlops_assets.settings import Settings, SettingsError, get_settings

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

"""What every ``mlops`` command shares: the one error handler, the settings, and the identity
decisions are recorded under.

Errors are mapped here and nowhere else, by *type* (never by message text):

================================== ===== ==================================================
raised                             exit  printed (one line on stderr, never a traceback)
================================== ===== ==================================================
``InvalidInput`` (bad input)       2     ``error: <field>: <reasons> (<hint>)``
``NotFound``                       3     same
``Conflict`` (a gate, a refusal)   4     same
``Forbidden``                      5     same
``SettingsError``                  2     ``error: settings: <message>``
anything else                      1     ``error: <TypeName>: <message>``
================================== ===== ==================================================

Click's own usage errors (a missing argument, an unknown option) exit 2 as well.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any

import click
import typer

from mlops_assets.errors import PlatformError
from mlops_assets.settings import Settings, SettingsError, get_settings

By = Annotated[str | None, typer.Option("--by", help="who decides (default: MLOPS_USER, then the login name)")]

SETTINGS_EXIT_CODE = 2
OTHER_EXIT_CODE = 1


def exit_code(exc: BaseException) -> int:
    """The exit code of an error, by its type."""
    if isinstance(exc, PlatformError):
        return int(exc.exit_code)
    if isinstance(exc, SettingsError):
        return SETTINGS_EXIT_CODE
    return OTHER_EXIT_CODE


def error_line(exc: BaseException) -> str:
    """The one line an error prints: ``<field>: <reasons> (<hint>)`` for the platform's vocabulary."""
    if isinstance(exc, PlatformError):
        reasons = "; ".join(str(r) for r in (getattr(exc, "reasons", None) or [str(exc)]))
        field = getattr(exc, "field", None)
        hint = getattr(exc, "hint", "")
        line = (f"{field}: {reasons}" if field else reasons) + (f" ({hint})" if hint else "")
    elif isinstance(exc, SettingsError):
        line = f"settings: {exc}"
    else:
        line = f"{type(exc).__name__}: {exc}"
    return " ".join(line.split())  # one line, whatever the message held


def report(exc: BaseException) -> int:
    """Print the error's line on stderr and return its exit code."""
    typer.secho(f"error: {error_line(exc)}", fg=typer.colors.RED, err=True)
    return exit_code(exc)


def handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command: an error becomes one line on stderr and the exit code of its type."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise  # already an exit code, or click's own usage error
        except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
            raise typer.Exit(code=report(exc)) from None

    return wrapper


def settings() -> Settings:
    return get_settings()


def actor(by: str | None) -> str:
    from mlops_assets.errors import InvalidInput

    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        login = ""
    who = by or os.environ.get("MLOPS_USER") or login
    if not who or not who.strip():
        raise InvalidInput("by", "no identity", hint="pass --by or set MLOPS_USER")
    return who


def require_text(field: str, value: str, what: str) -> str:
    """A required free-text option (a reason, a comment): refused as InvalidInput when blank."""
    from mlops_assets.errors import InvalidInput

    if not (value or "").strip():
        raise InvalidInput(field, f"{what} needs a reason", hint=f"pass --{field} TEXT")
    return value


def deprecated(old: str, new: str) -> None:
    """The one line an old verb prints before doing what the new form does."""
    typer.secho(f"deprecated: `mlops {old}` is now `mlops {new}`; the old form goes in the next release",
                fg=typer.colors.YELLOW, err=True)


def echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))

"""``mlops models as-of NAME TIMESTAMP``: which version each alias served at a time, verified against
the audit log (``governance.history``).

Mount it on the ``models`` group: ``models_app.command("as-of")(models_as_of)``.

Prints one line per alias (version, the move's kind, when, who, why, deployment id, approval decision
id, audit seq), or ``--json``. A break in the record prints the break, never an answer. Exit codes by
error type (``errors.py``): a break is a ``Conflict`` (4), an unknown model ``NotFound`` (3), a bad
timestamp ``InvalidInput`` (2).
"""

from __future__ import annotations

from typing import Annotated

import typer

from mlops_assets.cli_common import echo_json, handles_errors, settings
from mlops_assets.errors import PlatformError
from mlops_assets.governance.history import AliasMove


def _line(alias: str, move: AliasMove | None) -> str:
    if move is None:
        return f"{alias}: nothing"
    approval = f", approval decision {move.approval_decision_id} by {move.approved_by}" \
        if move.approval_decision_id is not None else ""
    return (f"{alias}: version {move.version} ({move.kind} at {move.ts.isoformat()} by {move.actor}"
            f"{f': {move.reason}' if move.reason else ''}; deployment {move.deployment_id}{approval}; "
            f"audit seq {move.audit_seq})")


@handles_errors
def models_as_of(
    name: Annotated[str, typer.Argument(help="registered model name")],
    timestamp: Annotated[str, typer.Argument(help="ISO-8601 time, e.g. 2025-03-01T14:30:00Z (naive: UTC)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the answer as JSON")] = False,
) -> None:
    """Which version each alias of NAME pointed to at TIMESTAMP, and the decision that moved it there."""
    from mlops_assets import stores
    from mlops_assets.governance.history import HistoryBroken, as_of

    store = stores.governance_store(settings())
    try:
        answer = as_of(store, name, timestamp)
    except HistoryBroken as exc:
        if as_json:
            echo_json({"name": name, "verified": False, "problems": exc.problems})
        for problem in exc.problems:
            typer.secho(f"break: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=exc.exit_code) from None
    except PlatformError as exc:  # by type, not by message
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=exc.exit_code) from None
    if as_json:
        echo_json({**answer.to_dict(), "verified": True})
        return
    typer.echo(f"{name} as of {answer.at.isoformat()} (audit log verified, {answer.verified_entries} entries):")
    for alias, move in sorted(answer.aliases.items()):
        typer.echo("  " + _line(alias, move))

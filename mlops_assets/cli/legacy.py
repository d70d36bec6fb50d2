"""The verb-first commands of the previous release, kept hidden for one release.

``mlops approve model X 1`` and the like print one deprecation line on stderr naming the new form
(``mlops models approve X 1``) and then do exactly what it does. Remove this module, and its mount in
``mlops_assets.cli``, in the release after.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mlops_assets.cli import models, prompts
from mlops_assets.cli_common import By, deprecated, handles_errors
from mlops_assets.errors import InvalidInput

Kind = Annotated[str, typer.Argument(help="model | prompt")]


def _group(kind: str, verb: str, kinds: tuple[str, ...] = ("model", "prompt")) -> str:
    """The noun group a kind now lives in, after the deprecation line; an unknown kind is InvalidInput."""
    if kind not in kinds:
        raise InvalidInput("KIND", f"{kind!r} is not {' or '.join(repr(k) for k in kinds)}",
                           hint=f"use `mlops models {verb}` or `mlops prompts {verb}`")
    group = "models" if kind == "model" else "prompts"
    deprecated(f"{verb} {kind}", f"{group} {verb}")
    return group


@handles_errors
def approve(kind: Kind, name: str, version: str, comment: Annotated[str, typer.Option(help="why")] = "",
            by: By = None, waive: models.Waive = None, reason: models.WaiveReason = None) -> None:
    """(deprecated) `mlops models approve` / `mlops prompts approve`."""
    if _group(kind, "approve") == "models":
        models.approve(name, version, comment=comment, by=by, waive=waive, reason=reason)
    elif waive or reason:
        raise InvalidInput("waive", "only model approvals take waivers")
    else:
        prompts.approve(name, version, comment=comment, by=by)


@handles_errors
def reject(kind: Kind, name: str, version: str,
           comment: Annotated[str, typer.Option(help="why (required)")] = "", by: By = None) -> None:
    """(deprecated) `mlops models reject` / `mlops prompts reject`."""
    command = models.reject if _group(kind, "reject") == "models" else prompts.reject
    command(name, version, comment=comment, by=by)


@handles_errors
def promote(kind: Kind, name: str, version: str,
            reason: Annotated[str, typer.Option(help="note for the deployment record")] = "approved for production",
            by: By = None) -> None:
    """(deprecated) `mlops models promote` / `mlops prompts promote`."""
    if _group(kind, "promote") == "models":
        models.promote(name, version, reason=reason, by=by)
    else:
        prompts.promote(name, version, reason=reason, by=by)


@handles_errors
def rollback(kind: Kind, name: str, to: Annotated[str, typer.Option("--to", help="the version to go back to")],
             reason: Annotated[str, typer.Option(help="what went wrong (required)")] = "", by: By = None) -> None:
    """(deprecated) `mlops models rollback` / `mlops prompts rollback`."""
    command = models.rollback if _group(kind, "rollback") == "models" else prompts.rollback
    command(name, to=to, reason=reason, by=by)


@handles_errors
def archive(kind: Annotated[str, typer.Argument(help="model")], name: str, version: str,
            reason: Annotated[str, typer.Option(help="why (required)")] = "", by: By = None) -> None:
    """(deprecated) `mlops models archive`."""
    _group(kind, "archive", kinds=("model",))
    models.archive(name, version, reason=reason, by=by)


@handles_errors
def import_model(source_uri: str, task_type: Annotated[str, typer.Option(help="binary | multiclass | regression")]
                 = "binary", by: By = None) -> None:
    """(deprecated) `mlops models import`."""
    deprecated("import-model", "models import")
    models.import_model(source_uri, task_type=task_type, by=by)


def register(app: typer.Typer) -> None:
    """Mount the old verbs on ``app``, hidden from the help."""
    for name, command in (("approve", approve), ("reject", reject), ("promote", promote),
                          ("rollback", rollback), ("archive", archive), ("import-model", import_model)):
        app.command(name, hidden=True)(command)

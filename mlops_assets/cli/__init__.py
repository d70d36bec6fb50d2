"""The ``mlops`` command: one grammar, noun then verb (``mlops models approve NAME VERSION``).

::

    mlops init | status | serve | doctor | backup | restore | replay
    mlops models   list | approve | reject | promote | rollback | archive | import | as-of | canary
    mlops prompts  check | list | submit | evaluate | diff | status | approve | reject | promote
                   | rollback | deploy-chain
    mlops features check | lock
    mlops audit    verify | seal-legacy | log | export | verify-bundle
    mlops data     sample-real

One module per noun group (``models.py``, ``prompts.py``, ...); the top-level commands are in
``ops.py`` and ``doctor.py``. A new command goes into its group's module, or into a module of its own
that this one mounts, as ``models as-of`` (``history.py``) and ``replay`` (``replay.py``). Every command is
wrapped by ``mlops_assets.cli_common.handles_errors``, the one place errors become exit codes by type
(InvalidInput 2, NotFound 3, Conflict 4, Forbidden 5, a settings error 2, anything else 1; one line on
stderr, no traceback). ``cli_common`` stays outside this package so that a command module outside it
can import the helpers without importing (and so mounting) the whole command.

Identity: decisions are recorded under ``--by`` or ``MLOPS_USER`` (trusted locally; over HTTP the
management API takes the identity from the API key). The verb-first forms of the previous release
(``mlops approve model X 1``) still work, hidden, with a deprecation line (``legacy.py``).
"""

from __future__ import annotations

import sys

import typer

from mlops_assets.cli import legacy, ops
from mlops_assets.cli.audit import audit_app
from mlops_assets.cli.data import data_app
from mlops_assets.cli.doctor import doctor
from mlops_assets.cli.features import features_app
from mlops_assets.cli.models import models_app
from mlops_assets.cli.prompts import prompts_app
from mlops_assets.cli.replay import replay_command
from mlops_assets.cli_common import report
from mlops_assets.cli.history import models_as_of

app = typer.Typer(help="MLOps platform command line: `mlops NOUN VERB` (models, prompts, features, audit, data).",
                  no_args_is_help=True, pretty_exceptions_enable=False)

for command in (ops.init, ops.status, ops.serve, doctor, ops.backup, ops.restore):
    app.command(command.__name__)(command)
app.command("replay")(replay_command)
models_app.command("as-of")(models_as_of)
app.add_typer(models_app, name="models")
app.add_typer(prompts_app, name="prompts")
app.add_typer(features_app, name="features")
app.add_typer(audit_app, name="audit")
app.add_typer(data_app, name="data")
legacy.register(app)


def main() -> None:
    """The console entry point (``mlops = "mlops_assets.cli:main"``)."""
    try:
        app()
    except Exception as exc:  # noqa: BLE001 - an error outside any command (e.g. while mounting): one line
        sys.exit(report(exc))

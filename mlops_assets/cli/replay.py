"""``mlops replay REQUEST_ID``: rebuild a served request's features and prediction and check them.

Mounted in ``mlops_assets/cli.py`` with ``app.command("replay")(replay_command)``. Exit codes: 0
reproduced; 1 a value was not reproduced, or the replay was refused (an unknown request id, a
snapshot version outside the retention policy, a deleted model version), with one line that says why.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mlops_assets.cli_common import echo_json, handles_errors, settings


@handles_errors
def replay_command(
    request_id: Annotated[str, typer.Argument(help="the request id the inference app returned")],
    exact: Annotated[bool, typer.Option("--exact", help="probabilities must be bitwise equal too")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Replay a served request: rebuild its feature vector from the online snapshot version it used
    (within the retention policy) and re-score it with the model version that served it."""
    from mlops_assets.monitoring.replay import replay

    result = replay(request_id, settings(), exact=exact)
    if as_json:
        echo_json(result.to_dict())
    else:
        typer.echo(result.describe())
    if not result.reproduced:
        raise typer.Exit(code=1)

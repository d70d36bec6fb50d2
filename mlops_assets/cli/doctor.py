"""``mlops doctor``: is anything stuck in the Dagster instance, and ``--repair`` to unstick it.

It lists every claim on a concurrency pool (``duckdb_warehouse``): the pool, the run, the step, since
when, and whether the run's process still runs. A claim is *stuck* when its run is dead (killed: its
processes are gone, yet it is still STARTED), finished or deleted; such a claim blocks every later
warehouse step. ``--repair`` reports the dead runs failed and frees what they hold, then checks again.
Exit 0 when healthy; 4 (a ``Conflict``), naming what is stuck, when stuck claims or dead runs remain;
3 when DAGSTER_HOME does not exist.

The Dagster side lives in ``mlops_assets.defs.recovery`` (the house rule: only ``defs/`` imports
dagster); it is imported inside the command, so ``mlops`` starts without loading dagster.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from mlops_assets.cli_common import handles_errors, settings
from mlops_assets.errors import Conflict, NotFound

REPAIR_HELP = "report dead runs failed and free the pool slots and pending claims that dead, finished or " \
              "deleted runs hold"


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or settings().dagster_home)


@handles_errors
def doctor(repair: Annotated[bool, typer.Option("--repair", help=REPAIR_HELP)] = False) -> None:
    """Show runs that crashed and the pool claims they still hold (which block every later warehouse run)."""
    from mlops_assets.defs.recovery import describe, open_instance, sweep

    home = dagster_home()
    if not home.is_dir():
        raise NotFound("DAGSTER_HOME", f"{home} does not exist", hint="run `mlops init` first")
    with open_instance(home) as instance:
        report = sweep(instance, repair=False)
        lines = describe(report)
        typer.echo(f"Dagster instance {home}: {len(report.claims)} pool claim(s), "
                   f"{len(report.runs)} run(s) holding claims or in progress")
        for line in lines:
            typer.echo(f"  {line}")
        if repair and not report.healthy:
            done = sweep(instance, repair=True)
            for action in done.actions:
                typer.echo(f"repaired: {action}")
            report = sweep(instance, repair=False)
        if not report.healthy:
            stuck = [f"{c.kind} {c.pool}/{c.step_key} of run {c.run_id}" for c in report.stuck_claims]
            stuck += [f"dead run {r.run_id}" for r in report.dead_runs if r.run_id not in
                      {c.run_id for c in report.stuck_claims}]
            raise Conflict("duckdb_warehouse" if report.stuck_claims else "runs",
                           [f"{len(stuck)} stuck: {'; '.join(stuck)}"],
                           hint="they block later runs; `mlops doctor --repair` fails the dead runs and frees them"
                           if not repair else "the repair did not clear them; see the lines above")
    unknown = sum(1 for r in report.runs.values() if r.verdict == "unknown")
    typer.echo("ok: no stuck pool claims and no dead runs"
               + (f" ({unknown} run(s) could not be judged: left alone)" if unknown else ""))


def sweep_on_init(home: Path, echo: Callable[[str], object] = typer.echo) -> None:
    """``mlops init``: the same repair the sensor makes, on an instance that already has runs."""
    from mlops_assets.defs.recovery import open_instance, recover_crashed_runs

    config = home / "dagster.yaml"
    shared = config.exists() and "postgres" in config.read_text()
    if not (home / "history").exists() and not shared:  # a new local instance: no run can be stuck yet
        return
    with open_instance(home) as instance:
        recover_crashed_runs(instance, echo=echo)

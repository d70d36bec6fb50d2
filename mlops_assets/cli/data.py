"""``mlops data ...``: data for the platform to run on.

``mlops data sample-real --out DIR`` writes the real daily prices that ship inside the ``arch``
package (S&P 500 ``GSPC`` and NASDAQ composite ``IXIC``, 1999-2018) as a folder of Yahoo Finance
exports, one CSV per symbol. The platform then reads that folder like any user's folder of exports::

    DATA_LOADER_TYPE=local DATA_SOURCE_PATH=DIR make demo      # or: make demo-real

Nothing is downloaded.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from mlops_assets.cli_common import handles_errors
from mlops_assets.errors import InvalidInput

data_app = typer.Typer(help="Data to run the platform on (real prices that ship with the install).",
                       no_args_is_help=True)


def parse_date(field: str, value: str | None) -> dt.date | None:
    """An ISO date (YYYY-MM-DD) or None; anything else is an InvalidInput naming the option."""
    if value is None or not value.strip():
        return None
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(field, [f"{value!r} is not a date"], hint="use YYYY-MM-DD, e.g. 2010-01-04") from None


def parse_symbols(values: list[str] | None) -> list[str] | None:
    """``--symbols GSPC,IXIC`` or ``--symbols GSPC --symbols IXIC``; None means every shipped series."""
    symbols = [s.strip().upper() for v in values or [] for s in v.split(",") if s.strip()]
    return symbols or None


@data_app.command("sample-real")
@handles_errors
def sample_real(
    out: Annotated[Path, typer.Option("--out", help="folder to write <SYMBOL>.csv into (created if missing)")],
    symbols: Annotated[list[str] | None, typer.Option(
        "--symbols", help="GSPC, IXIC or both (comma-separated or repeated; default both)")] = None,
    start: Annotated[str | None, typer.Option(help="first date, YYYY-MM-DD (data from 1999-01-04)")] = None,
    end: Annotated[str | None, typer.Option(help="last date, YYYY-MM-DD (data to 2018-12-31)")] = None,
) -> None:
    """Write the real S&P 500 / NASDAQ daily prices shipped with `arch` as a folder of Yahoo exports."""
    import polars as pl

    from mlops_assets.data.real import write_yahoo_folder

    files = write_yahoo_folder(out, parse_symbols(symbols), parse_date("start", start), parse_date("end", end))
    for path in files:
        dates = pl.read_csv(path, columns=["Date"])["Date"]
        typer.echo(f"{path}  {dates.len()} rows  {dates.min()} .. {dates.max()}")
    typer.echo(f"next: DATA_LOADER_TYPE=local DATA_SOURCE_PATH={Path(out).resolve()} make demo")

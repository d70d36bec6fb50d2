"""``mlops audit ...``: the tamper-evident audit log and the evidence bundle for an auditor.

``verify`` checks the hash chain, the HMACs, the head anchor and the governed rows; ``seal-legacy``
binds an older store's rows once; ``log`` shows the newest entries; ``export`` writes the evidence
bundle and ``verify-bundle`` checks one. A log or bundle that does not verify is a ``Conflict`` (exit 4).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mlops_assets.cli_common import By, actor, handles_errors, require_text, settings
from mlops_assets.errors import Conflict

audit_app = typer.Typer(help="The tamper-evident audit log and the evidence bundle.", no_args_is_help=True)


@audit_app.command("verify")
@handles_errors
def verify() -> None:
    """Verify the hash chain, the HMACs and the head anchor; report the first bad entry."""
    from mlops_assets import stores

    v = stores.governance_store(settings()).verify_audit()
    if not v.ok and v.first_bad_seq is None and v.head_seq is not None and "row" in (v.reason or ""):
        raise Conflict("audit", f"governed rows do not match the audit log: {v.reason} ({v.entries} entries read)")
    if not v.ok:
        raise Conflict("audit", f"audit log broken at entry {v.first_bad_seq}: {v.reason} ({v.entries} entries read)")
    typer.echo(f"ok: {v.entries} entries, chain and anchor verified; decisions, deployments, gate results "
               "and registrations match their entries")


@audit_app.command("seal-legacy")
@handles_errors
def seal_legacy(reason: Annotated[str, typer.Option(help="why (required), e.g. the upgrade")] = "",
                by: By = None) -> None:
    """Bind rows an older version wrote (no audit binding) to the chain, once, after an upgrade."""
    from mlops_assets import stores

    require_text("reason", reason, "sealing legacy rows")
    count = stores.governance_store(settings()).seal_legacy_rows(actor(by), reason)
    typer.echo(f"sealed {count} legacy row(s); `mlops audit verify` checks them from now on")


@audit_app.command("log")
@handles_errors
def log(limit: int = 20) -> None:
    """The newest audit entries."""
    from mlops_assets import stores

    for e in stores.governance_store(settings()).list_audit(limit=limit):
        typer.echo(f"{e.seq:>5} {e.ts} {e.actor:<20} {e.action:<22} {e.subject_kind}:{e.subject_id}")


@audit_app.command("export")
@handles_errors
def export(out: Annotated[Path, typer.Option("--out", help="directory to write the bundle into")],
           by: By = None) -> None:
    """Write the audit evidence bundle (folder + .zip) for an auditor, verify it, and record the export."""
    from mlops_assets.reporting.export import export_bundle, verify_bundle

    root = export_bundle(settings(), out, actor=actor(by))
    ok, problems = verify_bundle(root.with_suffix(".zip"))
    if not ok:
        raise Conflict("bundle", f"the bundle {root} does not verify: {'; '.join(problems)}")
    manifest = json.loads((root / "manifest.json").read_text())
    head = (manifest["audit_head"] or {}).get("seq")
    typer.echo(f"wrote {root} and {root.with_suffix('.zip').name}: {len(manifest['files'])} files, "
               f"audit head {head}, verified")
    if not manifest["audit_verified_at_export"]:
        typer.secho("warning: the audit log itself did not verify; see audit/verification.json",
                    fg=typer.colors.YELLOW, err=True)


@audit_app.command("verify-bundle")
@handles_errors
def verify_bundle(path: Annotated[Path, typer.Argument(help="bundle folder or .zip")]) -> None:
    """Check an exported bundle: every file against the manifest and the audit log's hash chain."""
    from mlops_assets.reporting.export import verify_bundle as verify

    ok, problems = verify(path)
    if not ok:
        for problem in problems:
            typer.secho(f"  {problem}", fg=typer.colors.RED, err=True)
        raise Conflict("bundle", f"{path}: {len(problems)} problem(s); the bundle was changed after export")
    typer.echo(f"ok: {path} matches its manifest and its audit chain")

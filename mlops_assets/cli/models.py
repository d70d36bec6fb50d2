"""``mlops models ...``: the registered model's versions and the decisions about them.

``list`` shows each version with its aliases, its latest decision and the gate verdicts the
governance store recorded (the tags only mirror them). ``approve``, ``reject``, ``promote``,
``rollback`` and ``archive`` go through ``mlops_assets.models.promotion``, which re-checks the gates;
``import`` registers a model trained elsewhere. A version that the registry does not hold is
``NotFound`` (exit 3) before anything is decided; a gate's refusal is a ``Conflict`` (exit 4).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mlops_assets.cli_common import By, actor, echo_json, handles_errors, require_text, settings
from mlops_assets.errors import InvalidInput, NotFound

models_app = typer.Typer(help="Model versions: list, approve, reject, promote, roll back, archive, import.",
                         no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="registered model name (e.g. the setting model.name)")]
Version = Annotated[str, typer.Argument(help="version number")]
Waive = Annotated[list[str] | None, typer.Option(
    "--waive", help="a failing non-critical check to waive (repeatable; one --reason each)")]
WaiveReason = Annotated[list[str] | None, typer.Option(
    "--reason", help="why the check before it may fail (recorded and audited)")]

_MAX_VERSION_DIGITS = 9  # as the management API: a version number never overflows a store column


def _context() -> tuple[Any, Any, Any]:
    from mlops_assets import stores

    s = settings()
    return s, stores.mlflow_client(s), stores.governance_store(s)


def check_version(field: str, version: str) -> str:
    """A version number as the registry spells it; anything else is InvalidInput naming the field."""
    text = str(version).strip()
    if not text.isdigit() or not 0 < len(text) <= _MAX_VERSION_DIGITS or int(text) == 0:
        raise InvalidInput(field, f"{version!r} is not a version number",
                           hint=f"a positive integer of at most {_MAX_VERSION_DIGITS} digits")
    return str(int(text))


def require_version(client: Any, name: str, version: str, field: str = "version") -> str:
    """The version, checked to exist in the registry (NotFound otherwise), before any decision."""
    from mlflow.exceptions import MlflowException

    version = check_version(field, version)
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise NotFound(field, f"model {name!r} has no version {version} in the registry",
                       hint="`mlops models list` shows its versions") from None
    return version


def _gate_text(gates: dict[str, Any]) -> str:
    from mlops_assets.models.gates import GATE_COMPLIANCE, GATE_EVALUATION

    parts = []
    ev = gates.get(GATE_EVALUATION)
    if ev is None:
        parts.append("evaluation=-")
    else:
        metric = str(ev.details.get("metric") or next(iter(ev.values), ""))
        value = ev.values.get(metric)
        shown = f"{value:.4g}" if isinstance(value, float) else value
        parts.append(f"evaluation={'passed' if ev.passed else 'FAILED'}"
                     + (f" ({metric}={shown}, threshold {ev.thresholds.get(metric)})" if metric else ""))
    co = gates.get(GATE_COMPLIANCE)
    if co is None:
        parts.append("compliance=-")
    else:
        parts.append("compliance=" + ("passed" if co.passed and not co.failed
                                      else "FAILED " + ",".join(co.failed)))
    return " ".join(parts)


@models_app.command("list")
@handles_errors
def list_versions(name: Annotated[str | None, typer.Argument(help="default: the setting model.name")] = None,
                  as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
    """Versions with their aliases, latest decision and recorded gate verdicts."""
    from mlflow.exceptions import MlflowException

    s, client, store = _context()
    name = name or s.model.name
    try:
        aliases = dict(client.get_registered_model(name).aliases or {})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise NotFound("name", f"no registered model {name!r}",
                       hint="train one with `make demo`, or register one with `mlops models import URI`") from None
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for mv in sorted(client.search_model_versions(f"name='{name}'"), key=lambda m: int(m.version)):
        version = str(mv.version)
        decision = store.latest_decision("model", name, version)
        gates = store.gate_results(name, version)
        rows.append({"version": version, "aliases": sorted(by_version.get(version, [])),
                     "state": decision.state.value if decision else None,
                     "waivers": dict(decision.waivers or {}) if decision else {},
                     "gates": {g: {"passed": r.passed, "failed": list(r.failed), "values": r.values,
                                   "thresholds": r.thresholds} for g, r in gates.items()},
                     "_text": _gate_text(gates)})
    if as_json:
        echo_json({"name": name, "versions": [{k: v for k, v in r.items() if k != "_text"} for r in rows]})
        return
    typer.echo(f"{name}: {len(rows)} version(s)")
    for r in rows:
        aliases_text = ",".join(r["aliases"]) or "-"
        waived = f" waived={','.join(sorted(r['waivers']))}" if r["waivers"] else ""
        typer.echo(f"  v{r['version']:<4} aliases={aliases_text:<20} state={r['state'] or '-':<10} "
                   f"{r['_text']}{waived}")


@models_app.command("approve")
@handles_errors
def approve(name: Name, version: Version, comment: Annotated[str, typer.Option(help="why")] = "",
            by: By = None, waive: Waive = None, reason: WaiveReason = None) -> None:
    """Approve a version (after its checklist passes); the approval sensor then promotes it.

    ``--waive CHECK --reason TEXT`` (repeatable) approves a version that fails non-critical checks;
    critical checks (``evaluation.critical_checks``) cannot be waived."""
    from mlops_assets.models.gates import configured_role, gate_policy
    from mlops_assets.models.promotion import approve as approve_model

    waive, reason = list(waive or []), list(reason or [])
    if len(waive) != len(reason):
        raise InvalidInput("waive", f"give one --reason per --waive ({len(waive)} waived, {len(reason)} reasons)")
    s, client, store = _context()
    version = require_version(client, name, version)
    who = actor(by)
    decision = approve_model(client, store, name, version, reviewer=who,
                             compliance_required=s.evaluation.compliance_required, comment=comment or None,
                             waivers=dict(zip(waive, reason)), policy=gate_policy(s),
                             role=configured_role(s, who) if waive else None)
    waived = f" waiving {', '.join(sorted(decision.waivers))}" if decision.waivers else ""
    typer.echo(f"approved {name} v{version} by {decision.actor}{waived}; the approval sensor promotes it "
               f"(or run `mlops models promote {name} {version}` where no daemon runs)")


@models_app.command("reject")
@handles_errors
def reject(name: Name, version: Version, comment: Annotated[str, typer.Option(help="why (required)")] = "",
           by: By = None) -> None:
    """Reject a version (also revokes an approval)."""
    from mlops_assets.models.promotion import reject as reject_model

    require_text("comment", comment, "a rejection")
    _, client, store = _context()
    version = require_version(client, name, version)
    reject_model(client, store, name, version, reviewer=actor(by), reason=comment)
    typer.echo(f"rejected {name} v{version}")


@models_app.command("promote")
@handles_errors
def promote(name: Name, version: Version,
            reason: Annotated[str, typer.Option(help="note for the deployment record")] = "approved for production",
            by: By = None) -> None:
    """Move production to an approved version directly (where no Dagster daemon runs the sensor)."""
    from mlops_assets.models.gates import gate_policy
    from mlops_assets.models.promotion import promote as promote_model

    s, client, store = _context()
    version = require_version(client, name, version)
    d = promote_model(client, store, name, version, alias=s.model.production_alias, actor=actor(by), reason=reason,
                      compliance_required=s.evaluation.compliance_required, production_alias=s.model.production_alias,
                      policy=gate_policy(s))
    typer.echo(f"{name}: {s.model.production_alias} -> v{d.version} (was {d.previous_version}); deployment {d.id}")


@models_app.command("rollback")
@handles_errors
def rollback(name: Name, to: Annotated[str, typer.Option("--to", help="the version to go back to")],
             reason: Annotated[str, typer.Option(help="what went wrong (required)")] = "", by: By = None) -> None:
    """Move production back to a version it served before."""
    from mlops_assets.models.gates import gate_policy
    from mlops_assets.models.promotion import rollback as rollback_model

    require_text("reason", reason, "a rollback")
    s, client, store = _context()
    to = require_version(client, name, to, field="to")
    d = rollback_model(client, store, name, to, alias=s.model.production_alias, actor=actor(by), reason=reason,
                       compliance_required=s.evaluation.compliance_required, policy=gate_policy(s))
    typer.echo(f"{name}: {s.model.production_alias} rolled back to v{d.version} (was {d.previous_version}); "
               f"deployment {d.id}")


@models_app.command("archive")
@handles_errors
def archive(name: Name, version: Version, reason: Annotated[str, typer.Option(help="why (required)")] = "",
            by: By = None) -> None:
    """Retire a version: archived in the store, aliases removed (never the serving one)."""
    from mlops_assets.models.promotion import archive as archive_model

    require_text("reason", reason, "archiving")
    s, client, store = _context()
    version = require_version(client, name, version)
    archive_model(client, store, name, version, actor=actor(by), reason=reason,
                  protected_aliases=(s.model.production_alias,))
    typer.echo(f"archived {name} v{version}")


@models_app.command("import")
@handles_errors
def import_model(source_uri: Annotated[str, typer.Argument(help="runs:/<id>/model, models:/name/3, models:/name@alias")],
                 task_type: Annotated[str, typer.Option(help="binary | multiclass | regression")] = "binary",
                 by: By = None) -> None:
    """Register an MLflow pyfunc model trained elsewhere as a new version.

    It is then evaluated and approved like a trained one (the model_version_sensor picks it up)."""
    from mlops_assets.models.registration import import_external_model

    s, client, _ = _context()
    registered = import_external_model(client, source_uri, s.model.name, registered_by=actor(by), task_type=task_type,
                                       challenger_alias=s.model.challenger_alias)
    typer.echo(f"registered {s.model.name} v{registered.version} from {source_uri}; the evaluation runs when the "
               f"Dagster daemon's model_version_sensor sees it")


@models_app.command("canary")
@handles_errors
def canary(first: Annotated[str, typer.Argument(metavar="NAME | status NAME | stop NAME",
                                                help="start: NAME VERSION --share S; or `status NAME`, `stop NAME`")],
           second: Annotated[str, typer.Argument(metavar="VERSION | NAME")],
           share: Annotated[float | None, typer.Option(help="share of /predict traffic for the canary, e.g. 0.1")] = None,
           reason: Annotated[str, typer.Option(help="note for the record (required to stop)")] = "",
           as_json: Annotated[bool, typer.Option("--json", help="status as JSON")] = False,
           by: By = None) -> None:
    """Canary an approved version with automatic rollback: `canary NAME VERSION --share 0.1`,
    `canary status NAME`, `canary stop NAME --reason ...`.

    Starting moves the canary alias through the alias mover (recorded gates, an APPROVED decision by
    another person). The platform judges the guardrails (evaluation.canary_*) every few seconds, rolls a
    failing canary back (audited, actor platform) and marks a held one ready; promoting stays
    `mlops models promote`."""
    from mlops_assets.monitoring import canary as C
    from mlops_assets.monitoring.canary_guardrails import CanaryPolicy
    from mlops_assets.models.gates import gate_policy

    s, client, store = _context()
    policy, aliases = CanaryPolicy.from_settings(s), C.Aliases.from_settings(s)
    if first == "status":
        out = C.status(client, store, second, s.serving_log_dir, policy, aliases)
        if as_json:
            echo_json(out)
            return
        typer.echo(f"{second}: canary {out['state']}" + (f" v{out['version']}" if out.get("version") else "")
                   + (f" at {out['share']:.0%}" if out.get("share") else "")
                   + f" (champion v{out.get('champion_version')})")
        for check in (out.get("verdict") or {}).get("checks", []):
            state = {True: "passed", False: "FAILED", None: "waiting"}[check["passed"]]
            typer.echo(f"  {check['name']}: {state}  {check['message']}")
        if out.get("ended"):
            ended = out["ended"]
            typer.echo(f"  ended by {ended['actor']} at {ended['ts']}: {(ended.get('details') or {}).get('why')}")
        return
    if first == "stop":
        require_text("reason", reason, "stopping a canary")
        C.stop(client, store, second, actor=actor(by), reason=reason, aliases=aliases)
        typer.echo(f"{second}: canary stopped")
        return
    name, version = first, require_version(client, first, second)
    if share is None:
        raise InvalidInput("share", "say which share of traffic the canary gets", hint="--share 0.1")
    d = C.start(client, store, name, version, share, actor=actor(by), compliance_required=s.evaluation.compliance_required,
                gate_policy=gate_policy(s), policy=policy, aliases=aliases, reason=reason or None)
    typer.echo(f"{name}: canary v{d.version} at {share:.0%} of traffic (deployment {d.id}); guardrails every "
               f"{policy.check_seconds:g} s, ready after {policy.hold_seconds:g} s; `mlops models canary status {name}`")

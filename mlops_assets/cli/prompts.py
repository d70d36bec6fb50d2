"""``mlops prompts ...``: the prompt library and its review workflow.

``check`` (the pre-merge gate), ``list``, ``submit``, ``evaluate``, ``diff``, ``status``, then the
decisions: ``approve``, ``reject``, ``promote`` (the retry when an approval could not move production),
``rollback``, and ``deploy-chain`` (serve the LLM chain with an approved version).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mlops_assets import cli_common as cli
from mlops_assets.cli_common import By, handles_errors, require_text
from mlops_assets.errors import Conflict

prompts_app = typer.Typer(help="The prompt library and its approval workflow.", no_args_is_help=True)

Offline = Annotated[bool, typer.Option("--offline", help="static and offline checks only, no LLM calls")]
LibraryDir = Annotated[Path | None, typer.Option("--dir", help="the library (default: setting prompts_dir)")]


def _llm_client(offline: bool) -> Any:
    """An OpenAI client when ``OPENAI_API_KEY`` is set and ``--offline`` is not given."""
    import os

    from mlops_assets.prompts.chat import ENV_API_KEY, client_from_env

    if offline or not os.environ.get(ENV_API_KEY, "").strip():
        return None
    return client_from_env()


def _echo_checks(checks: list[Any]) -> None:
    for c in checks:
        mark = "ok  " if c.passed else ("FAIL" if c.blocking else "warn")
        color = None if c.passed else (typer.colors.RED if c.blocking else typer.colors.YELLOW)
        typer.secho(f"  {mark} {c.name:<24} {c.message}", fg=color)


@prompts_app.command("check")
@handles_errors
def check(directory: LibraryDir = None) -> None:
    """The pre-merge gate: schema, static and offline checks of every template file (exit 4 on errors)."""
    from mlops_assets.prompts.evaluators import check_library

    directory = directory or cli.settings().prompts_dir
    problems = check_library(directory)
    for p in problems:
        typer.secho(f"  {p}", fg=typer.colors.RED if p.severity == "error" else typer.colors.YELLOW, err=True)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise Conflict("prompts_dir", f"{len(errors)} error(s) in the prompt library {directory}",
                       hint="fix them before merging")
    from mlops_assets.prompts.library import template_files

    typer.echo(f"ok: {len(template_files(directory))} template(s) pass the static and offline checks"
               + (f" ({len(problems)} warning(s))" if problems else ""))


@prompts_app.command("list")
@handles_errors
def list_templates() -> None:
    """Templates in the library: id, version, owner, risk level, review state."""
    from mlops_assets import stores
    from mlops_assets.prompts.records import find_template, scan_library

    s = cli.settings()
    scan = scan_library(s.prompts_dir)
    store = stores.governance_store(s)
    for template_id in sorted(scan.hashes):
        t = find_template(s.prompts_dir, template_id)
        state = store.state("prompt", t.id, t.version)
        state_text = state.value if state else "-"
        typer.echo(f"{t.id:<28} {t.version:<10} {t.risk_level:<7} {t.owner:<28} {state_text}")
    for problem in scan.problems:
        typer.secho(f"  unreadable: {problem}", fg=typer.colors.RED, err=True)


@prompts_app.command("submit")
@handles_errors
def submit(template_id: str,
           version: Annotated[str | None, typer.Argument(help="default: the file's version")] = None,
           comment: Annotated[str, typer.Option(help="note for the reviewer")] = "", by: By = None,
           offline: Offline = False) -> None:
    """Submit the library's version of a template for review (registers it in MLflow and evaluates it)."""
    from mlops_assets.prompts.workflow import current_template, submit_prompt

    s = cli.settings()
    version = version or current_template(s, template_id).version
    result = submit_prompt(s, template_id, version, actor=cli.actor(by), comment=comment or None,
                           llm_client=_llm_client(offline))
    cli.echo_json(result.to_dict())


@prompts_app.command("evaluate")
@handles_errors
def evaluate(template_id: str, by: By = None, offline: Offline = False) -> None:
    """Evaluate the library's version of a template; exit 4 when a blocking check fails."""
    from mlops_assets.prompts.workflow import current_template, evaluate_prompt

    s = cli.settings()
    template = current_template(s, template_id)
    result = evaluate_prompt(s, template, _llm_client(offline), actor=cli.actor(by))
    typer.echo(f"{template.name} ({template.risk_level} risk) content {result.content_hash[:12]} "
               f"MLflow run {result.mlflow_run_id}")
    _echo_checks(result.checks)
    if not result.passed:
        raise Conflict(template_id, f"{len(result.blocking_failures)} blocking check(s) failed: "
                       + ", ".join(c.name for c in result.blocking_failures))
    typer.echo("passed" + ("" if result.cases else " (offline: no model checks)"))


@prompts_app.command("diff")
@handles_errors
def diff(template_id: str, v1: str, v2: str) -> None:
    """What changed from V1 to V2 (template text, then every other field)."""
    from mlops_assets.prompts.status import diff_prompt

    typer.echo(diff_prompt(cli.settings(), template_id, v1, v2), nl=False)


@prompts_app.command("status")
@handles_errors
def status(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
    """Every template version: review state, production, content changes, last evaluation."""
    from mlops_assets.prompts.status import prompt_status

    rows = prompt_status(cli.settings())
    if as_json:
        cli.echo_json(rows)
        return
    for r in rows:
        ev = r["last_evaluation"]
        verdict = "-" if ev is None else (
            "passed" if ev["passed"] else "FAILED " + ",".join(ev["blocking_failures"]))
        flags = ("  PRODUCTION" if r["production"] else "") + (
            "  file changed since submission" if r["content_changed_since_submission"] else "")
        state = r["state"] or "-"
        typer.echo(f"{r['template_id']:<28} {r['version']:<10} {state:<10} evaluation={verdict}{flags}")


@prompts_app.command("approve")
@handles_errors
def approve(template_id: str, version: str, comment: Annotated[str, typer.Option(help="why")] = "",
            by: By = None) -> None:
    """Approve a version in review (not by its owner or submitter); production moves to it."""
    from mlops_assets.prompts.approval import approve_prompt

    cli.echo_json(approve_prompt(cli.settings(), template_id, version, reviewer=cli.actor(by),
                                 comment=comment or None).to_dict())


@prompts_app.command("reject")
@handles_errors
def reject(template_id: str, version: str, comment: Annotated[str, typer.Option(help="why (required)")] = "",
           by: By = None) -> None:
    """Reject a version (also revokes an approval)."""
    from mlops_assets.prompts.approval import reject_prompt

    require_text("comment", comment, "a rejection")
    cli.echo_json(reject_prompt(cli.settings(), template_id, version, reviewer=cli.actor(by),
                                reason=comment).to_dict())


@prompts_app.command("rollback")
@handles_errors
def rollback(template_id: str, to: Annotated[str, typer.Option("--to", help="the version to go back to")],
             reason: Annotated[str, typer.Option(help="what went wrong (required)")] = "", by: By = None) -> None:
    """Move production back to an APPROVED version that served before."""
    from mlops_assets.prompts.approval import rollback_prompt

    require_text("reason", reason, "a rollback")
    cli.echo_json(rollback_prompt(cli.settings(), template_id, to, actor=cli.actor(by), reason=reason).to_dict())


@prompts_app.command("promote")
@handles_errors
def promote(template_id: str, version: str, reason: Annotated[str, typer.Option(help="note")] = "",
            by: By = None) -> None:
    """Move production to an APPROVED version (the retry when an approval could not move it)."""
    from mlops_assets.prompts.approval import promote_prompt

    d = promote_prompt(cli.settings(), template_id, version, actor=cli.actor(by), reason=reason or None)
    typer.echo(f"{template_id}: production -> {d.version} (MLflow version {d.mlflow_version}, was "
               f"{d.previous_version or 'none'})")


@prompts_app.command("deploy-chain")
@handles_errors
def deploy_chain(template_id: str,
                 version: Annotated[str | None, typer.Argument(
                     help="an APPROVED version (default: the one in production, else the file's)")] = None,
                 reason: Annotated[str, typer.Option(help="note")] = "", by: By = None) -> None:
    """Serve the LLM chain (/invoke) with an APPROVED version of the template: registers the LangGraph
    chain and moves its serving alias (refused, exit 4, when the version is not approved)."""
    from mlops_assets.llm.registry import deploy_chain as deploy

    s = cli.settings()
    d = deploy(s, template_id, version, actor=cli.actor(by), reason=reason or None)
    what = "now serves" if d.moved else "already served"
    typer.echo(f"{d.model_name}@{d.alias} {what} chain version {d.version} with prompt {d.prompt_id} "
               f"{d.prompt_version} (MLflow prompt version {d.prompt_mlflow_version}); was "
               f"{d.previous_version or 'none'}")
    if s.llm.api_key is None:
        typer.secho("note: OPENAI_API_KEY (setting llm.api_key) is not set; the inference app needs it to "
                    "answer /invoke (and OPENAI_BASE_URL for a local OpenAI-compatible server)",
                    fg=typer.colors.YELLOW, err=True)

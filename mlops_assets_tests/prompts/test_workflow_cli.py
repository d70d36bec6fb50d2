"""``mlops prompts ...`` and ``mlops audit export``: the pre-merge check (as CI runs it) and the workflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mlops_assets.cli import app
from mlops_assets.cli.prompts import prompts_app
from mlops_assets_tests.prompts.test_workflow import OWNER, template_data, write_template

pytest_plugins = ["mlops_assets_tests.conftest_llm"]

LIBRARY = Path(__file__).resolve().parents[2] / "prompts"
runner = CliRunner()


def test_check_passes_the_shipped_library_and_fails_a_broken_one(tmp_path: Path, embedder) -> None:
    result = runner.invoke(prompts_app, ["check", "--dir", str(LIBRARY)])
    assert result.exit_code == 0, result.output
    assert "ok: 3 template(s) pass the static and offline checks" in result.output
    bad = template_data("bad_note", instruction="Write about {{pair}} and {{tenor}}.")
    write_template(tmp_path, bad)
    result = runner.invoke(prompts_app, ["check", "--dir", str(tmp_path)])
    assert result.exit_code == 4  # a Conflict: the pre-merge gate refuses the library
    assert "undeclared_variables" in result.output and "tenor" in result.output
    assert "error: prompts_dir: 2 error(s) in the prompt library" in result.output  # undeclared + golden inputs missing it
    assert "Traceback" not in result.output


@pytest.fixture()
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llm_tracking_uri: str) -> Path:
    from mlops_assets.settings import get_settings

    prompts = tmp_path / "prompts"
    prompts.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"prompts_dir": str(prompts)}))
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_CONFIG", str(config))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", llm_tracking_uri)
    get_settings.cache_clear()
    yield prompts
    get_settings.cache_clear()


def test_workflow_and_audit_export_through_the_command_line(cli_env: Path, tmp_path: Path, embedder) -> None:
    write_template(cli_env, template_data("cli_note"))
    listed = runner.invoke(prompts_app, ["list"])
    assert listed.exit_code == 0 and "cli_note" in listed.output and "medium" in listed.output
    submitted = runner.invoke(prompts_app, ["submit", "cli_note", "--by", "alice", "--offline"])
    assert submitted.exit_code == 0, submitted.output
    body = json.loads(submitted.stdout)
    assert body["decision"]["state"] == "IN_REVIEW" and body["evaluation"]["passed"]

    refused = runner.invoke(app, ["prompts", "approve", "cli_note", "1.0.0", "--by", OWNER])
    assert refused.exit_code == 4  # a Conflict: the four-eyes rule refuses
    assert refused.output.count("\n") == 1 and "owns the template" in refused.output
    approved = runner.invoke(app, ["prompts", "approve", "cli_note", "1.0.0", "--by", "bob",
                                   "--comment", "ok"])
    assert approved.exit_code == 0, approved.output
    assert json.loads(approved.stdout)["state"] == "APPROVED"
    old_verb = runner.invoke(app, ["reject", "prompt", "cli_note", "1.0.0", "--by", "carol"])
    assert old_verb.exit_code == 2  # the old verb runs `mlops prompts reject`, which needs a reason
    assert old_verb.stderr.splitlines() == [
        "deprecated: `mlops reject prompt` is now `mlops prompts reject`; the old form goes in the next release",
        "error: comment: a rejection needs a reason (pass --comment TEXT)"]
    status = runner.invoke(prompts_app, ["status"])
    assert "cli_note" in status.output and "APPROVED" in status.output and "PRODUCTION" in status.output

    write_template(cli_env, template_data("cli_note", "1.1.0",
                                          instruction="Write one short sentence on {{pair}}."))
    evaluated = runner.invoke(prompts_app, ["evaluate", "cli_note", "--offline", "--by", "ci"])
    assert evaluated.exit_code == 0 and "passed (offline: no model checks)" in evaluated.output
    diff = runner.invoke(prompts_app, ["diff", "cli_note", "1.0.0", "1.1.0"])
    assert "+Write one short sentence on {{pair}}." in diff.output
    unknown = runner.invoke(prompts_app, ["diff", "cli_note", "1.0.0", "9.9.9"])
    assert unknown.exit_code == 4  # the workflow raises a GovernanceError (a Conflict) for it
    assert "version 9.9.9 is not in the library and was never submitted" in unknown.output

    exported = runner.invoke(app, ["audit", "export", "--out", str(tmp_path / "evidence"), "--by", "auditor"])
    assert exported.exit_code == 0, exported.output
    (bundle,) = [p for p in (tmp_path / "evidence").iterdir() if p.is_dir()]
    assert "verified" in exported.output
    assert runner.invoke(app, ["audit", "verify-bundle", str(bundle.with_suffix(".zip"))]).exit_code == 0
    (bundle / "policies" / "approvals.json").write_text("{}")
    broken = runner.invoke(app, ["audit", "verify-bundle", str(bundle)])
    assert broken.exit_code == 4 and "policies/approvals.json does not match its sha256" in broken.output

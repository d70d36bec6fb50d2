"""MLflow prompt registry sync on a real SQLite store: dedup by content hash, state tags, alias."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops_assets.prompts.registry import (
    TAG_CONTENT_HASH,
    TAG_SEMVER,
    PromptNotApproved,
    PromptNotFound,
    PromptRegistryError,
    PromptStateInvalid,
    current_alias_version,
    list_prompt_versions,
    load_production_prompt,
    set_production_alias,
    set_prompt_state,
    sync_prompt,
)
from mlops_assets.prompts.library import content_hash, load_library
from mlops_assets.models.tags import TAG_APPROVAL_STATE
from mlops_assets.errors import Conflict, InvalidInput, NotFound

LIBRARY = Path(__file__).resolve().parents[2] / "prompts"


pytest_plugins = ["mlops_assets_tests.conftest_llm"]


@pytest.fixture(scope="module")
def tracking_uri(llm_tracking_uri: str) -> str:
    return llm_tracking_uri


def _template(prompt_id: str):
    base = {t.id: t for t in load_library(LIBRARY)}["market_narrative"]
    return base.model_copy(update={"id": prompt_id})


def test_sync_twice_registers_one_version_and_mirrors_state(tracking_uri: str) -> None:
    template = _template("dedup_prompt")
    first = sync_prompt(tracking_uri, template)
    second = sync_prompt(tracking_uri, template, "APPROVED")
    assert first == ("dedup_prompt", 1, True)
    name, version, created = second
    assert (name, version, created) == ("dedup_prompt", 1, False)
    versions = list_prompt_versions(tracking_uri, "dedup_prompt")
    assert [v.mlflow_version for v in versions] == [1]
    assert versions[0].state == "APPROVED"
    assert versions[0].content_hash == content_hash(template)
    assert versions[0].semver == "1.0.0"
    assert versions[0].template == template.template
    assert versions[0].model_parameters == template.model_parameters

    edited = template.model_copy(update={"version": "1.1.0", "template": template.template + "\nBe brief."})
    assert sync_prompt(tracking_uri, edited) == ("dedup_prompt", 2, True)
    assert sync_prompt(tracking_uri, template).created is False  # the old content is still version 1
    tags = MlflowClient(tracking_uri).get_prompt_version("dedup_prompt", 2).tags
    assert tags[TAG_SEMVER] == "1.1.0" and tags[TAG_APPROVAL_STATE] == "IN_REVIEW"
    assert tags[TAG_CONTENT_HASH] == content_hash(edited)


def test_production_alias_requires_approval_and_resolves_without_cache(tracking_uri: str) -> None:
    v1 = _template("alias_prompt")
    v2 = v1.model_copy(update={"version": "1.1.0", "template": v1.template.replace("four", "three")})
    sync_prompt(tracking_uri, v1, "APPROVED")
    sync_prompt(tracking_uri, v2, "IN_REVIEW")
    with pytest.raises(PromptRegistryError, match="cannot resolve prompts:/alias_prompt@production"):
        load_production_prompt(tracking_uri, "alias_prompt")
    with pytest.raises(PromptRegistryError, match="approval.state='IN_REVIEW'") as err:
        set_production_alias(tracking_uri, "alias_prompt", 2)
    assert err.value.field == "approval.state"

    assert set_production_alias(tracking_uri, "alias_prompt", 1) is None
    prod = load_production_prompt(tracking_uri, "alias_prompt")
    assert (prod.mlflow_version, prod.semver, prod.state) == (1, "1.0.0", "APPROVED")
    assert prod.template == v1.template and prod.uri == "prompts:/alias_prompt/1"

    set_prompt_state(tracking_uri, "alias_prompt", 2, "APPROVED")
    assert set_production_alias(tracking_uri, "alias_prompt", 2) == 1
    assert load_production_prompt(tracking_uri, "alias_prompt").mlflow_version == 2  # seen at once
    assert current_alias_version(tracking_uri, "alias_prompt") == 2

    # a revoked approval is refused at resolution time, even though the alias still points there
    set_prompt_state(tracking_uri, "alias_prompt", 2, "REJECTED")
    with pytest.raises(PromptRegistryError, match="roll the alias back"):
        load_production_prompt(tracking_uri, "alias_prompt")


def test_bad_state_and_unknown_version_are_named(tracking_uri: str) -> None:
    with pytest.raises(PromptRegistryError) as err:
        sync_prompt(tracking_uri, _template("state_prompt"), "MAYBE")
    assert err.value.field == "state" and "IN_REVIEW" in str(err.value)
    sync_prompt(tracking_uri, _template("state_prompt"), "APPROVED")
    with pytest.raises(PromptRegistryError, match="version 7 is not in the registry"):
        set_production_alias(tracking_uri, "state_prompt", 7)
    assert list_prompt_versions(tracking_uri, "never_synced") == []


def test_each_refusal_is_one_vocabulary_type_and_the_cli_exits_with_its_code(tracking_uri: str) -> None:
    """Not-found, not-approved and a bad state are NotFound / Conflict / InvalidInput (still all
    ``PromptRegistryError``); a command wrapped by the CLI's one error handler exits 3 / 4 / 2 with
    ``error: <field>: <message>``."""
    import typer
    from typer.testing import CliRunner

    from mlops_assets.cli_common import handles_errors

    sync_prompt(tracking_uri, _template("typed_prompt"), "IN_REVIEW")
    calls = {
        "missing": lambda: set_production_alias(tracking_uri, "typed_prompt", 9),
        "unapproved": lambda: set_production_alias(tracking_uri, "typed_prompt", 1),
        "no-alias": lambda: load_production_prompt(tracking_uri, "typed_prompt"),
        "bad-state": lambda: set_prompt_state(tracking_uri, "typed_prompt", 1, "MAYBE"),
    }
    expected = {"missing": (PromptNotFound, NotFound, "mlflow_version", 3),
                "unapproved": (PromptNotApproved, Conflict, "approval.state", 4),
                "no-alias": (PromptNotFound, NotFound, "alias", 3),
                "bad-state": (PromptStateInvalid, InvalidInput, "state", 2)}
    app = typer.Typer()

    @app.command()
    @handles_errors
    def run(which: str) -> None:
        calls[which]()

    for which, (kind, vocabulary, field, code) in expected.items():
        with pytest.raises(kind) as err:
            calls[which]()
        assert isinstance(err.value, PromptRegistryError) and isinstance(err.value, vocabulary)
        assert err.value.field == field and err.value.reasons == [str(err.value)]
        result = CliRunner().invoke(app, [which])
        assert result.exit_code == code, (which, result.output)
        assert result.stderr == " ".join(f"error: {field}: {err.value}".split()) + "\n", result.stderr

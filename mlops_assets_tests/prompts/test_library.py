"""Prompt library: loading, validation errors, content hash, rendering, diff."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops_assets.errors import InvalidInput
from mlops_assets.prompts.library import (
    MissingVariablesError,
    PromptLibraryError,
    content_hash,
    diff_templates,
    load_library,
    load_template,
    malformed_placeholders,
    parse_template,
    placeholders,
    render,
    render_text,
)

LIBRARY = Path(__file__).resolve().parents[2] / "prompts"


def _minimal() -> dict:
    return {
        "id": "tiny",
        "version": "0.1.0",
        "owner": "team:research",
        "description": "a tiny template",
        "risk_level": "low",
        "template": "Say {{greeting}} to {{name}}.",
        "variables": {"greeting": "a greeting", "name": {"description": "who"}},
        "model_parameters": {"model": "fake-gpt", "temperature": 0.0, "max_tokens": 32},
        "golden_set": [{"inputs": {"greeting": "hi", "name": "Ann"}, "expected": {"contains": ["Ann"]}}],
    }


def _write(directory: Path, name: str, data: dict | str) -> Path:
    path = directory / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def test_shipped_library_loads_three_templates_with_golden_sets() -> None:
    library = load_library(LIBRARY)
    assert [t.id for t in library] == ["market_narrative", "risk_summary", "signal_explanation"]
    for template in library:
        assert len(template.golden_set) >= 3
        assert placeholders(template.template) == set(template.variables)
        assert template.source is not None and template.source.endswith(f"{template.id}.yaml")
        for case in template.golden_set:  # every golden case renders
            assert "{{" not in render(template, case.inputs)


def test_render_fills_placeholders_and_names_missing_variables() -> None:
    template = parse_template(_minimal())
    assert render(template, {"greeting": "hello", "name": "Bob", "unused": 1}) == "Say hello to Bob."
    assert render_text("{{ x }}+{{x}}", {"x": 2.5}) == "2.5+2.5"
    with pytest.raises(MissingVariablesError) as err:
        render(template, {"greeting": "hello"})
    assert err.value.missing == ["name"]
    assert "tiny@0.1.0" in str(err.value) and "name" in str(err.value)
    assert isinstance(err.value, InvalidInput) and err.value.field == "variables"
    assert err.value.reasons == [str(err.value)]


def test_a_missing_variable_exits_with_the_invalid_input_code() -> None:
    """The CLI's one error handler answers MissingVariablesError by its type: exit 2, one line."""
    import typer
    from typer.testing import CliRunner

    from mlops_assets.cli_common import handles_errors

    app = typer.Typer()

    @app.command()
    @handles_errors
    def run(greeting: str) -> None:
        typer.echo(render(parse_template(_minimal()), {"greeting": greeting}))

    result = CliRunner().invoke(app, ["hello"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: variables: prompt template tiny@0.1.0 needs variables name;")


def test_content_hash_is_stable_and_changes_with_any_field() -> None:
    a = parse_template(_minimal())
    b = parse_template(_minimal())
    assert content_hash(a) == content_hash(b) and len(content_hash(a)) == 64
    changed_text = parse_template({**_minimal(), "template": "Say {{greeting}}, {{name}}."})
    hotter = {"model": "fake-gpt", "temperature": 0.7}
    changed_params = parse_template({**_minimal(), "model_parameters": hotter})
    assert len({content_hash(a), content_hash(changed_text), content_hash(changed_params)}) == 3


def test_diff_shows_text_diff_and_changed_fields() -> None:
    a = parse_template(_minimal())
    b = parse_template({**_minimal(), "version": "0.2.0", "template": "Say {{greeting}} to {{name}}, warmly.",
                        "model_parameters": {"model": "fake-gpt", "temperature": 0.3, "max_tokens": 32}})
    diff = diff_templates(a, b)
    assert "-Say {{greeting}} to {{name}}." in diff
    assert "+Say {{greeting}} to {{name}}, warmly." in diff
    assert '~ version: "0.1.0" -> "0.2.0"' in diff
    assert "~ model_parameters.temperature: 0.0 -> 0.3" in diff
    assert diff_templates(a, a) == "no changes\n"


def test_malformed_placeholders_are_found() -> None:
    assert malformed_placeholders("ok {{a}} bad {{ a-b }} and {{}}") == ["{{ a-b }}", "{{}}"]
    assert placeholders("{{a}} {{ b }} {{ a-b }}") == {"a", "b"}


@pytest.mark.parametrize(
    ("patch", "field", "needle"),
    [
        ({"version": "1.0"}, "version", "semantic version"),
        ({"risk_level": "extreme"}, "risk_level", "low"),
        ({"owner": "nobody"}, "owner", "team:"),
        ({"model_parameters": {"model": "m", "temperature": 3}}, "model_parameters.temperature", "2"),
        ({"golden_set": [{"inputs": {}, "expected": {}}]}, "golden_set.0.expected", "contains"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_invalid_fields_name_file_and_field(tmp_path: Path, patch: dict, field: str, needle: str) -> None:
    path = _write(tmp_path, "tiny.yaml", {**_minimal(), **patch})
    with pytest.raises(PromptLibraryError) as err:
        load_template(path)
    message = str(err.value)
    assert str(path) in message and f"'{field}'" in message and needle in message
    assert err.value.file == str(path)


def test_missing_field_is_named(tmp_path: Path) -> None:
    data = _minimal()
    del data["owner"]
    with pytest.raises(PromptLibraryError) as err:
        load_template(_write(tmp_path, "tiny.yaml", data))
    assert err.value.field == "owner" and "Field required" in str(err.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.yaml", "id: x\nversion: 1.0.0\ntemplate: [unclosed\n")
    with pytest.raises(PromptLibraryError, match=r"broken\.yaml: invalid YAML at line \d+"):
        load_template(path)


def test_non_mapping_and_library_level_errors(tmp_path: Path) -> None:
    with pytest.raises(PromptLibraryError, match="one YAML mapping"):
        load_template(_write(tmp_path, "list.yaml", "- a\n- b\n"))
    with pytest.raises(PromptLibraryError, match="does not exist"):
        load_library(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PromptLibraryError, match="no \\*.yaml"):
        load_library(empty)
    dup = tmp_path / "dup"
    dup.mkdir()
    _write(dup, "a.yaml", _minimal())
    _write(dup, "b.yaml", _minimal())
    with pytest.raises(PromptLibraryError) as err:
        load_library(dup)
    assert err.value.field == "id" and "b.yaml" in str(err.value) and "a.yaml" in str(err.value)

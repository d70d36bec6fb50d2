"""The prompt library: YAML files, one template per file, loaded into validated models.

A template file (``prompts/<id>.yaml``) holds the template text with ``{{variable}}`` placeholders
(the same double-brace syntax as the MLflow prompt registry), the declared variables, the model
parameters, a risk level that selects the evaluation thresholds, and a golden set of cases.

Public functions:

- :func:`load_template` / :func:`load_library` read and validate files; every error names the file
  and the field (``PromptLibraryError``).
- :func:`content_hash` fingerprints everything a reviewer approves (all fields, canonical JSON),
  so "what was approved is what runs" can be checked anywhere.
- :func:`render` / :func:`render_text` fill placeholders; missing variables are named in the error.
- :func:`diff_templates` is the text a reviewer reads: a unified diff of the template text and the
  list of other fields that changed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from mlops_assets.errors import InvalidInput, MessageInput

RiskLevel = Literal["low", "medium", "high"]

#: A placeholder: ``{{name}}`` with optional inner spaces; names are Python identifiers.
PLACEHOLDER_PATTERN = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
#: Anything that looks like a placeholder, well-formed or not (used to find malformed ones).
_ANY_BRACES = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_OWNER = re.compile(r"^(team:[a-z0-9][a-z0-9_.-]*|[^@\s]+@[^@\s]+\.[^@\s]+)$")
TEMPLATE_SUFFIXES = (".yaml", ".yml")


class PromptLibraryError(InvalidInput):
    """A template file could not be read or is invalid; names the file and, when known, the field."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None) -> None:
        where = " ".join(p for p in (file and f"{file}:", field and f"field '{field}':") if p)
        ValueError.__init__(self, f"{where} {message}".strip())
        self.file = file
        self.field = field
        self.reasons = [message]
        self.hint = ""


class MissingVariablesError(MessageInput):
    """Rendering needs variables that were not given (an ``InvalidInput``: HTTP 422, CLI exit 2);
    ``field`` is ``variables``, ``missing`` lists their names, ``str()`` is the one message."""

    def __init__(self, missing: list[str], template_name: str = "template") -> None:
        self.missing = sorted(missing)
        super().__init__(
            f"{template_name} needs variables {', '.join(self.missing)}; pass them in `variables`",
            field="variables",
        )


class VariableSpec(BaseModel):
    """A declared template variable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str = Field(min_length=1)


class ModelParameters(BaseModel):
    """How the template is sent to the model (an OpenAI-compatible chat completion)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(min_length=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, gt=0, le=32768)


class GoldenExpected(BaseModel):
    """What a golden case expects: a reference ``output``, required substrings ``contains``, or both."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    output: str | None = None
    contains: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_of(self) -> GoldenExpected:
        if not self.output and not self.contains:
            raise ValueError("give `output` (a reference answer) or `contains` (required substrings)")
        return self


class GoldenCase(BaseModel):
    """One golden case: variables to render, the expectation, and the grounding context."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = None
    inputs: dict[str, Any]
    expected: GoldenExpected
    context: str | None = None

    def grounding_context(self) -> str:
        """The text outputs must be grounded in: ``context`` or, if absent, the input values."""
        if self.context:
            return self.context
        return "\n".join(str(v) for v in self.inputs.values())


class PromptTemplate(BaseModel):
    """One version of one prompt template, as a reviewer approves it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    version: str
    owner: str
    description: str = Field(min_length=1)
    risk_level: RiskLevel
    policy_tags: list[str] = Field(default_factory=list)
    template: str = Field(min_length=1)
    variables: dict[str, VariableSpec] = Field(default_factory=dict)
    model_parameters: ModelParameters
    golden_set: list[GoldenCase] = Field(min_length=1)
    _source: str | None = PrivateAttr(default=None)

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not _SEMVER.match(value):
            raise ValueError(f"{value!r} is not a semantic version like 1.2.0")
        return value

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str) -> str:
        if not _OWNER.match(value):
            raise ValueError(f"{value!r} must be an email or 'team:<name>'")
        return value

    @field_validator("variables", mode="before")
    @classmethod
    def _variables_shorthand(cls, value: Any) -> Any:
        """Allow ``name: "description"`` as shorthand for ``name: {description: ...}``."""
        if isinstance(value, Mapping):
            return {k: ({"description": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value

    @property
    def source(self) -> str | None:
        """The file this template was loaded from, if any."""
        return self._source

    @property
    def name(self) -> str:
        """``id@version``, the name used in messages."""
        return f"{self.id}@{self.version}"


def placeholders(text: str) -> set[str]:
    """Names of the well-formed ``{{variable}}`` placeholders in ``text``."""
    return set(PLACEHOLDER_PATTERN.findall(text))


def malformed_placeholders(text: str) -> list[str]:
    """Double-brace expressions that are not a plain ``{{identifier}}`` (e.g. ``{{ a-b }}``)."""
    return [m.group(0) for m in _ANY_BRACES.finditer(text) if not PLACEHOLDER_PATTERN.fullmatch(m.group(0))]


def _format_validation_error(exc: ValidationError, file: str) -> PromptLibraryError:
    lines = []
    first_field = None
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        first_field = first_field or loc
        got = f" (got {err['input']!r})" if err["type"] != "missing" and "input" in err else ""
        if len(got) > 120:
            got = ""
        lines.append(f"field '{loc}': {err['msg']}{got}")
    message = "; ".join(lines) + ". Fix the file and load again."
    return PromptLibraryError(message, file=file, field=None if len(lines) > 1 else first_field)


def parse_template(data: Any, source: str = "<memory>") -> PromptTemplate:
    """Validate a mapping (parsed YAML) into a :class:`PromptTemplate`."""
    if not isinstance(data, Mapping):
        raise PromptLibraryError(
            f"the file must hold one YAML mapping (id, version, template, ...), got {type(data).__name__}",
            file=source,
        )
    try:
        template = PromptTemplate.model_validate(dict(data))
    except ValidationError as exc:
        raise _format_validation_error(exc, source) from None
    template._source = source
    return template


def load_template(path: str | Path) -> PromptTemplate:
    """Read and validate one template file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptLibraryError(f"cannot read the file: {exc.strerror}", file=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PromptLibraryError(f"invalid YAML{where}: {problem}", file=str(path)) from None
    return parse_template(data, source=str(path))


def template_files(directory: str | Path) -> list[Path]:
    """The template files in ``directory`` (``*.yaml`` / ``*.yml``), sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PromptLibraryError(
            "the prompt library directory does not exist; create it or point the setting to it",
            file=str(directory),
        )
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in TEMPLATE_SUFFIXES)


def load_library(directory: str | Path) -> list[PromptTemplate]:
    """Load every template in ``directory``, sorted by id; ids must be unique across files."""
    files = template_files(directory)
    if not files:
        raise PromptLibraryError("no *.yaml template files found", file=str(directory))
    templates: list[PromptTemplate] = []
    seen: dict[str, str] = {}
    for path in files:
        template = load_template(path)
        if template.id in seen:
            raise PromptLibraryError(
                f"id {template.id!r} is already used by {seen[template.id]}; one template per id",
                file=str(path),
                field="id",
            )
        seen[template.id] = str(path)
        templates.append(template)
    return sorted(templates, key=lambda t: t.id)


def canonical_json(template: PromptTemplate) -> str:
    """The canonical serialisation hashed by :func:`content_hash` (sorted keys, no whitespace)."""
    data = template.model_dump(mode="json")
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(template: PromptTemplate) -> str:
    """SHA-256 (hex) of every field of the template: any edit, even to the golden set, changes it."""
    return hashlib.sha256(canonical_json(template).encode("utf-8")).hexdigest()


def render_text(text: str, variables: Mapping[str, Any], template_name: str = "template") -> str:
    """Replace each ``{{name}}`` in ``text``; extra variables are ignored, missing ones raise."""
    missing = sorted(placeholders(text) - set(variables))
    if missing:
        raise MissingVariablesError(missing, template_name)
    return PLACEHOLDER_PATTERN.sub(lambda m: _to_text(variables[m.group(1)]), text)


def render(template: PromptTemplate, variables: Mapping[str, Any]) -> str:
    """Render a template with ``variables`` (see :func:`render_text`)."""
    return render_text(template.template, variables, template_name=f"prompt template {template.name}")


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (Mapping, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    if isinstance(value, list) and value and any(isinstance(v, (Mapping, list)) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def diff_templates(a: PromptTemplate, b: PromptTemplate) -> str:
    """Unified diff of the template text from ``a`` to ``b``, then every other field that changed."""
    text_diff = difflib.unified_diff(
        a.template.splitlines(keepends=True),
        b.template.splitlines(keepends=True),
        fromfile=f"{a.name}/template",
        tofile=f"{b.name}/template",
    )
    parts = ["".join(line if line.endswith("\n") else line + "\n" for line in text_diff)]
    before = _flatten(a.model_dump(mode="json", exclude={"template"}))
    after = _flatten(b.model_dump(mode="json", exclude={"template"}))
    changes = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, "<absent>"), after.get(key, "<absent>")
        if old != new:
            changes.append(f"~ {key}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}")
    if changes:
        parts.append("changed fields:\n" + "\n".join(changes) + "\n")
    result = "".join(parts)
    return result if result.strip() else "no changes\n"

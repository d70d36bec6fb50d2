"""Mirror the prompt library into the MLflow prompt registry, and resolve the production prompt.

Each template version becomes one MLflow prompt version (name = template id). ``register_prompt``
creates a new version on every call, so :func:`sync_prompt` first looks for a version carrying the
same content-hash tag and only registers when there is none: syncing the library repeatedly (every
sensor tick) is idempotent. Tags on the prompt version mirror the governance store (the single
source of truth): ``approval.state`` (IN_REVIEW / APPROVED / REJECTED / ARCHIVED), plus the
semantic version, risk level, owner and content hash. The template's model parameters go into the
prompt version's ``model_config``, so serving needs only the registry, not the YAML files.

The production alias moves only through :func:`set_production_alias`, which refuses a version whose
mirrored state is not APPROVED (the caller checks the governance store first; this is the second
lock). Serving resolves ``prompts:/<id>@production`` with :func:`load_production_prompt`, bypassing
MLflow's alias cache so a moved alias is seen on the next poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops_assets.errors import Conflict, InvalidInput, MessageError, NotFound
from mlops_assets.prompts.library import ModelParameters, PromptTemplate, content_hash
from mlops_assets.models.tags import ALIAS_PRODUCTION, TAG_APPROVAL_STATE

TAG_CONTENT_HASH = "prompt.content_hash"
TAG_SEMVER = "prompt.semver"
TAG_RISK_LEVEL = "prompt.risk_level"
TAG_OWNER = "prompt.owner"
TAG_POLICY_TAGS = "prompt.policy_tags"
PROMPT_STATES = ("IN_REVIEW", "APPROVED", "REJECTED", "ARCHIVED")
APPROVED = "APPROVED"
ClientLike = MlflowClient | str | None  # a client, or a tracking URI (None: MLFLOW_TRACKING_URI)


class PromptRegistryError(MessageError):
    """A prompt-registry request was refused or cannot be served: catch this for all three; each raise is
    one of the subclasses below, one vocabulary type each. ``field`` names the culprit, ``reasons`` hold
    the one message, and ``str()`` is that message."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(field, message)


class PromptStateInvalid(PromptRegistryError, InvalidInput):
    """An approval state outside ``PROMPT_STATES`` (HTTP 422, CLI exit 2)."""


class PromptNotFound(PromptRegistryError, NotFound):
    """The prompt version, or the alias to resolve, is not in the registry (HTTP 404, CLI exit 3)."""


class PromptNotApproved(PromptRegistryError, Conflict):
    """The version's mirrored ``approval.state`` is not APPROVED, so the alias may not point there
    (HTTP 409, CLI exit 4)."""


class SyncResult(NamedTuple):
    """``(name, mlflow_version, created)``; ``created`` is False when the content hash already existed."""

    name: str
    mlflow_version: int
    created: bool


@dataclass(frozen=True)
class RegisteredPrompt:
    """A prompt version as read back from the registry."""

    name: str
    mlflow_version: int
    template: str
    semver: str | None
    content_hash: str | None
    state: str | None
    risk_level: str | None
    model_parameters: ModelParameters | None
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.mlflow_version}"


def _client(client_or_uri: ClientLike) -> MlflowClient:
    if isinstance(client_or_uri, MlflowClient):
        return client_or_uri
    return MlflowClient(tracking_uri=client_or_uri)


def _state(state: Any) -> str:
    value = str(getattr(state, "value", state)).upper()
    if value not in PROMPT_STATES:
        raise PromptStateInvalid(
            f"state must be one of {', '.join(PROMPT_STATES)}, got {state!r}", field="state"
        )
    return value


def _model_parameters(raw: Any) -> ModelParameters | None:
    if not raw:
        return None
    data = raw if isinstance(raw, dict) else getattr(raw, "to_dict", dict)()
    if not data.get("model_name"):
        return None
    params = {"model": data["model_name"]}
    for key in ("temperature", "max_tokens"):
        if data.get(key) is not None:
            params[key] = data[key]
    return ModelParameters.model_validate(params)


def _registered(version: Any) -> RegisteredPrompt:
    tags = dict(version.tags or {})
    return RegisteredPrompt(
        name=version.name,
        mlflow_version=int(version.version),
        template=version.template,
        semver=tags.get(TAG_SEMVER),
        content_hash=tags.get(TAG_CONTENT_HASH),
        state=tags.get(TAG_APPROVAL_STATE),
        risk_level=tags.get(TAG_RISK_LEVEL),
        model_parameters=_model_parameters(getattr(version, "model_config", None)),
        tags=tags,
    )


def list_prompt_versions(client_or_uri: ClientLike, name: str) -> list[RegisteredPrompt]:
    """Every registered version of prompt ``name``, oldest first; empty if the prompt does not exist."""
    client = _client(client_or_uri)
    if client.get_prompt(name) is None:
        return []
    versions, token = [], None
    while True:
        page = client.search_prompt_versions(name, max_results=100, page_token=token)
        versions.extend(_registered(v) for v in page)
        token = page.token
        if not token:
            break
    return sorted(versions, key=lambda v: v.mlflow_version)


def find_prompt_version(client_or_uri: ClientLike, name: str, digest: str) -> RegisteredPrompt | None:
    """The oldest version of ``name`` tagged with content hash ``digest``, if any."""
    for version in list_prompt_versions(client_or_uri, name):
        if version.content_hash == digest:
            return version
    return None


def _tags_for(template: PromptTemplate, digest: str, state: str) -> dict[str, str]:
    return {
        TAG_CONTENT_HASH: digest,
        TAG_SEMVER: template.version,
        TAG_RISK_LEVEL: template.risk_level,
        TAG_OWNER: template.owner,
        TAG_POLICY_TAGS: ",".join(template.policy_tags),
        TAG_APPROVAL_STATE: state,
    }


def set_prompt_state(client_or_uri: ClientLike, name: str, mlflow_version: int, state: Any) -> None:
    """Mirror a governance decision onto the prompt version's ``approval.state`` tag."""
    client = _client(client_or_uri)
    client.set_prompt_version_tag(name, str(mlflow_version), TAG_APPROVAL_STATE, _state(state))


def sync_prompt(
    client_or_uri: ClientLike, template: PromptTemplate, state: Any = "IN_REVIEW"
) -> SyncResult:
    """Register ``template`` unless a version with its content hash exists; mirror ``state`` in tags."""
    client = _client(client_or_uri)
    state = _state(state)
    digest = content_hash(template)
    existing = find_prompt_version(client, template.id, digest)
    if existing is not None:
        if existing.state != state:
            set_prompt_state(client, template.id, existing.mlflow_version, state)
        return SyncResult(template.id, existing.mlflow_version, False)
    params = template.model_parameters
    created = client.register_prompt(
        name=template.id,
        template=template.template,
        commit_message=f"{template.id} {template.version} ({digest[:12]}) by {template.owner}",
        tags=_tags_for(template, digest, state),
        model_config={
            "model_name": params.model, "temperature": params.temperature, "max_tokens": params.max_tokens,
        },
    )
    # two syncs racing may both register: keep the oldest version with this hash, drop ours
    oldest = find_prompt_version(client, template.id, digest)
    if oldest is not None and oldest.mlflow_version < int(created.version):
        client.delete_prompt_version(template.id, str(created.version))
        return SyncResult(template.id, oldest.mlflow_version, False)
    return SyncResult(template.id, int(created.version), True)


def get_prompt_version(client_or_uri: ClientLike, name: str, mlflow_version: int) -> RegisteredPrompt:
    """One prompt version, with a clear error when it does not exist."""
    try:
        return _registered(_client(client_or_uri).get_prompt_version(name, str(mlflow_version)))
    except MlflowException as exc:
        raise PromptNotFound(
            f"prompt {name!r} version {mlflow_version} is not in the registry; run the prompt sync first "
            f"({exc.message})", field="mlflow_version",
        ) from None


def set_production_alias(
    client_or_uri: ClientLike,
    name: str,
    mlflow_version: int,
    *,
    alias: str = ALIAS_PRODUCTION,
    require_approved: bool = True,
) -> int | None:
    """Point ``prompts:/<name>@<alias>`` at ``mlflow_version``; returns the previous version, if any.

    Refuses (``PromptNotApproved``, a ``Conflict``) unless the version's mirrored ``approval.state`` is APPROVED.
    """
    client = _client(client_or_uri)
    target = get_prompt_version(client, name, mlflow_version)
    if require_approved and target.state != APPROVED:
        raise PromptNotApproved(
            f"prompt {name!r} version {mlflow_version} has approval.state={target.state!r}; approve it "
            f"(and sync the state) before moving alias {alias!r}", field="approval.state",
        )
    previous = current_alias_version(client, name, alias)
    client.set_prompt_alias(name, alias, int(mlflow_version))
    return previous


def current_alias_version(client_or_uri: ClientLike, name: str, alias: str = ALIAS_PRODUCTION) -> int | None:
    """The version an alias points at, or ``None`` when the alias (or the prompt) does not exist."""
    try:
        return int(_client(client_or_uri).get_prompt_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def load_production_prompt(
    client_or_uri: ClientLike,
    name: str,
    *,
    alias: str = ALIAS_PRODUCTION,
    require_approved: bool = True,
) -> RegisteredPrompt:
    """Resolve ``prompts:/<name>@<alias>`` now (no cache); refuse a version no longer APPROVED."""
    client = _client(client_or_uri)
    try:
        version = client.load_prompt(f"prompts:/{name}@{alias}", cache_ttl_seconds=0)
    except MlflowException as exc:
        raise PromptNotFound(
            f"cannot resolve prompts:/{name}@{alias}: {exc.message}. Sync the prompt and promote an "
            f"approved version to {alias!r} first", field="alias",
        ) from None
    prompt = _registered(version)
    if require_approved and prompt.state != APPROVED:
        raise PromptNotApproved(
            f"prompts:/{name}@{alias} points at version {prompt.mlflow_version} whose approval.state is "
            f"{prompt.state!r}; roll the alias back to an approved version", field="approval.state",
        )
    return prompt

"""Reading the MLflow registry: alias names and URIs, versions by alias, the version list, experiments.

Legacy stage names (``MLFLOW_MODEL_STAGE=Production``) are mapped onto aliases by
``resolve_alias``; ``ensure_experiment``/``create_experiment`` say where runs go (a SQLite store's
artifacts beside its file). Registering new versions (train-and-register, the evaluation gate's
tags, model import) is ``registration``; moving ``staging``/``production`` is ``promotion``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlops_assets.errors import Conflict, InvalidInput
from mlops_assets.models import tags as T

DEFAULT_ALIASES: dict[str, str] = {
    "challenger": T.ALIAS_CHALLENGER,
    "staging": T.ALIAS_STAGING,
    "production": T.ALIAS_PRODUCTION,
}


class RegistryError(InvalidInput):
    """A registry request cannot be served; ``field`` names the argument that was wrong (HTTP 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)


def model_uri(name: str, alias: str) -> str:
    """``models:/<name>@<alias>``."""
    if not name or not alias:
        raise RegistryError("name/alias", "both the registered model name and the alias are needed")
    return f"models:/{name}@{alias}"


def resolve_alias(stage_or_alias: str, aliases: Mapping[str, str] | None = None) -> str:
    """Map a stage (``Staging``, ``production``...) or an alias name onto the configured alias.

    ``aliases`` maps a role (``challenger``, ``staging``, ``production``) to the alias name in
    use (defaults: the same words). Matching is case-insensitive on roles and alias names; the
    legacy stages ``None`` and ``Archived`` have no alias and are refused.
    """
    table = {**DEFAULT_ALIASES, **dict(aliases or {})}
    wanted = (stage_or_alias or "").strip().lower()
    for role, alias in table.items():
        if wanted in (role.lower(), alias.lower()):
            return alias
    valid = sorted({*table, *table.values()})
    raise RegistryError(
        "MLFLOW_MODEL_STAGE", f"{stage_or_alias!r} is not a known stage or alias; use one of {valid}"
    )


def get_version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding ``alias``, or ``None`` when the alias (or the model) is not set yet."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def list_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of the registered model ``name``, oldest first, each with its aliases.

    MLflow 3's ``search_model_versions`` answers every version with ``aliases == []`` (only
    ``get_model_version`` and the registered model carry them); the registered model's alias map,
    read once, fills them in. Raises ``MlflowException`` (``RESOURCE_DOES_NOT_EXIST``) for an unknown
    model, like ``get_registered_model``.
    """
    by_version: dict[str, list[str]] = {}
    for alias, version in (client.get_registered_model(name).aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    found, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{name}'", max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            break
    for mv in found:
        mv.aliases = sorted(by_version.get(str(mv.version), []))
    return sorted(found, key=lambda mv: int(mv.version))


def default_artifact_location(tracking_uri: str, experiment_name: str) -> str | None:
    """``<dir of the SQLite file>/mlartifacts/<experiment>`` for a ``sqlite:///`` store, else None.

    Without it MLflow would put a SQLite store's artifacts in ``./mlruns`` of whatever directory
    the process happens to run in.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db_path = Path(tracking_uri[len("sqlite:///"):]).resolve()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment_name).strip("-") or "default"
    return str(db_path.parent / "mlartifacts" / slug)


def ensure_experiment(client: MlflowClient, experiment_name: str,
                      artifact_location: str | None = None) -> str:
    """Id of ``experiment_name``; created when missing, with ``artifact_location`` or, for a
    SQLite store, ``default_artifact_location``. A deleted experiment of that name is an error."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise RegistryError("experiment_name",
                                f"{experiment_name!r} is deleted; restore it or pick another name")
        return experiment.experiment_id
    location = artifact_location or default_artifact_location(client.tracking_uri, experiment_name)
    return client.create_experiment(experiment_name, artifact_location=location)


def create_experiment(client: MlflowClient, name: str, *, description: str | None = None,
                      tags: Mapping[str, str] | None = None, created_by: str | None = None,
                      artifact_location: str | None = None) -> str:
    """Create the experiment ``name`` (artifacts as in :func:`ensure_experiment`) and return its id.

    ``Conflict`` when an experiment of that name exists, active or deleted (MLflow keeps a deleted
    one's name until it is purged). ``description`` is MLflow's ``mlflow.note.content`` tag."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        deleted = existing.lifecycle_stage == "deleted"
        raise Conflict("name", f"experiment {name!r} already exists" + (" (deleted)" if deleted else ""),
                       hint="restore it in MLflow or pick another name" if deleted
                       else "use it, or pick another name")
    all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if description:
        all_tags["mlflow.note.content"] = description
    if created_by:
        all_tags["created_by"] = created_by
    location = artifact_location or default_artifact_location(client.tracking_uri, name)
    try:
        return client.create_experiment(name, artifact_location=location, tags=all_tags)
    except MlflowException as exc:  # created by someone else in between
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        raise Conflict("name", f"experiment {name!r} already exists", hint="use it, or pick another name") from None


__all__ = [
    "DEFAULT_ALIASES", "RegistryError", "create_experiment", "default_artifact_location", "ensure_experiment",
    "get_version_by_alias", "list_versions", "model_uri", "resolve_alias",
]

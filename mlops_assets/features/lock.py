"""The schema-change rule and the committed lock file of feature-view schemas.

Rule (semantic versioning of a view's output columns):

* removing or retyping a column needs a **major** bump (the view gets a new table
  ``fv_<name>_v<major>``; models trained on the old major keep reading the old table);
* adding a column needs at least a **minor** bump;
* a version must never go backwards.

``views.lock.json`` (next to this module, committed) records each view's version, table, declared
schema and hashes. ``mlops features check`` runs :func:`check_lock`: it fails on a rule violation
and on a lock that is out of date (run ``mlops features lock``, i.e. :func:`write_lock`, and commit
the file). Both work on declared dtypes only, so they take milliseconds and need no data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from mlops_assets.features.catalog import latest_versions, schema_from_catalog
from mlops_assets.features.views import KEY_SCHEMA, FeatureView, parse_version, table_name

from mlops_assets.errors import MessageInput

DEFAULT_LOCK_PATH = Path(__file__).with_name("views.lock.json")
LOCK_FORMAT = 1
REGENERATE = "regenerate it with `mlops features lock`"

ViolationKind = Literal[
    "removed", "retyped", "added", "version_decreased", "definition_changed",
    "stale_lock", "missing_lock", "view_removed",
]


@dataclass(frozen=True)
class Violation:
    """One broken rule; ``message`` says what to do. ``severity`` "error" fails the check."""

    kind: ViolationKind
    view: str
    column: str | None
    message: str
    severity: Literal["error", "warning"] = "error"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LockFileError(MessageInput):
    """The lock file exists but cannot be read; the message names the file and the problem."""
    subject = "lock_file"


def check_schema_change(
    previous: dict[str, str],
    previous_version: str,
    current: dict[str, str],
    current_version: str,
    view: str = "",
) -> list[Violation]:
    """Violations of the schema-change rule between two {column: dtype} schemas of one view."""
    before, after = parse_version(previous_version), parse_version(current_version)
    label = f"view {view!r}" if view else "view"
    change = f"{previous_version} -> {current_version}"
    violations: list[Violation] = []
    if after < before:
        violations.append(
            Violation("version_decreased", view, None, f"{label}: version went backwards ({change})")
        )
    major_bump = after[0] > before[0]
    minor_bump = after[:2] > before[:2]
    next_major = f"{before[0] + 1}.0.0"
    next_minor = f"{before[0]}.{before[1] + 1}.0"
    for column, dtype in previous.items():
        if column not in current and not major_bump:
            violations.append(Violation(
                "removed", view, column,
                f"{label}: column {column!r} removed without a major version bump ({change}); "
                f"set version to {next_major} (a new table) or keep the column",
            ))
        elif column in current and current[column] != dtype and not major_bump:
            violations.append(Violation(
                "retyped", view, column,
                f"{label}: column {column!r} changed type {dtype} -> {current[column]} without a major "
                f"version bump ({change}); set version to {next_major} or keep the type",
            ))
    for column in current:
        if column not in previous and not minor_bump:
            violations.append(Violation(
                "added", view, column,
                f"{label}: column {column!r} added without at least a minor version bump ({change}); "
                f"set version to {next_minor} or higher",
            ))
    return violations


def check_table_write(stored: dict[str, str], computed: dict[str, str], view: FeatureView) -> list[Violation]:
    """Violations of writing ``computed`` into the view's existing table (``stored`` is its schema).

    The table belongs to the view's major version, so this is :func:`check_schema_change` with the
    stored rows as the same version: a removed or retyped column always needs a major bump (a new
    table); an added column is left to the lock file's check of the declared version.
    """
    return [v for v in check_schema_change(stored, view.version, computed, view.version, view.name)
            if v.kind != "added"]


def definition_hash(view: FeatureView) -> str:
    """One hash of every feature's definition hash (expression, inputs, dtype), in order."""
    joined = "".join(f"{f.name}={f.definition_hash};" for f in view.features)
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def lock_entry(view: FeatureView) -> dict[str, Any]:
    return {
        "version": view.version,
        "table": table_name(view),
        "owner": view.owner,
        "source": view.source,
        "schema": view.schema(),
        "schema_hash": view.schema_hash(),
        "definition_hash": definition_hash(view),
    }


def lock_content(views: Sequence[FeatureView]) -> dict[str, Any]:
    ordered = sorted(views, key=lambda v: v.name)
    return {"format": LOCK_FORMAT, "views": {v.name: lock_entry(v) for v in ordered}}


def write_lock(views: Sequence[FeatureView], path: Path | str = DEFAULT_LOCK_PATH) -> dict[str, Any]:
    """Write the lock file for ``views`` (stable text: sorted views, 2-space indent) and return it."""
    content = lock_content(views)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    tmp.replace(path)
    return content


def read_lock(path: Path | str = DEFAULT_LOCK_PATH) -> dict[str, Any]:
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LockFileError(f"{path.name}: not valid JSON ({exc}); {REGENERATE}") from exc
    if not isinstance(content, dict) or content.get("format") != LOCK_FORMAT or "views" not in content:
        raise LockFileError(f"{path.name}: not a format-{LOCK_FORMAT} lock file; {REGENERATE}")
    return content


def check_lock(views: Sequence[FeatureView], path: Path | str = DEFAULT_LOCK_PATH) -> list[Violation]:
    """Compare the views in code with the committed lock file.

    Errors: a schema-rule violation against the locked schema, a view in the lock but not in code
    (``view_removed``), a missing lock and a lock out of date (``stale_lock``: the views changed
    correctly but the lock was not regenerated). Warning: the logic of a feature changed (its
    expression hash) without any version bump (``definition_changed``).
    """
    path = Path(path)
    if not path.exists():
        message = f"{path.name}: no lock file; create it with `mlops features lock`"
        return [Violation("missing_lock", "", None, message)]
    locked: dict[str, Any] = read_lock(path)["views"]
    violations: list[Violation] = []
    for view in views:
        entry = locked.get(view.name)
        if entry is None:
            violations.append(Violation(
                "stale_lock", view.name, None,
                f"view {view.name!r} is not in {path.name}; run `mlops features lock` and commit it",
            ))
            continue
        rule = check_schema_change(entry["schema"], entry["version"], view.schema(), view.version, view.name)
        violations.extend(rule)
        unchanged = entry["version"] == view.version and entry["schema"] == view.schema()
        logic_changed = unchanged and entry.get("definition_hash") != definition_hash(view)
        if logic_changed:  # a warning only: a polars upgrade can change the serialised expression
            violations.append(Violation(
                "definition_changed", view.name, None,
                f"view {view.name!r}: a feature's expression changed but the version is still "
                f"{view.version}; bump at least the patch version (or, after a polars upgrade with no "
                "logic change, run `mlops features lock`)",
                severity="warning",
            ))
        elif not rule and lock_entry(view) != entry:
            violations.append(Violation(
                "stale_lock", view.name, None,
                f"view {view.name!r} differs from {path.name} (locked {entry['version']}, now "
                f"{view.version}); run `mlops features lock` and commit it",
            ))
    names = {v.name for v in views}
    for name in sorted(set(locked) - names):
        violations.append(Violation(
            "view_removed", name, None,
            f"view {name!r} is in {path.name} but no longer declared; models trained on it lose "
            "their features. Restore it, or remove it with `mlops features lock` if nothing uses it",
        ))
    return violations


def check_catalog_against_views(catalog: pl.DataFrame, views: Sequence[FeatureView]) -> list[Violation]:
    """The schema-change rule between the newest version of each view in a stored catalog and the
    views in code (for the catalog asset check). Views new to the catalog pass."""
    if catalog.is_empty():
        return []
    latest = latest_versions(catalog)
    violations: list[Violation] = []
    for view in views:
        if view.name not in latest:
            continue
        previous_version = latest[view.name]
        previous = {**KEY_SCHEMA, **schema_from_catalog(catalog, view.name, previous_version)}
        violations.extend(
            check_schema_change(previous, previous_version, view.schema(), view.version, view.name)
        )
    return violations


def errors(violations: Sequence[Violation]) -> list[Violation]:
    return [v for v in violations if v.severity == "error"]

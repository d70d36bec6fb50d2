"""Publish a DataFrame as a versioned Parquet file plus a manifest, atomically.

Readers in other processes (the serving apps, the management API) must never see a half-written
file or a manifest that points at a missing one. So a publication:

1. writes ``<name>-<version>.parquet`` (``version`` = a hash of the Parquet bytes) to a temporary
   file, fsyncs it and ``os.replace``-s it into place;
2. writes ``<name>.manifest.json`` (version, data file, columns, row count...) the same way: the
   manifest is the single pointer readers follow, so they see either the old pair or the new pair;
3. deletes older data files of ``name`` but keeps the previous one, so a reader that read the old
   manifest just before the swap can still open its data file.

With a :class:`Retention` policy (the online snapshot passes one), step 2 is preceded by writing a
per-version manifest ``<name>-<version>.manifest.json`` (the same content, plus ``published_at``),
and step 3 keeps every version the policy retains instead of only the previous one: the newest
``versions`` versions, and every version superseded less than ``days`` days ago (the current and
the previous version are always kept, whatever the policy). :func:`read_version` opens a retained
version by its number; pruned or unknown versions raise ``NotFound``.

:func:`read_published` follows the manifest and retries when it loses the race with a writer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from mlops_assets.errors import InvalidInput, MessageInput, NotFound

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class PublicationNotFoundError(FileNotFoundError):
    """Nothing has been published under this name yet; the message says which producer to run."""


class PublicationNameError(MessageInput):
    """A publication name that is not a safe file name (letters, digits, ``_ . -``)."""
    subject = "name"


@dataclass(frozen=True)
class Published:
    name: str
    version: str
    data_path: Path
    manifest_path: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class Retention:
    """Which published versions to keep: the newest ``versions`` (at least 2: the current one and
    the previous one, which a reader may still be opening), and every version superseded (replaced
    as current by a newer publication) less than ``days`` days ago. ``label`` names where the policy
    comes from (e.g. the settings keys) in refusals."""

    versions: int = 2
    days: float = 0.0
    label: str = ""

    def __post_init__(self) -> None:
        if int(self.versions) != self.versions or self.versions < 2:
            raise InvalidInput("retention.versions", f"{self.versions!r}: keep at least 2 versions "
                               "(the current one and the previous one)")
        if not (self.days >= 0 and self.days != float("inf")):
            raise InvalidInput("retention.days", f"{self.days!r}: must be a finite number of days >= 0")

    def describe(self) -> str:
        rule = f"the newest {self.versions} versions"
        if self.days:
            rule += f" and every version superseded less than {self.days:g} days ago"
        return f"{self.label}: keeps {rule}" if self.label else f"keeps {rule}"


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name or "") or ".." in name:
        raise PublicationNameError(f"name: {name!r} must be 1-128 letters, digits, '_', '.' or '-'")
    return name


def manifest_path(out_dir: Path | str, name: str) -> Path:
    return Path(out_dir) / f"{check_name(name)}.manifest.json"


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def parquet_bytes(df: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    df.write_parquet(buffer, compression="zstd", statistics=True)
    return buffer.getvalue()


def version_manifest_path(out_dir: Path | str, name: str, version: str) -> Path:
    return Path(out_dir) / f"{check_name(name)}-{version}.manifest.json"


def _version_of(path: Path, name: str, suffix: str) -> str | None:
    """The version in ``<name>-<version><suffix>``, or None for another publication's file."""
    version = path.name[len(name) + 1 : -len(suffix)]
    return version if path.name.startswith(f"{name}-") and version.isalnum() else None


def publish_frame(
    df: pl.DataFrame, out_dir: Path | str, name: str, extra: dict[str, Any] | None = None,
    retention: Retention | None = None, now: datetime | None = None,
) -> Published:
    """Publish ``df`` under ``name`` in ``out_dir`` (see the module docstring for the protocol).

    ``retention``: keep older versions (with their own manifests) by that policy; without it only
    the previous data file is kept. ``now``: the publication time (tests pass one)."""
    out = Path(out_dir)
    check_name(name)
    data = parquet_bytes(df)
    # the version covers the data and what the manifest says about it (e.g. the feature view
    # versions of an online snapshot): republishing the same rows under new view versions is new
    digest = hashlib.sha256(data)
    digest.update(json.dumps(extra or {}, sort_keys=True, default=str).encode())
    version = digest.hexdigest()[:16]
    data_file = f"{name}-{version}.parquet"
    data_path = out / data_file
    if not data_path.exists():  # same content, same version: the published file is already there
        atomic_write_bytes(data_path, data)
    mpath = manifest_path(out, name)
    previous = _read_json(mpath)
    manifest = {
        "name": name,
        "version": version,
        "data_file": data_file,
        "rows": df.height,
        "columns": df.columns,
        "schema": {c: str(t) for c, t in df.schema.items()},
        "created_at": (now or datetime.now(UTC)).isoformat(),
        **(extra or {}),
    }
    if retention is not None:  # the version's own manifest exists before the version becomes current
        body = {**manifest, "published_at": manifest["created_at"]}
        atomic_write_bytes(version_manifest_path(out, name, version),
                           (json.dumps(body, indent=2, default=str) + "\n").encode())
    atomic_write_bytes(mpath, (json.dumps(manifest, indent=2, default=str) + "\n").encode())
    keep = {data_file, (previous or {}).get("data_file")}
    if retention is not None:
        keep |= {f"{name}-{v}.parquet" for v in retained_versions(out, name, retention, now)}
    for old in out.glob(f"{name}-*.parquet"):
        if old.name not in keep and _version_of(old, name, ".parquet"):
            version_manifest_path(out, name, old.name[len(name) + 1 : -len(".parquet")]).unlink(missing_ok=True)
            old.unlink(missing_ok=True)
    return Published(name=name, version=version, data_path=data_path, manifest_path=mpath, manifest=manifest)


def published_versions(out_dir: Path | str, name: str) -> list[dict[str, Any]]:
    """The per-version manifests of ``name`` present in ``out_dir``, newest publication first."""
    found = []
    for path in Path(out_dir).glob(f"{check_name(name)}-*.manifest.json"):
        if _version_of(path, name, ".manifest.json") is None:
            continue
        try:
            body = _read_json(path)
        except ValueError:  # half of a foreign file: not ours to read
            continue
        if body and body.get("version") and body.get("published_at"):
            found.append(body)
    return sorted(found, key=lambda m: (m["published_at"], m["version"]), reverse=True)


def retained_versions(out_dir: Path | str, name: str, retention: Retention,
                      now: datetime | None = None) -> list[str]:
    """The versions ``retention`` keeps, newest first (a version's age runs from the publication
    that superseded it; the current version is never old)."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention.days)
    keep: list[str] = []
    superseded_at: str | None = None  # the publication time of the next newer version
    for rank, body in enumerate(published_versions(out_dir, name)):
        recent = superseded_at is None or datetime.fromisoformat(superseded_at) >= cutoff
        if rank < retention.versions or (retention.days and recent):
            keep.append(body["version"])
        superseded_at = body["published_at"]
    return keep


def read_version(out_dir: Path | str, name: str, version: str,
                 retention: Retention | None = None) -> tuple[dict[str, Any], pl.DataFrame]:
    """The manifest and frame of published ``version`` of ``name``; ``NotFound`` naming the
    retention policy when it was pruned or never published here."""
    policy = f" (retention {retention.describe()})" if retention is not None else ""
    if not isinstance(version, str) or not version.isalnum() or len(version) > 64:
        raise NotFound("snapshot_version", f"{version!r} is not a published version of {name!r}{policy}")
    body = _read_json(version_manifest_path(out_dir, name, version))
    current = _read_json(manifest_path(out_dir, name))
    if body is None and current is not None and current.get("version") == version:
        body = current  # published before versions had their own manifests
    try:
        if body is None:
            raise FileNotFoundError(version)
        return body, pl.read_parquet(Path(out_dir) / body["data_file"])
    except FileNotFoundError:
        raise NotFound("snapshot_version", f"version {version} of {name!r} is not retained: it was pruned "
                       f"by the retention policy or never published here{policy}",
                       "replay only works within the retention period; widen the policy to keep more"
                       ) from None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def read_manifest(out_dir: Path | str, name: str) -> dict[str, Any]:
    mpath = manifest_path(out_dir, name)
    manifest = _read_json(mpath)
    if manifest is None:
        raise PublicationNotFoundError(f"{mpath}: nothing published as {name!r} yet; materialize its asset")
    return manifest


def read_published(out_dir: Path | str, name: str, attempts: int = 5) -> tuple[dict[str, Any], pl.DataFrame]:
    """The current manifest and its frame; retries if a writer replaced the pair meanwhile."""
    last_error: Exception | None = None
    for _ in range(attempts):
        manifest = read_manifest(out_dir, name)
        try:
            return manifest, pl.read_parquet(Path(out_dir) / manifest["data_file"])
        except FileNotFoundError as exc:  # deleted by two quick publications: follow the new manifest
            last_error = exc
    raise PublicationNotFoundError(f"{name}: data file kept disappearing ({last_error})")

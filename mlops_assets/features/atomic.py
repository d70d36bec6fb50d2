"""Publish a DataFrame as a versioned Parquet file plus a manifest, atomically.

Readers in other processes (the serving apps, the management API) must never see a half-written
file or a manifest that points at a missing one. So a publication:

1. writes ``<name>-<version>.parquet`` (``version`` = a hash of the Parquet bytes) to a temporary
   file, fsyncs it and ``os.replace``-s it into place;
2. writes ``<name>.manifest.json`` (version, data file, columns, row count...) the same way: the
   manifest is the single pointer readers follow, so they see either the old pair or the new pair;
3. deletes older data files of ``name`` but keeps the previous one, so a reader that read the old
   manifest just before the swap can still open its data file.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class PublicationNotFoundError(FileNotFoundError):
    """Nothing has been published under this name yet; the message says which producer to run."""


class PublicationNameError(ValueError):
    """A publication name that is not a safe file name (letters, digits, ``_ . -``)."""


@dataclass(frozen=True)
class Published:
    name: str
    version: str
    data_path: Path
    manifest_path: Path
    manifest: dict[str, Any]


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


def publish_frame(
    df: pl.DataFrame, out_dir: Path | str, name: str, extra: dict[str, Any] | None = None
) -> Published:
    """Publish ``df`` under ``name`` in ``out_dir`` (see the module docstring for the protocol)."""
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
        "created_at": datetime.now(UTC).isoformat(),
        **(extra or {}),
    }
    atomic_write_bytes(mpath, (json.dumps(manifest, indent=2, default=str) + "\n").encode())
    keep = {data_file, (previous or {}).get("data_file")}
    for old in out.glob(f"{name}-*.parquet"):
        if old.name not in keep and old.name[len(name) + 1 : -len(".parquet")].isalnum():
            old.unlink(missing_ok=True)
    return Published(name=name, version=version, data_path=data_path, manifest_path=mpath, manifest=manifest)


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

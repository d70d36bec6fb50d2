"""Backup and restore of ``MLOPS_HOME`` (the embedded default) as one consistent ``.tar.gz`` archive.

Each kind of file is copied the way that gives a consistent copy while other processes may run:

- DuckDB files (the warehouse): ``EXPORT DATABASE`` (Parquet per table) from a read-only
  connection, which waits while a writer holds the file, so a half-written table is never copied;
  restore runs ``IMPORT DATABASE`` into a fresh file;
- SQLite databases (MLflow, the governance store, Dagster's history): the ``sqlite3`` backup API,
  a transactionally consistent snapshot of each database, WAL included;
- everything else (artifacts, the online snapshot, read-models, reports, prediction logs, the audit
  key and head anchor under ``secrets/``): plain file copies, with sidecar, lock and temporary
  files left out.

Order matters for consistency between stores: the audit anchor is copied *before* the governance
database (so the copied log is at or ahead of its anchor), the databases before the artifact and
snapshot files they point at, and each publication manifest before its data files (a publication
keeps the previous data file, so a manifest copied earlier still finds its file).

Stores that live on servers (Postgres, an MLflow tracking server) are not in the archive: back them
up with ``pg_dump`` (``docs/backup.md``). ``MANIFEST.json`` in the archive lists every entry with
its sha256; restore checks them, refuses a non-empty target (or moves it aside with ``force``), and
rewrites absolute paths of the old home stored in SQLite databases (MLflow artifact locations) to
the new home.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb

from mlops_assets.errors import Conflict, InvalidInput, NotFound, PlatformError

FORMAT = "mlops-home-backup/1"
MANIFEST = "MANIFEST.json"
SECRET_KEY_FILE = "secrets/audit.key"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".wal", ".lock", ".tmp")
_SKIP_PREFIXES = (".audit-key-", ".anchor-")
EntryKind = Literal["file", "sqlite", "duckdb"]


class BackupError(PlatformError):
    """A backup or restore cannot proceed (catch this for all three subclasses, one vocabulary type each);
    ``field``: ``home``, ``out`` or ``archive``; ``str()`` is ``"<field>: <reason>"``."""


class BackupInvalid(BackupError, InvalidInput):
    """The archive is not a sound mlops backup, or an argument is unusable (HTTP 422, CLI exit 2)."""


class BackupNotFound(BackupError, NotFound):
    """The archive, or the home to back up, does not exist (HTTP 404, CLI exit 3)."""


class BackupRefused(BackupError, Conflict):
    """Valid, but the home's state refuses it: not empty, or its warehouse held by a writer (409, exit 4)."""


@dataclass(frozen=True)
class BackupEntry:
    path: str  # relative to the home (for duckdb: the database file it was exported from)
    kind: EntryKind
    size: int
    sha256: str  # of the copied file; for duckdb, of the export's schema.sql + sorted table files
    tables: dict[str, int] = field(default_factory=dict)  # duckdb: table -> rows


@dataclass(frozen=True)
class BackupManifest:
    format: str
    created_at: str
    source_home: str
    entries: list[BackupEntry]
    secrets_included: bool
    not_included: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackupManifest:
        if data.get("format") != FORMAT:
            raise BackupInvalid("archive", f"format {data.get('format')!r} is not {FORMAT!r}")
        entries = [BackupEntry(**e) for e in data["entries"]]
        return cls(data["format"], data["created_at"], data["source_home"], entries,
                   data["secrets_included"], list(data.get("not_included") or []))

    def count(self, kind: EntryKind) -> int:
        return sum(1 for e in self.entries if e.kind == kind)


@dataclass(frozen=True)
class BackupResult:
    archive: Path
    manifest: BackupManifest
    bytes: int
    seconds: float


@dataclass(frozen=True)
class RestoreResult:
    home: Path
    manifest: BackupManifest
    relocated_values: dict[str, int]  # sqlite file -> values whose old-home path was rewritten
    moved_aside: Path | None
    seconds: float


# --- detection and copies ------------------------------------------------------------------------


def _header(path: Path, n: int = 16) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(n)
    except OSError:
        return b""


def is_sqlite(path: Path) -> bool:
    return _header(path) == _SQLITE_MAGIC


def is_duckdb(path: Path) -> bool:
    return _header(path, 12)[8:12] == b"DUCK"


def _skipped(rel: Path) -> bool:
    name = rel.name
    return name.endswith(_SKIP_SUFFIXES) or name.startswith(_SKIP_PREFIXES) or name.startswith(f".{MANIFEST}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (WAL content included) via the backup API."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")  # a self-contained file, no -wal sidecar
    finally:
        dst.close()
        src.close()


def export_duckdb(source: Path, target_dir: Path, lock_timeout_s: float = 120.0) -> dict[str, int]:
    """``EXPORT DATABASE`` (Parquet) of ``source``; waits while another process holds the file."""
    deadline, delay = time.monotonic() + lock_timeout_s, 0.05
    while True:
        try:
            con = duckdb.connect(str(source), read_only=True)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise BackupInvalid("home", f"cannot open the DuckDB file {source} to export it ({exc})") from exc
            if time.monotonic() > deadline:
                raise BackupRefused("home", f"cannot open the DuckDB file {source} to export it ({exc}); stop "
                                    "the writer (pause the Dagster daemon) and retry") from exc
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'main' ORDER BY 1").fetchall()]
        rows = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        con.execute(f"EXPORT DATABASE '{target_dir}' (FORMAT parquet)")
    finally:
        con.close()
    return rows


def _dir_digest(directory: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != "load.sql"):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + sha256_file(path).encode())
        size += path.stat().st_size
    return size, digest.hexdigest()


# --- backup --------------------------------------------------------------------------------------


def _files_in_order(home: Path, exclude: set[str]) -> list[Path]:
    """Relative paths in the copy order described in the module docstring."""
    found = []
    for root, dirs, files in os.walk(home):
        dirs[:] = sorted(d for d in dirs if str((Path(root) / d).relative_to(home)) not in exclude)
        for name in sorted(files):
            rel = (Path(root) / name).relative_to(home)
            if str(rel) not in exclude and not _skipped(rel) and (home / rel).is_file():
                found.append(rel)

    def rank(rel: Path) -> tuple[int, str]:
        path = home / rel
        if rel.parts[0] == "secrets":
            return 0, str(rel)
        if is_sqlite(path):
            return 1, str(rel)
        if is_duckdb(path):
            return 2, str(rel)
        return (3 if rel.name.endswith(".manifest.json") else 4), str(rel)

    return sorted(found, key=rank)


def backup_home(home: Path | str, out: Path | str, *, include_secrets: bool = True,
                exclude: tuple[str, ...] = (), not_included: tuple[str, ...] = (),
                lock_timeout_s: float = 120.0) -> BackupResult:
    """Write a consistent archive of ``home`` to ``out`` (``.tar.gz``, mode 0600, written atomically).

    ``include_secrets=False`` leaves the audit key out (keep it apart, e.g. in a secret manager);
    ``exclude`` takes relative paths to leave out; ``not_included`` notes stores on servers that
    need their own backup (recorded in the manifest).
    """
    started = time.monotonic()
    home, out = Path(home).resolve(), Path(out).resolve()
    if not home.is_dir():
        raise BackupNotFound("home", f"{home} is not a directory; set MLOPS_HOME to the home to back up")
    if out.is_relative_to(home):
        raise BackupInvalid("out", f"{out} is inside the home being backed up; write it elsewhere")
    skip = set(exclude) | (set() if include_secrets else {SECRET_KEY_FILE})
    out.parent.mkdir(parents=True, exist_ok=True)
    entries: list[BackupEntry] = []
    with tempfile.TemporaryDirectory(prefix=".mlops-backup-", dir=out.parent) as tmp:
        stage = Path(tmp)
        for rel in _files_in_order(home, skip):
            source = home / rel
            if is_duckdb(source):
                target = stage / "duckdb" / rel
                target.mkdir(parents=True)
                tables = export_duckdb(source, target, lock_timeout_s)
                size, digest = _dir_digest(target)
                entries.append(BackupEntry(str(rel), "duckdb", size, digest, tables))
                continue
            target = stage / "home" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            kind: EntryKind = "sqlite" if is_sqlite(source) else "file"
            try:
                if kind == "sqlite":
                    snapshot_sqlite(source, target)
                else:
                    shutil.copy2(source, target)
            except FileNotFoundError:  # removed while we walked (e.g. a superseded snapshot file)
                continue
            entries.append(BackupEntry(str(rel), kind, target.stat().st_size, sha256_file(target)))
        manifest = BackupManifest(FORMAT, datetime.now(UTC).isoformat(), str(home), entries, include_secrets,
                                  list(not_included))
        (stage / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2))
        partial = stage / ".archive.tar.gz"
        with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
            tar.add(stage / MANIFEST, arcname=MANIFEST)
            for sub in ("home", "duckdb"):
                if (stage / sub).exists():
                    tar.add(stage / sub, arcname=sub)
        os.chmod(partial, 0o600)  # it may hold the audit key
        os.replace(partial, out)
    return BackupResult(out, manifest, out.stat().st_size, time.monotonic() - started)


# --- restore -------------------------------------------------------------------------------------


def read_backup_manifest(archive: Path | str) -> BackupManifest:
    with tarfile.open(archive, "r:gz") as tar:
        try:
            member = tar.extractfile(MANIFEST)
        except KeyError:
            raise BackupInvalid("archive", f"{archive} has no {MANIFEST}; it is not an mlops backup") from None
        return BackupManifest.from_dict(json.loads(member.read()))


def _check_members(tar: tarfile.TarFile) -> None:
    for member in tar.getmembers():
        name = Path(member.name)
        if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
            raise BackupInvalid("archive", f"member {member.name!r} is not a plain relative file; refusing to "
                                "extract it")


def _verify_stage(stage: Path, manifest: BackupManifest) -> None:
    for entry in manifest.entries:
        if entry.kind == "duckdb":
            _, digest = _dir_digest(stage / "duckdb" / entry.path)
        else:
            digest = sha256_file(stage / "home" / entry.path)
        if digest != entry.sha256:
            raise BackupInvalid("archive", f"entry {entry.path} does not match its checksum (corrupted copy)")


def _text_columns(con: sqlite3.Connection, table: str) -> list[str]:
    columns = con.execute(f'PRAGMA table_info("{table}")').fetchall()
    return [c[1] for c in columns if any(t in (c[2] or "TEXT").upper() for t in ("CHAR", "TEXT", "CLOB"))
            or not c[2]]


def relocate_sqlite_paths(db: Path, old_home: str, new_home: str) -> int:
    """Rewrite values that start with ``old_home/`` (or ``file://old_home/``) to ``new_home``; returns the
    number of values changed (MLflow stores artifact locations as absolute paths)."""
    if old_home == new_home:
        return 0
    con = sqlite3.connect(db)
    changed = 0
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                            "AND name NOT LIKE 'sqlite_%'")]
        with con:
            for table in tables:
                for column in _text_columns(con, table):
                    for prefix in ("", "file://"):
                        old, new = f"{prefix}{old_home}/", f"{prefix}{new_home}/"
                        cur = con.execute(
                            f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) '
                            f'WHERE typeof("{column}") = \'text\' AND substr("{column}", 1, ?) = ?',
                            (new, len(old) + 1, len(old), old))
                        changed += cur.rowcount
    finally:
        con.close()
    return changed


def _make_room(home: Path, force: bool) -> Path | None:
    if not home.exists() or not any(home.iterdir()):
        return None
    if not force:
        raise BackupRefused("home", f"{home} is not empty; restore into a fresh MLOPS_HOME, or pass force to "
                            "move the current one aside")
    aside = home.with_name(f"{home.name}.before-restore-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    home.rename(aside)
    return aside


def import_duckdb(export_dir: Path, target: Path) -> dict[str, int]:
    target.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(target))
    try:
        con.execute(f"IMPORT DATABASE '{export_dir}'")
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'main' ORDER BY 1").fetchall()]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


def restore_home(archive: Path | str, home: Path | str, *, force: bool = False) -> RestoreResult:
    """Restore ``archive`` into ``home`` (absent or empty; with ``force`` an existing home is moved aside
    to ``<home>.before-restore-<time>``). Checksums are verified before anything is moved into place."""
    started = time.monotonic()
    archive, home = Path(archive).resolve(), Path(home).resolve()
    if not archive.is_file():
        raise BackupNotFound("archive", f"{archive} does not exist")
    manifest = read_backup_manifest(archive)
    home.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mlops-restore-", dir=home.parent) as tmp:
        stage = Path(tmp)
        with tarfile.open(archive, "r:gz") as tar:
            _check_members(tar)
            # the "data" filter exists from Python 3.11.4; _check_members already refused unsafe members
            tar.extractall(stage, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        _verify_stage(stage, manifest)
        built = stage / "built"
        if (stage / "home").exists():
            (stage / "home").rename(built)
        built.mkdir(exist_ok=True)
        for entry in manifest.entries:
            if entry.kind == "duckdb":
                tables = import_duckdb(stage / "duckdb" / entry.path, built / entry.path)
                if tables != entry.tables:
                    raise BackupInvalid("archive", f"{entry.path}: imported tables {tables} differ from the "
                                        f"backup's {entry.tables}")
        relocated = {e.path: relocate_sqlite_paths(built / e.path, manifest.source_home, str(home))
                     for e in manifest.entries if e.kind == "sqlite"}
        secrets = built / "secrets"
        if secrets.exists():
            os.chmod(secrets, 0o700)
            for path in secrets.iterdir():
                os.chmod(path, 0o600)
        moved_aside = _make_room(home, force)
        if home.exists():
            home.rmdir()
        built.rename(home)
    return RestoreResult(home, manifest, relocated, moved_aside, time.monotonic() - started)

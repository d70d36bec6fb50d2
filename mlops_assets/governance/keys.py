"""The HMAC key that signs the audit log, kept outside the governance database.

The hash chain in :mod:`mlops_assets.governance.audit` makes edits visible, but anyone who can
write the database could recompute every hash. The HMAC over each hash needs a secret the database
does not hold, so rewriting history also needs this key.

Where the key comes from, first match wins:

1. the environment variable ``MLOPS_AUDIT_KEY`` (hex, at least 16 bytes), for containers and CI
   where the secret is injected;
2. a key file (raw bytes, mode 0600), created with 32 random bytes on first use.

Every process that writes or verifies the log must see the same key. Losing the key does not lose
the log, but entries can then no longer be verified: back the key file up separately from the
database (the point is that the two are stored apart).
"""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from mlops_assets.errors import MessageInput

ENV_AUDIT_KEY = "MLOPS_AUDIT_KEY"
KEY_BYTES = 32
MIN_KEY_BYTES = 16


class AuditKeyError(MessageInput):
    """The audit key is missing, too short, malformed or readable by others."""
    subject = "audit_key"


def key_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """Return the key from ``MLOPS_AUDIT_KEY`` (hex) or ``None`` when the variable is unset/empty."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_AUDIT_KEY, "").strip()
    if not raw:
        return None
    try:
        key = bytes.fromhex(raw)
    except ValueError as exc:
        raise AuditKeyError(
            f"{ENV_AUDIT_KEY} must be hex (e.g. the output of `python -c \"import secrets; "
            f"print(secrets.token_hex(32))\"`): {exc}"
        ) from exc
    _check_length(key, ENV_AUDIT_KEY)
    return key


def load_or_create_key(path: Path) -> bytes:
    """Read the key file at ``path``; create it (32 random bytes, mode 0600) if it does not exist.

    Creation is atomic (written to a temporary file, then hard-linked into place), so several
    processes starting at once all end up with the same key.
    """
    path = Path(path)
    if path.exists():
        return _read_key_file(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp_name = tempfile.mkstemp(prefix=".audit-key-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            pass  # another process won the race; use its key
    finally:
        os.unlink(tmp_name)
    return _read_key_file(path)


def resolve_audit_key(path: Path | None, environ: Mapping[str, str] | None = None) -> bytes:
    """The key from ``MLOPS_AUDIT_KEY`` if set, else from (or created at) the key file ``path``."""
    key = key_from_env(environ)
    if key is not None:
        return key
    if path is None:
        raise AuditKeyError(
            f"no audit key: set {ENV_AUDIT_KEY} (hex) or configure a key file path outside the database"
        )
    return load_or_create_key(path)


def _read_key_file(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if os.name == "posix" and mode & 0o077:
        raise AuditKeyError(
            f"audit key file {path} has mode {mode:o}, readable by group/others; run `chmod 600 {path}`"
        )
    key = path.read_bytes()
    _check_length(key, str(path))
    return key


def _check_length(key: bytes, where: str) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise AuditKeyError(
            f"audit key from {where} has {len(key)} bytes; it needs at least {MIN_KEY_BYTES} "
            f"({KEY_BYTES} recommended)"
        )

"""The audit key: created once (0600, 32 bytes), shared by concurrent starters, env var wins."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlops_assets.governance.keys import (ENV_AUDIT_KEY, AuditKeyError, key_from_env, load_or_create_key,
                                          resolve_audit_key)


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "audit.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["audit.key"]  # no temp files left


def test_concurrent_creation_yields_one_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: load_or_create_key(path), range(16)))
    assert keys == {path.read_bytes()}


def test_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    load_or_create_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(AuditKeyError, match="chmod 600"):
        load_or_create_key(path)


def test_env_var_wins_and_is_validated(tmp_path: Path) -> None:
    key = bytes(range(32))
    assert resolve_audit_key(tmp_path / "unused.key", {ENV_AUDIT_KEY: key.hex()}) == key
    assert not (tmp_path / "unused.key").exists()
    assert key_from_env({}) is None
    with pytest.raises(AuditKeyError, match="must be hex"):
        key_from_env({ENV_AUDIT_KEY: "not-hex"})
    with pytest.raises(AuditKeyError, match="at least 16"):
        key_from_env({ENV_AUDIT_KEY: "abcd"})
    with pytest.raises(AuditKeyError, match="no audit key"):
        resolve_audit_key(None, {})

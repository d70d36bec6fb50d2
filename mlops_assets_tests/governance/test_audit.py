"""The audit chain on a real SQLite file: verify catches edited, deleted, inserted, truncated entries.

Tampering goes through the plain ``sqlite3`` module, as an attacker with file access would.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import event

from mlops_assets.governance.audit import read_anchor, seal_entry, verify_entries, write_anchor
from mlops_assets.governance.records import GovernanceError
from mlops_assets.governance.store import GovernanceStore

KEY = b"k" * 32


@pytest.fixture()
def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "governance.db", tmp_path / "secrets" / "audit.head"


def _store(paths: tuple[Path, Path], key: bytes = KEY) -> GovernanceStore:
    db, anchor = paths
    return GovernanceStore(f"sqlite:///{db}", key, anchor)


def _filled(paths: tuple[Path, Path], n: int = 6) -> GovernanceStore:
    store = _store(paths)
    for i in range(1, n + 1):
        store.append_audit(f"user{i % 2}", "test.event", "model", f"m/{i}", {"i": i, "tags": ("a", "b")})
    return store


def _sql(paths: tuple[Path, Path], statement: str, params: tuple = ()) -> None:
    with sqlite3.connect(paths[0]) as conn:
        conn.execute(statement, params)


def test_intact_chain_verifies_and_links(paths: tuple[Path, Path]) -> None:
    store = _filled(paths)
    result = store.verify_audit()
    assert (result.ok, result.entries, result.head_seq, result.anchor_seq) == (True, 6, 6, 6)
    entries = store.list_audit(newest_first=False)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert all(b.prev_hash == a.hash for a, b in zip(entries, entries[1:]))
    assert entries[0].details == {"i": 1, "tags": ["a", "b"]}  # stored exactly as hashed
    anchor = read_anchor(paths[1])
    assert anchor is not None and (anchor.seq, anchor.hash) == (6, entries[-1].hash)
    assert [e.seq for e in store.list_audit(subject_kind="model", subject_id="m/3")] == [3]
    assert [e.seq for e in store.list_audit(limit=2, offset=1)] == [5, 4]


def test_edited_entry_is_caught(paths: tuple[Path, Path]) -> None:
    store = _filled(paths)
    edited = json.dumps({"i": 999, "tags": ["a", "b"]})
    _sql(paths, "UPDATE audit_log SET details = ? WHERE seq = 3", (edited,))
    result = store.verify_audit()
    assert not result.ok and result.first_bad_seq == 3 and "edited" in result.reason


def test_edit_with_recomputed_hash_but_no_key_is_caught(paths: tuple[Path, Path]) -> None:
    store = _filled(paths)
    original = store.list_audit(newest_first=False)[3]
    forged = seal_entry(b"attacker-guess-0000", seq=4, ts=original.ts, actor="mallory",
                        action=original.action, subject_kind=original.subject_kind,
                        subject_id=original.subject_id, details=original.details, prev_hash=original.prev_hash)
    _sql(paths, "UPDATE audit_log SET actor = ?, hash = ?, hmac = ? WHERE seq = 4",
         (forged.actor, forged.hash, forged.hmac))
    result = store.verify_audit()
    assert not result.ok and result.first_bad_seq == 4 and "invalid HMAC" in result.reason


def test_deleted_entry_is_caught(paths: tuple[Path, Path]) -> None:
    store = _filled(paths)
    _sql(paths, "DELETE FROM audit_log WHERE seq = 2")
    result = store.verify_audit()
    assert not result.ok and result.first_bad_seq == 2 and "deleted" in result.reason
    assert result.entries == 1


def test_inserted_entry_is_caught(paths: tuple[Path, Path]) -> None:
    store = _filled(paths)
    head = store.audit_head()
    assert head is not None
    fake = seal_entry(b"not-the-real-key-123", seq=7, ts=head.ts, actor="mallory", action="decision.approved",
                      subject_kind="model", subject_id="m/9", details={}, prev_hash=head.hash)
    _sql(paths, "INSERT INTO audit_log (seq, ts, actor, action, subject_kind, subject_id, details, "
         "prev_hash, hash, hmac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
         (7, "2030-01-01 00:00:00.000000", fake.actor, fake.action, fake.subject_kind, fake.subject_id, "{}",
          fake.prev_hash, fake.hash, fake.hmac))
    result = store.verify_audit()
    assert not result.ok and result.first_bad_seq == 7


def test_truncated_tail_is_caught_by_the_anchor(paths: tuple[Path, Path]) -> None:
    store = _filled(paths)
    _sql(paths, "DELETE FROM audit_log WHERE seq >= 5")
    result = store.verify_audit()
    assert not result.ok and result.first_bad_seq == 5 and "truncated" in result.reason
    # a later append does not hide it: the anchored seq now holds a different entry
    store.append_audit("alice", "test.event", "model", "m/x", {})
    store.append_audit("alice", "test.event", "model", "m/y", {})
    result = store.verify_audit()
    assert not result.ok and result.first_bad_seq == 6 and "rewritten" in result.reason
    # after an audited re-anchor (e.g. the database was restored from backup) it verifies again
    store.reset_anchor("ops", "restored governance.db from the nightly backup")
    assert store.verify_audit().ok


def test_missing_or_forged_anchor_and_wrong_key_fail(paths: tuple[Path, Path]) -> None:
    store = _filled(paths, 3)
    paths[1].unlink()
    assert "missing" in store.verify_audit().reason
    write_anchor(paths[1], b"x" * 32, 3, store.audit_head().hash)
    assert "anchor file has an invalid HMAC" in store.verify_audit().reason
    paths[1].write_text("{not json")
    assert not store.verify_audit().ok
    assert write_anchor(paths[1], KEY, 4, "f" * 64) is False  # a broken anchor is evidence: kept
    wrong = verify_entries(store.list_audit(newest_first=False), b"w" * 32)
    assert not wrong.ok and wrong.first_bad_seq == 1


def test_write_transactions_begin_immediate(paths: tuple[Path, Path]) -> None:
    store = _store(paths)
    seen: list[str] = []
    event.listen(store._engine, "before_cursor_execute", lambda c, cur, stmt, *a: seen.append(stmt))
    store.append_audit("alice", "test.event", "model", "m/1", {})
    store.list_audit()
    begins = [s for s in seen if s.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN"]
    with sqlite3.connect(paths[0]) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_details_are_refused_and_nothing_is_written(paths: tuple[Path, Path]) -> None:
    store = _store(paths)
    with pytest.raises(GovernanceError, match="JSON") as info:
        store.append_audit("alice", "test.event", "model", "m/1", {"x": float("nan")})
    assert info.value.field == "details"
    with pytest.raises(GovernanceError, match="actor"):
        store.append_audit(" ", "test.event", "model", "m/1", {})
    assert store.list_audit() == [] and store.verify_audit().ok

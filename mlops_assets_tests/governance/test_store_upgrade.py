"""A governance store written by an older version (no row bindings) opens, says what to do, and is
sealed once by an audited command; a real SQLite file built with the old schema through ``sqlite3``."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, UTC
from pathlib import Path

import pytest

from mlops_assets.governance.audit import GENESIS_HASH, seal_entry
from mlops_assets.governance.records import GovernanceError
from mlops_assets.governance.store import GovernanceStore

KEY = b"u" * 32
OLD_SCHEMA = """
CREATE TABLE audit_log (seq INTEGER PRIMARY KEY, ts DATETIME, actor VARCHAR(200), action VARCHAR(100),
    subject_kind VARCHAR(50), subject_id VARCHAR(500), details JSON, prev_hash VARCHAR(64) UNIQUE,
    hash VARCHAR(64), hmac VARCHAR(64));
CREATE TABLE decisions (id INTEGER PRIMARY KEY, kind VARCHAR(20), name VARCHAR(300), version VARCHAR(100),
    state VARCHAR(20), actor VARCHAR(200), comment TEXT, checklist JSON, ts DATETIME, consumed BOOLEAN,
    promoted_at DATETIME);
CREATE TABLE deployments (id INTEGER PRIMARY KEY, name VARCHAR(300), alias VARCHAR(100), version VARCHAR(100),
    previous_version VARCHAR(100), actor VARCHAR(200), reason TEXT, checklist JSON, ts DATETIME, kind VARCHAR(20));
"""


def _old_store(db: Path) -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    entry = seal_entry(KEY, seq=1, ts=ts, actor="bob", action="decision.approved", subject_kind="model",
                       subject_id="m/1", details={"decision_id": 1}, prev_hash=GENESIS_HASH)
    with sqlite3.connect(db) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (1, "2026-01-01 00:00:00.000000", entry.actor, entry.action, entry.subject_kind,
                      entry.subject_id, json.dumps(entry.details), entry.prev_hash, entry.hash, entry.hmac))
        conn.execute("INSERT INTO decisions VALUES (1, 'model', 'm', '1', 'APPROVED', 'bob', NULL, NULL, "
                     "'2026-01-01 00:00:00.000000', 0, NULL)")


def test_older_store_upgrades_names_legacy_rows_and_seals_them_once(tmp_path: Path) -> None:
    db = tmp_path / "governance.db"
    _old_store(db)
    store = GovernanceStore(f"sqlite:///{db}", KEY)
    assert sorted(store.upgraded) == ["decisions.audit_seq", "decisions.waivers", "deployments.audit_seq"]
    result = store.verify_audit()
    assert not result.ok and result.first_bad_seq is None
    assert "decisions row 1 has no audit entry" in result.reason and "mlops audit seal-legacy" in result.reason
    assert store.subject_problems("model", "m", 1)  # the alias mover refuses it until sealed
    assert store.seal_legacy_rows("ops", "upgraded the governance store") == 1
    assert store.verify_audit().ok and store.subject_problems("model", "m", 1) == []
    sealed = store.list_audit(limit=1)[0]
    assert (sealed.action, sealed.actor, sealed.details["row"]["table"]) == ("audit.legacy_row_sealed", "ops",
                                                                              "decisions")
    assert store.seal_legacy_rows("ops", "again") == 0  # once
    assert GovernanceStore(f"sqlite:///{db}", KEY).upgraded == []  # reopening changes nothing


def test_sealing_refuses_a_broken_chain(tmp_path: Path) -> None:
    db = tmp_path / "governance.db"
    _old_store(db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit_log SET actor = 'mallory'")
    store = GovernanceStore(f"sqlite:///{db}", KEY)
    with pytest.raises(GovernanceError, match="does not verify"):
        store.seal_legacy_rows("ops", "upgraded")
    assert store.list_audit()[0].actor == "mallory"  # nothing appended

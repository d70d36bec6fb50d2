"""The governance store: decisions, deployments, gate results, registrations and drift events, with a
hash-chained audit log.

The single source of truth for what people (and sensors) decided. SQLite in WAL mode by default
(``sqlite:////abs/path/governance.db``), Postgres by URL (``postgresql+psycopg2://...``); never
DuckDB, because several processes write it (CLI, management API, Dagster runs).

Every state change appends an audit entry in the *same* transaction. Write transactions
serialise: SQLite ones start with ``BEGIN IMMEDIATE`` (taking the write lock before reading the
chain head), Postgres ones take ``pg_advisory_xact_lock``; ``audit_log.prev_hash`` is UNIQUE as
a backstop, so concurrent writers can never fork the chain (a conflict is retried). After commit
the head is written to the anchor file (see ``audit.py``).

Rows that can move an alias (decisions, deployments, gate results, registrations) are *bound* to the
chain: the audit entry that writes a row holds its digest, and the row holds that entry's ``seq``.
``verify_audit`` recomputes both ways, so a row inserted, edited or deleted with a plain SQL client
fails verification, and ``subject_problems`` checks one version's rows before an alias moves.
The repositories live beside this module: ``decisions.py`` (decision rules, deployments) and
``gate_records.py`` (gate results, registrations).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import datetime, UTC
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from mlops_assets.governance.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditFormatError,
    AuditVerification,
    RowRef,
    entry_seal_problem,
    read_anchor,
    row_binding_problems,
    row_digest,
    seal_entry,
    verify_entries,
    write_anchor,
)
from mlops_assets.governance.decisions import DecisionRepository, text_arg
from mlops_assets.governance.drift_events import DriftEventRepository
from mlops_assets.governance.gate_records import GateRepository
from mlops_assets.governance.records import SUBJECT_KINDS, GovernanceError
from mlops_assets.governance.tables import (
    GOVERNED_TABLES,
    AuditRow,
    Base,
    row_values,
    upgrade_schema,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
_PG_LOCK_ID = 0x6D6C6F7073  # "mlops": one advisory lock for every governance write
_WRITE_OPTION = "mlops_governance_write"



def _kind(kind: str) -> str:
    if kind not in SUBJECT_KINDS:
        raise GovernanceError(f"kind must be one of {SUBJECT_KINDS}, got {kind!r}", field="kind")
    return kind


def _is_chain_conflict(exc: IntegrityError) -> bool:
    message = str(exc.orig).lower()
    return "audit_log" in message and ("prev_hash" in message or "pkey" in message or ".seq" in message)


class GovernanceStore(DecisionRepository, GateRepository, DriftEventRepository):
    """Decisions, deployments, gate results, drift events and their audit log in one SQL database."""

    def __init__(self, url: str, hmac_key: bytes, anchor_path: Path | None = None, *,
                 busy_timeout_s: float = 30.0, max_attempts: int = 20) -> None:
        if not hmac_key or len(hmac_key) < 16:
            raise GovernanceError("hmac_key must hold at least 16 bytes (see governance.keys)",
                                  field="hmac_key")
        if url.startswith("duckdb"):
            raise GovernanceError("the governance store needs SQLite or Postgres, not DuckDB "
                                  "(several processes write it)", field="url")
        self.url = url
        self.anchor_path = Path(anchor_path) if anchor_path is not None else None
        self._key = hmac_key
        self._max_attempts = max_attempts
        memory = url.rstrip("/") in ("sqlite:", "sqlite://", "sqlite:///:memory:")
        kwargs: dict[str, Any] = {"poolclass": StaticPool} if memory else {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": busy_timeout_s, "check_same_thread": False}
        self._engine = create_engine(url, **kwargs)
        self._sqlite = self._engine.dialect.name == "sqlite"
        if self._sqlite:
            self._install_sqlite_hooks(busy_timeout_s, wal=not memory)
        self._write_engine = self._engine.execution_options(**{_WRITE_OPTION: True})
        self.upgraded = self._transaction(lambda s: upgrade_schema(s.connection()))

    def _install_sqlite_hooks(self, busy_timeout_s: float, wal: bool) -> None:
        @event.listens_for(self._engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
            cursor = dbapi_conn.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.close()

        @event.listens_for(self._engine, "begin")
        def _begin(conn: Any) -> None:
            write = conn.get_execution_options().get(_WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def close(self) -> None:
        self._engine.dispose()

    # --- transactions --------------------------------------------------------------------

    def _transaction(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one serialised write transaction; retry on lock/chain conflicts."""
        conflicts = locked = 0
        while True:
            try:
                with Session(self._write_engine, expire_on_commit=False) as session:
                    with session.begin():
                        if not self._sqlite:
                            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_ID})
                        result = work(session)
                        head = session.info.get("audit_head")
                if head is not None:
                    self._write_anchor(*head)
                return result
            except IntegrityError as exc:  # another writer extended the chain first
                conflicts += 1
                if not _is_chain_conflict(exc) or conflicts >= self._max_attempts:
                    raise
            except OperationalError as exc:  # busy_timeout already waited; retry only a few times
                locked += 1
                if "locked" not in str(exc.orig).lower() or locked >= 3:
                    raise
            time.sleep(min(0.5, 0.01 * 2 ** (conflicts + locked)) * random.random())

    def _read(self, work: Callable[[Session], T]) -> T:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            return work(session)

    def _write_anchor(self, seq: int, digest: str, force: bool = False) -> None:
        if self.anchor_path is None:
            return
        try:
            write_anchor(self.anchor_path, self._key, seq, digest, force=force)
        except OSError:  # the change is committed; raising would invite a duplicate retry
            log.exception("could not write the audit anchor %s (seq %s)", self.anchor_path, seq)

    def _append(self, session: Session, actor: str, action: str, subject_kind: str, subject_id: str,
                details: Mapping[str, Any] | None) -> AuditEntry:
        last = select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)
        head = session.execute(last).first()
        try:
            entry = seal_entry(self._key, seq=head.seq + 1 if head else 1, ts=datetime.now(UTC),
                               actor=text_arg(actor, "actor"), action=text_arg(action, "action"),
                               subject_kind=text_arg(subject_kind, "subject_kind"),
                               subject_id=text_arg(subject_id, "subject_id"), details=details,
                               prev_hash=head.hash if head else GENESIS_HASH)
        except AuditFormatError as exc:
            raise GovernanceError(str(exc), field="details") from exc
        session.add(AuditRow(seq=entry.seq, ts=entry.ts, actor=entry.actor, action=entry.action,
                             subject_kind=entry.subject_kind, subject_id=entry.subject_id,
                             details=entry.details, prev_hash=entry.prev_hash, hash=entry.hash,
                             hmac=entry.hmac))
        session.flush()
        session.info["audit_head"] = (entry.seq, entry.hash)
        return entry

    def _append_row(self, session: Session, row: Base, actor: str, action: str, subject_kind: str,
                    subject_id: str, details: Mapping[str, Any] | None) -> AuditEntry:
        """Append the entry that writes ``row``: it carries the row's digest, the row its ``seq``."""
        session.flush()
        table = row.__tablename__
        ref = {"table": table, "id": row.id, "digest": row_digest(table, row_values(row))}
        entry = self._append(session, actor, action, subject_kind, subject_id, {**dict(details or {}), "row": ref})
        row.audit_seq = entry.seq
        session.flush()
        return entry

    # --- audit log -----------------------------------------------------------------------

    def append_audit(self, actor: str, action: str, subject_kind: str, subject_id: str,
                     details: Mapping[str, Any] | None = None) -> AuditEntry:
        """Append one entry (for events with no other state change, e.g. a CLI login or export)."""
        return self._transaction(lambda s: self._append(s, actor, action, subject_kind, subject_id, details))

    def verify_audit(self) -> AuditVerification:
        """Check every entry, the links between them and the head against the anchor file."""
        try:
            anchor = read_anchor(self.anchor_path) if self.anchor_path else None
        except AuditFormatError as exc:
            return AuditVerification(False, 0, None, str(exc))

        def work(s: Session) -> AuditVerification:
            refs: list[RowRef] = []

            def entries() -> Any:
                query = select(AuditRow).order_by(AuditRow.seq).execution_options(yield_per=1000)
                for r in s.execute(query).scalars():
                    entry = r.entry()
                    if (ref := RowRef.of(entry)) is not None:
                        refs.append(ref)
                    yield entry

            chain = verify_entries(entries(), self._key, anchor, anchor_expected=self.anchor_path is not None)
            if not chain.ok:
                return chain
            problems = row_binding_problems(refs, self._governed_rows(s))
            if not problems:
                return chain
            return AuditVerification(False, chain.entries, None, "; ".join(problems), chain.head_seq,
                                     chain.anchor_seq)

        return self._read(work)

    @staticmethod
    def _governed_rows(s: Session, where: Any = None) -> Any:
        """``(table, id, audit_seq, digest)`` of governed rows (``where(model) -> filter`` narrows)."""
        for model in GOVERNED_TABLES:
            query = select(model).order_by(model.id)
            if where is not None:
                query = query.where(where(model))
            for row in s.execute(query).scalars():
                yield model.__tablename__, row.id, row.audit_seq, row_digest(model.__tablename__, row_values(row))

    def subject_problems(self, kind: str, name: str, version: str | int) -> list[str]:
        """Why the governed rows of one version cannot be trusted (``[]`` when each one is bound to an
        intact audit entry and each entry's row exists). Cheap: one subject's entries and rows only."""
        subject = f"{name}/{version}"

        def where(model: Any) -> Any:
            clause = (model.name == str(name)) & (model.version == str(version))
            return clause & (model.kind == kind) if model.__tablename__ == "decisions" else clause

        def work(s: Session) -> list[str]:
            problems, refs = [], []
            query = (select(AuditRow).where(AuditRow.subject_kind == kind, AuditRow.subject_id == subject)
                     .order_by(AuditRow.seq))
            for r in s.execute(query).scalars():
                entry = r.entry()
                if (problem := entry_seal_problem(entry, self._key)) is not None:
                    problems.append(problem)
                elif (ref := RowRef.of(entry)) is not None:
                    refs.append(ref)
            return problems + row_binding_problems(refs, self._governed_rows(s, where))

        return self._read(work)

    def seal_legacy_rows(self, actor: str, reason: str) -> int:
        """Bind rows written before rows were bound (no ``audit_seq``), one audited entry each.

        Refuses unless the chain itself verifies; run it once after upgrading an older store.
        """
        chain = self.verify_audit()
        if not chain.ok and chain.first_bad_seq is not None:
            raise GovernanceError(f"the audit chain does not verify ({chain.reason}); restore the store "
                                  "before sealing legacy rows", field="audit")
        reason = text_arg(reason, "reason")

        def work(s: Session) -> int:
            count = 0
            for model in GOVERNED_TABLES:
                query = select(model).where(model.audit_seq.is_(None)).order_by(model.id)
                for row in s.execute(query).scalars():
                    kind = getattr(row, "kind", "model") if model.__tablename__ == "decisions" else "model"
                    self._append_row(s, row, actor, "audit.legacy_row_sealed", kind,
                                     f"{row.name}/{row.version}", {"reason": reason})
                    count += 1
            return count

        return self._transaction(work)

    def list_audit(self, limit: int | None = 100, offset: int = 0, *, subject_kind: str | None = None,
                   subject_id: str | None = None, actor: str | None = None, action: str | None = None,
                   newest_first: bool = True) -> list[AuditEntry]:
        query = select(AuditRow)
        for column, value in ((AuditRow.subject_kind, subject_kind), (AuditRow.subject_id, subject_id),
                              (AuditRow.actor, actor), (AuditRow.action, action)):
            if value is not None:
                query = query.where(column == value)
        order = AuditRow.seq.desc() if newest_first else AuditRow.seq
        query = query.order_by(order).limit(limit).offset(offset)
        return self._read(lambda s: [r.entry() for r in s.execute(query).scalars()])

    def audit_head(self) -> AuditEntry | None:
        found = self.list_audit(limit=1)
        return found[0] if found else None

    def reset_anchor(self, actor: str, reason: str) -> AuditEntry:
        """Re-anchor at the current head (after restoring the database from a backup); audited."""
        entry = self.append_audit(actor, "audit.anchor_reset", "audit", "anchor",
                                  {"reason": text_arg(reason, "reason")})
        self._write_anchor(entry.seq, entry.hash, force=True)
        return entry

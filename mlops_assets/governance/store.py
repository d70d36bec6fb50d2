"""The governance store: decisions, deployments and drift events, with a hash-chained audit log.

The single source of truth for what people (and sensors) decided. SQLite in WAL mode by default
(``sqlite:////abs/path/governance.db``), Postgres by URL (``postgresql+psycopg2://...``); never
DuckDB, because several processes write it (CLI, management API, Dagster runs).

Every state change appends an audit entry in the *same* transaction. Write transactions
serialise: SQLite ones start with ``BEGIN IMMEDIATE`` (taking the write lock before reading the
chain head), Postgres ones take ``pg_advisory_xact_lock``; ``audit_log.prev_hash`` is UNIQUE as
a backstop, so concurrent writers can never fork the chain (a conflict is retried). After commit
the head is written to the anchor file (see ``audit.py``).

Decision rules (``decisions`` holds the history; the latest row per subject is its state):

* ``submit``: from no state or REJECTED (re-submission) to IN_REVIEW.
* ``approve``: from no state or IN_REVIEW to APPROVED. A REJECTED version needs a new ``submit``
  first, so a rejection cannot be silently overturned. The approver may not be the subject's
  owner/registerer, the owner must be known, and every checklist item must be true.
* ``reject``: from no state, IN_REVIEW or APPROVED (revoking an approval). Owners may reject their
  own subject: withdrawing needs no second pair of eyes.
* ``archive``: from any state; ARCHIVED is final.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from mlops_assets.governance.audit import (AuditEntry, AuditFormatError, AuditVerification, GENESIS_HASH,
                                           as_utc, read_anchor, seal_entry, verify_entries, write_anchor)
from mlops_assets.governance.records import (DEPLOYMENT_KINDS, SUBJECT_KINDS, Decision, DecisionState,
                                             Deployment, DriftEvent, GovernanceError)
from mlops_assets.governance.tables import AuditRow, Base, DecisionRow, DeploymentRow, DriftEventRow

log = logging.getLogger(__name__)
T = TypeVar("T")
_PG_LOCK_ID = 0x6D6C6F7073  # "mlops": one advisory lock for every governance write
_WRITE_OPTION = "mlops_governance_write"


def _text(value: Any, field: str) -> str:
    out = "" if value is None else str(value).strip()
    if not out:
        raise GovernanceError(f"{field} must be a non-empty string", field=field)
    return out


def _kind(kind: str) -> str:
    if kind not in SUBJECT_KINDS:
        raise GovernanceError(f"kind must be one of {SUBJECT_KINDS}, got {kind!r}", field="kind")
    return kind


def _is_chain_conflict(exc: IntegrityError) -> bool:
    message = str(exc.orig).lower()
    return "audit_log" in message and ("prev_hash" in message or "pkey" in message or ".seq" in message)


class GovernanceStore:
    """Decisions, deployments, drift events and their audit log in one SQL database."""

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
        self._transaction(lambda s: Base.metadata.create_all(s.connection()))

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
            entry = seal_entry(self._key, seq=head.seq + 1 if head else 1, ts=datetime.now(timezone.utc),
                               actor=_text(actor, "actor"), action=_text(action, "action"),
                               subject_kind=_text(subject_kind, "subject_kind"),
                               subject_id=_text(subject_id, "subject_id"), details=details,
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
            query = select(AuditRow).order_by(AuditRow.seq).execution_options(yield_per=1000)
            rows = s.execute(query).scalars()
            return verify_entries((r.entry() for r in rows), self._key, anchor,
                                  anchor_expected=self.anchor_path is not None)

        return self._read(work)

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
                                  {"reason": _text(reason, "reason")})
        self._write_anchor(entry.seq, entry.hash, force=True)
        return entry

    # --- decisions -----------------------------------------------------------------------

    def _latest(self, s: Session, kind: str, name: str, version: str) -> DecisionRow | None:
        query = (select(DecisionRow)
                 .where(DecisionRow.kind == kind, DecisionRow.name == name, DecisionRow.version == version)
                 .order_by(DecisionRow.id.desc()).limit(1))
        return s.execute(query).scalars().first()

    def _decide(self, kind: str, name: Any, version: Any, state: DecisionState, actor: str,
                allowed_from: set[DecisionState | None], comment: str | None,
                checklist: Mapping[str, bool] | None, owner: str | None = None) -> Decision:
        kind, name = _kind(kind), _text(name, "name")
        version, actor = _text(version, "version"), _text(actor, "actor")

        def work(s: Session) -> Decision:
            latest = self._latest(s, kind, name, version)
            current = DecisionState(latest.state) if latest else None
            if current not in allowed_from:
                hint = " (submit it again for review first)" if current is DecisionState.REJECTED else ""
                raise GovernanceError(f"{kind} {name} version {version} is {current or 'not submitted'}; "
                                      f"cannot move it to {state}{hint}", field="state")
            row = DecisionRow(kind=kind, name=name, version=version, state=state.value, actor=actor,
                              comment=comment, checklist=dict(checklist) if checklist is not None else None,
                              ts=datetime.now(timezone.utc))
            s.add(row)
            s.flush()
            self._append(s, actor, f"decision.{state.value.lower()}", kind, f"{name}/{version}",
                         {"decision_id": row.id, "from": current, "to": state, "comment": comment,
                          "checklist": row.checklist, "owner": owner})
            return Decision.from_row(row)

        return self._transaction(work)

    def submit(self, kind: str, name: str, version: str | int, *, actor: str,
               comment: str | None = None) -> Decision:
        return self._decide(kind, name, version, DecisionState.IN_REVIEW, actor,
                            {None, DecisionState.REJECTED}, comment, None)

    def approve(self, kind: str, name: str, version: str | int, *, actor: str, owner: str | None,
                comment: str | None = None, checklist: Mapping[str, bool] | None = None) -> Decision:
        """Approve; refuses self-approval, an unknown owner and any failed checklist item."""
        if owner is None or not str(owner).strip():
            raise GovernanceError(f"the owner of {kind} {name} version {version} is unknown, so the "
                                  "four-eyes rule cannot be checked; record who registered it", field="owner")
        if str(owner).strip() == str(actor).strip():
            raise GovernanceError(f"{actor} registered {kind} {name} version {version} and may not "
                                  "approve it; ask another reviewer", field="actor")
        failed = [item for item, passed in (checklist or {}).items() if not passed]
        if failed:
            raise GovernanceError(f"cannot approve {kind} {name} version {version}: checklist items "
                                  f"failed: {', '.join(failed)}", field="checklist")
        return self._decide(kind, name, version, DecisionState.APPROVED, actor,
                            {None, DecisionState.IN_REVIEW}, comment, checklist, owner=str(owner).strip())

    def reject(self, kind: str, name: str, version: str | int, *, actor: str, comment: str) -> Decision:
        return self._decide(kind, name, version, DecisionState.REJECTED, actor,
                            {None, DecisionState.IN_REVIEW, DecisionState.APPROVED},
                            _text(comment, "comment"), None)

    def archive(self, kind: str, name: str, version: str | int, *, actor: str,
                comment: str | None = None) -> Decision:
        return self._decide(kind, name, version, DecisionState.ARCHIVED, actor,
                            {None, DecisionState.IN_REVIEW, DecisionState.APPROVED, DecisionState.REJECTED},
                            comment, None)

    def latest_decision(self, kind: str, name: str, version: str | int) -> Decision | None:
        row = self._read(lambda s: self._latest(s, _kind(kind), str(name), str(version)))
        return Decision.from_row(row) if row else None

    def state(self, kind: str, name: str, version: str | int) -> DecisionState | None:
        latest = self.latest_decision(kind, name, version)
        return latest.state if latest else None

    def decision_history(self, kind: str, name: str, version: str | int) -> list[Decision]:
        query = (select(DecisionRow).where(DecisionRow.kind == _kind(kind), DecisionRow.name == str(name),
                                           DecisionRow.version == str(version)).order_by(DecisionRow.id))
        return self._read(lambda s: [Decision.from_row(r) for r in s.execute(query).scalars()])

    def pending_promotions(self, kind: str = "model") -> list[Decision]:
        """Subjects whose latest decision is APPROVED and not yet promoted, oldest first."""
        latest = (select(func.max(DecisionRow.id)).where(DecisionRow.kind == _kind(kind))
                  .group_by(DecisionRow.kind, DecisionRow.name, DecisionRow.version))
        query = (select(DecisionRow).where(DecisionRow.id.in_(latest),
                                           DecisionRow.state == DecisionState.APPROVED.value,
                                           DecisionRow.consumed.is_(False)).order_by(DecisionRow.id))
        return self._read(lambda s: [Decision.from_row(r) for r in s.execute(query).scalars()])

    def _consume(self, s: Session, kind: str, name: str, version: str, actor: str) -> DecisionRow:
        latest = self._latest(s, kind, name, version)
        if latest is None or latest.state != DecisionState.APPROVED.value:
            raise GovernanceError(f"{kind} {name} version {version} is not APPROVED; nothing to mark "
                                  "promoted", field="state")
        if not latest.consumed:
            latest.consumed, latest.promoted_at = True, datetime.now(timezone.utc)
            self._append(s, actor, "decision.promoted", kind, f"{name}/{version}", {"decision_id": latest.id})
        return latest

    def mark_promoted(self, kind: str, name: str, version: str | int, *, actor: str) -> Decision:
        """Mark the approval consumed (idempotent), so the sensor does not act on it again."""
        args = (_kind(kind), _text(name, "name"), _text(version, "version"), _text(actor, "actor"))
        return self._transaction(lambda s: Decision.from_row(self._consume(s, *args)))

    # --- deployments ---------------------------------------------------------------------

    def record_deployment(self, *, name: str, alias: str, version: str | int,
                          previous_version: str | int | None, actor: str, reason: str | None = None,
                          checklist: Mapping[str, bool] | None = None, kind: str = "promotion",
                          consume_approval: bool = False) -> Deployment:
        """Record that ``alias`` now points at ``version``; optionally consume the model's approval."""
        if kind not in DEPLOYMENT_KINDS:
            raise GovernanceError(f"kind must be one of {DEPLOYMENT_KINDS}, got {kind!r}", field="kind")
        name, alias, version, actor = (_text(name, "name"), _text(alias, "alias"),
                                       _text(version, "version"), _text(actor, "actor"))
        previous = None if previous_version is None else str(previous_version)

        def work(s: Session) -> Deployment:
            row = DeploymentRow(name=name, alias=alias, version=version, previous_version=previous,
                                actor=actor, reason=reason,
                                checklist=dict(checklist) if checklist is not None else None,
                                ts=datetime.now(timezone.utc), kind=kind)
            s.add(row)
            s.flush()
            self._append(s, actor, f"deployment.{kind}", "model", f"{name}/{version}",
                         {"deployment_id": row.id, "alias": alias, "previous_version": previous,
                          "reason": reason, "checklist": row.checklist})
            if consume_approval:
                self._consume(s, "model", name, version, actor)
            return Deployment.from_row(row)

        return self._transaction(work)

    def list_deployments(self, name: str | None = None, *, alias: str | None = None,
                         limit: int | None = 100) -> list[Deployment]:
        """Deployments, newest first (``limit=None`` for all)."""
        query = select(DeploymentRow)
        if name is not None:
            query = query.where(DeploymentRow.name == name)
        if alias is not None:
            query = query.where(DeploymentRow.alias == alias)
        query = query.order_by(DeploymentRow.id.desc()).limit(limit)
        return self._read(lambda s: [Deployment.from_row(r) for r in s.execute(query).scalars()])

    def get_deployment(self, deployment_id: int) -> Deployment | None:
        row = self._read(lambda s: s.get(DeploymentRow, int(deployment_id)))
        return Deployment.from_row(row) if row else None

    # --- drift events --------------------------------------------------------------------

    def record_drift_event(self, *, source: str, features: list[str], drifted_share: float, severity: str,
                           action_taken: str | None = None, episode_id: str | None = None,
                           details: Mapping[str, Any] | None = None, actor: str = "monitoring") -> DriftEvent:
        if not 0.0 <= float(drifted_share) <= 1.0:
            raise GovernanceError(f"drifted_share must be within [0, 1], got {drifted_share}",
                                  field="drifted_share")
        source, severity = _text(source, "source"), _text(severity, "severity")

        def work(s: Session) -> DriftEvent:
            row = DriftEventRow(ts=datetime.now(timezone.utc), source=source,
                                features=[str(f) for f in features], drifted_share=float(drifted_share),
                                severity=severity, action_taken=action_taken, episode_id=episode_id,
                                details={})
            s.add(row)
            s.flush()
            entry = self._append(s, actor, "drift.event", "drift", source,
                                 {"event_id": row.id, "features": row.features,
                                  "drifted_share": row.drifted_share, "severity": severity,
                                  "action_taken": action_taken, "episode_id": episode_id,
                                  "details": dict(details or {})})
            row.details = entry.details["details"]  # the JSON-normalised copy
            return DriftEvent.from_row(row)

        return self._transaction(work)

    def set_drift_action(self, event_id: int, action_taken: str, *, actor: str) -> DriftEvent:
        """Record what was done about a drift event (e.g. ``retraining_run:<run id>``)."""
        def work(s: Session) -> DriftEvent:
            row = s.get(DriftEventRow, int(event_id))
            if row is None:
                raise GovernanceError(f"no drift event with id {event_id}", field="event_id")
            row.action_taken = _text(action_taken, "action_taken")
            self._append(s, actor, "drift.action", "drift", row.source,
                         {"event_id": row.id, "action_taken": row.action_taken})
            return DriftEvent.from_row(row)

        return self._transaction(work)

    def list_drift_events(self, source: str | None = None, *, episode_id: str | None = None,
                          since: datetime | None = None, limit: int | None = 100) -> list[DriftEvent]:
        """Drift events, newest first."""
        query = select(DriftEventRow)
        if source is not None:
            query = query.where(DriftEventRow.source == source)
        if episode_id is not None:
            query = query.where(DriftEventRow.episode_id == episode_id)
        if since is not None:
            query = query.where(DriftEventRow.ts >= as_utc(since))
        query = query.order_by(DriftEventRow.id.desc()).limit(limit)
        return self._read(lambda s: [DriftEvent.from_row(r) for r in s.execute(query).scalars()])

    def last_drift_event(self, source: str | None = None, *,
                         episode_id: str | None = None) -> DriftEvent | None:
        found = self.list_drift_events(source, episode_id=episode_id, limit=1)
        return found[0] if found else None

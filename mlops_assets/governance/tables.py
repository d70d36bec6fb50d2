"""SQLAlchemy tables of the governance store: ``audit_log``, ``decisions``, ``deployments``, ``gate_results``,
``registrations`` and ``drift_events``.

Every row that can move an alias (decisions, deployments, gate results, registrations) carries
``audit_seq``, the audit entry that last wrote it; that entry holds the row's digest (see
``audit.row_binding_problems``), so a row inserted, edited or deleted by hand fails verification.

Timestamps are stored as naive UTC and read back as aware UTC, identically on SQLite and Postgres,
so the audit hash (which covers the timestamp) verifies on either.
"""

from __future__ import annotations

from datetime import datetime, UTC
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    inspect,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from mlops_assets.governance.audit import AuditEntry, as_utc, format_ts


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class AuditRow(Base):
    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    subject_kind: Mapped[str] = mapped_column(String(50))
    subject_id: Mapped[str] = mapped_column(String(500))
    details: Mapped[dict] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    hmac: Mapped[str] = mapped_column(String(64))
    __table_args__ = (Index("ix_audit_subject", "subject_kind", "subject_id"),)

    def entry(self) -> AuditEntry:
        return AuditEntry(self.seq, self.ts, self.actor, self.action, self.subject_kind, self.subject_id,
                          self.details, self.prev_hash, self.hash, self.hmac)


class DecisionRow(Base):
    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(300))
    version: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    checklist: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    consumed: Mapped[bool] = mapped_column(default=False)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    waivers: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # {check: reason} of an approval
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __table_args__ = (
        CheckConstraint("kind IN ('model', 'prompt')", name="ck_decisions_kind"),
        CheckConstraint("state IN ('IN_REVIEW', 'APPROVED', 'REJECTED', 'ARCHIVED')",
                        name="ck_decisions_state"),
        Index("ix_decisions_subject", "kind", "name", "version"),
    )


class DeploymentRow(Base):
    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    alias: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(100))
    previous_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    checklist: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(20))
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __table_args__ = (
        CheckConstraint("kind IN ('promotion', 'rollback')", name="ck_deployments_kind"),
        Index("ix_deployments_name_alias", "name", "alias"),
    )


class GateResultRow(Base):
    """One verdict of a gate (``evaluation``, ``compliance``) on a model version; the latest counts."""

    __tablename__ = "gate_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    version: Mapped[str] = mapped_column(String(100))
    gate: Mapped[str] = mapped_column(String(50))
    passed: Mapped[bool] = mapped_column()
    values: Mapped[dict] = mapped_column(JSON)
    thresholds: Mapped[dict] = mapped_column(JSON)
    failed: Mapped[list] = mapped_column(JSON)  # names of the checks that did not pass
    details: Mapped[dict] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(200))
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __table_args__ = (Index("ix_gate_results_subject", "name", "version", "gate"),)


class RegistrationRow(Base):
    """Who registered a model version (the four-eyes rule compares approvers with it)."""

    __tablename__ = "registrations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    version: Mapped[str] = mapped_column(String(100))
    registered_by: Mapped[str] = mapped_column(String(200))
    actor: Mapped[str] = mapped_column(String(200))
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __table_args__ = (UniqueConstraint("name", "version", name="uq_registrations_version"),)


GOVERNED_TABLES: tuple[type[Base], ...] = (DecisionRow, DeploymentRow, GateResultRow, RegistrationRow)
ADDED_COLUMNS = {"decisions": {"waivers": "JSON", "audit_seq": "INTEGER"},
                 "deployments": {"audit_seq": "INTEGER"}}  # columns newer than the first schema


def row_values(row: Base) -> dict[str, Any]:
    """Every column of a governed row, JSON-ready (timestamps as ISO UTC), for its digest."""
    out: dict[str, Any] = {}
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        out[column.key] = format_ts(value) if isinstance(value, datetime) else value
    return out


class DriftEventRow(Base):
    __tablename__ = "drift_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(300))
    features: Mapped[list] = mapped_column(JSON)
    drifted_share: Mapped[float] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(String(50))
    action_taken: Mapped[str | None] = mapped_column(String(200), nullable=True)
    episode_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    details: Mapped[dict] = mapped_column(JSON)
    __table_args__ = (Index("ix_drift_source_ts", "source", "ts"),)


def upgrade_schema(connection: Any) -> list[str]:
    """Create missing tables and add the columns an older store lacks; returns what was added.

    Rows written before the upgrade have no ``audit_seq``: verification names them, and
    ``GovernanceStore.seal_legacy_rows`` binds them once (audited) when the chain itself verifies.
    """
    Base.metadata.create_all(connection)
    added = []
    inspector = inspect(connection)
    for table, columns in ADDED_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(table)}
        for column, sql_type in columns.items():
            if column not in present:
                connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
                added.append(f"{table}.{column}")
    return added

"""Drift events of the governance store (a repository mixed into ``GovernanceStore``).

Drift reports and events posted by other services are recorded here, each inside the audit chain; the
episode bookkeeping that reads them (open, resolved, cooldown) is ``mlops_assets.monitoring.events``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlops_assets.governance.audit import as_utc
from mlops_assets.governance.decisions import text_arg
from mlops_assets.governance.records import DriftEvent, GovernanceError
from mlops_assets.governance.tables import DriftEventRow


class DriftEventRepository:
    """``drift_events``; needs ``_transaction``, ``_read`` and ``_append``."""

    _transaction: Any
    _read: Any
    _append: Any

    def record_drift_event(self, *, source: str, features: list[str], drifted_share: float, severity: str,
                           action_taken: str | None = None, episode_id: str | None = None,
                           details: Mapping[str, Any] | None = None, actor: str = "monitoring") -> DriftEvent:
        if not 0.0 <= float(drifted_share) <= 1.0:
            raise GovernanceError(f"drifted_share must be within [0, 1], got {drifted_share}",
                                  field="drifted_share")
        source, severity = text_arg(source, "source"), text_arg(severity, "severity")

        def work(s: Session) -> DriftEvent:
            return self._insert_drift_event(s, source, features, drifted_share, severity, action_taken,
                                            episode_id, details, actor)

        return self._transaction(work)

    def _insert_drift_event(self, s: Session, source: str, features: list[str], drifted_share: float,
                            severity: str, action_taken: str | None, episode_id: str | None,
                            details: Mapping[str, Any] | None, actor: str) -> DriftEvent:
        row = DriftEventRow(ts=datetime.now(UTC), source=source,
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

    def record_drift_event_once(self, *, dedupe_key: str, source: str, features: list[str],
                                drifted_share: float, severity: str, action_taken: str | None = None,
                                episode_id: str | None = None, details: Mapping[str, Any] | None = None,
                                actor: str = "monitoring", lookback: int = 1000) -> tuple[DriftEvent, bool]:
        """Record a drift event unless one of the same ``source`` with the same ``dedupe_key`` (kept in
        ``details["dedupe_key"]``) is among its last ``lookback`` events; ``(event, created)``. Checked and
        written in one serialised transaction, so concurrent posts of one event record it once."""
        if not 0.0 <= float(drifted_share) <= 1.0:
            raise GovernanceError(f"drifted_share must be within [0, 1], got {drifted_share}",
                                  field="drifted_share")
        source, severity = text_arg(source, "source"), text_arg(severity, "severity")
        key = text_arg(dedupe_key, "dedupe_key")

        def work(s: Session) -> tuple[DriftEvent, bool]:
            recent = select(DriftEventRow).where(DriftEventRow.source == source)
            for row in s.execute(recent.order_by(DriftEventRow.id.desc()).limit(lookback)).scalars():
                if (row.details or {}).get("dedupe_key") == key:
                    return DriftEvent.from_row(row), False
            event = self._insert_drift_event(s, source, features, drifted_share, severity, action_taken,
                                             episode_id, {**dict(details or {}), "dedupe_key": key}, actor)
            return event, True

        return self._transaction(work)

    def update_drift_event(self, event_id: int, *, action_taken: str | None = None, episode_id: str | None = None,
                           resolved: bool = False, details: Mapping[str, Any] | None = None,
                           actor: str) -> DriftEvent:
        """Record a decision about a drift event: what was done, the episode it opened, ``details`` merged
        in, and ``resolved=True`` when its episode ended (kept as ``details["resolved_at"]``: a state of
        its own, so no column is added and existing stores open unchanged). One audit entry."""
        def work(s: Session) -> DriftEvent:
            row = s.get(DriftEventRow, int(event_id))
            if row is None:
                raise GovernanceError(f"no drift event with id {event_id}", field="event_id")
            merged = {**dict(row.details or {}), **dict(details or {})}
            change: dict[str, Any] = {"event_id": row.id}
            if action_taken is not None:
                row.action_taken = change["action_taken"] = text_arg(action_taken, "action_taken")
            if episode_id is not None:
                row.episode_id = change["episode_id"] = text_arg(episode_id, "episode_id")
            if resolved and not merged.get("resolved_at"):
                merged["resolved_at"] = change["resolved_at"] = datetime.now(UTC).isoformat()
            if details:
                change["details"] = dict(details)
            row.details = merged
            self._append(s, actor, "drift.resolved" if "resolved_at" in change else "drift.action", "drift",
                         row.source, change)
            return DriftEvent.from_row(row)

        return self._transaction(work)

    def last_drift_episode(self, action_taken: str) -> DriftEvent | None:
        """The newest drift event that opened an episode (has an ``episode_id`` and this ``action_taken``)."""
        query = (select(DriftEventRow).where(DriftEventRow.episode_id.is_not(None))
                 .where(DriftEventRow.action_taken == action_taken).order_by(DriftEventRow.id.desc()).limit(1))
        rows = self._read(lambda s: list(s.execute(query).scalars()))
        return DriftEvent.from_row(rows[0]) if rows else None

    def set_drift_action(self, event_id: int, action_taken: str, *, actor: str) -> DriftEvent:
        """Record what was done about a drift event (e.g. ``retraining_run:<run id>``)."""
        def work(s: Session) -> DriftEvent:
            row = s.get(DriftEventRow, int(event_id))
            if row is None:
                raise GovernanceError(f"no drift event with id {event_id}", field="event_id")
            row.action_taken = text_arg(action_taken, "action_taken")
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

"""Decisions and deployments of the governance store (a repository mixed into ``GovernanceStore``).

Decision rules (``decisions`` holds the history; the latest row per subject is its state):

* ``submit``: from no state or REJECTED (re-submission) to IN_REVIEW.
* ``approve``: from no state or IN_REVIEW to APPROVED. A REJECTED version needs a new ``submit``
  first, so a rejection cannot be silently overturned. The approver may not be the subject's
  owner/registerer (compared normalised: case and whitespace do not make another person), the
  owner must be known, and every checklist item must be true. An approval may carry *waivers*
  (``{check: reason}``), governed exceptions that the alias mover honours.
* ``reject``: from no state, IN_REVIEW or APPROVED (revoking an approval). Owners may reject their
  own subject: withdrawing needs no second pair of eyes.
* ``archive``: from any state; ARCHIVED is final.

Every row is written with its audit entry in one transaction and bound to it (``_append_row``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mlops_assets.governance.records import (
    DEPLOYMENT_KINDS,
    SUBJECT_KINDS,
    Decision,
    DecisionState,
    Deployment,
    GovernanceError,
    normalize_identity,
)
from mlops_assets.governance.tables import DecisionRow, DeploymentRow


def text_arg(value: Any, field: str) -> str:
    out = "" if value is None else str(value).strip()
    if not out:
        raise GovernanceError(f"{field} must be a non-empty string", field=field)
    return out


def kind_arg(kind: str) -> str:
    if kind not in SUBJECT_KINDS:
        raise GovernanceError(f"kind must be one of {SUBJECT_KINDS}, got {kind!r}", field="kind")
    return kind


def _waivers(waivers: Mapping[str, str] | None) -> dict[str, str] | None:
    if not waivers:
        return None
    out = {}
    for check, reason in waivers.items():
        out[text_arg(check, "waive")] = text_arg(reason, f"reason of the waiver of {check!r}")
    return out


class DecisionRepository:
    """``decisions`` and ``deployments``; needs ``_transaction``, ``_read`` and ``_append_row``."""

    _transaction: Any
    _read: Any
    _append_row: Any

    # --- decisions -----------------------------------------------------------------------

    def _latest(self, s: Session, kind: str, name: str, version: str) -> DecisionRow | None:
        query = (select(DecisionRow)
                 .where(DecisionRow.kind == kind, DecisionRow.name == name, DecisionRow.version == version)
                 .order_by(DecisionRow.id.desc()).limit(1))
        return s.execute(query).scalars().first()

    def _decide(self, kind: str, name: Any, version: Any, state: DecisionState, actor: str,
                allowed_from: set[DecisionState | None], comment: str | None,
                checklist: Mapping[str, Any] | None, owner: str | None = None,
                waivers: Mapping[str, str] | None = None) -> Decision:
        kind, name = kind_arg(kind), text_arg(name, "name")
        version, actor = text_arg(version, "version"), text_arg(actor, "actor")

        def work(s: Session) -> Decision:
            latest = self._latest(s, kind, name, version)
            current = DecisionState(latest.state) if latest else None
            if current not in allowed_from:
                hint = " (submit it again for review first)" if current is DecisionState.REJECTED else ""
                raise GovernanceError(f"{kind} {name} version {version} is {current or 'not submitted'}; "
                                      f"cannot move it to {state}{hint}", field="state")
            row = DecisionRow(kind=kind, name=name, version=version, state=state.value, actor=actor,
                              comment=comment, checklist=dict(checklist) if checklist is not None else None,
                              ts=datetime.now(UTC), waivers=dict(waivers) if waivers else None,
                              consumed=False, promoted_at=None)
            s.add(row)
            s.flush()
            self._append_row(s, row, actor, f"decision.{state.value.lower()}", kind, f"{name}/{version}",
                             {"decision_id": row.id, "from": current, "to": state, "comment": comment,
                              "checklist": row.checklist, "owner": owner, "waivers": row.waivers})
            return Decision.from_row(row)

        return self._transaction(work)

    def submit(self, kind: str, name: str, version: str | int, *, actor: str,
               comment: str | None = None) -> Decision:
        return self._decide(kind, name, version, DecisionState.IN_REVIEW, actor,
                            {None, DecisionState.REJECTED}, comment, None)

    def approve(self, kind: str, name: str, version: str | int, *, actor: str, owner: str | None,
                comment: str | None = None, checklist: Mapping[str, Any] | None = None,
                waivers: Mapping[str, str] | None = None) -> Decision:
        """Approve; refuses self-approval (normalised identities), an unknown owner and any failed
        checklist item. ``waivers`` (``{check: reason}``) are recorded with the approval."""
        if owner is None or not str(owner).strip():
            raise GovernanceError(f"the owner of {kind} {name} version {version} is unknown, so the "
                                  "four-eyes rule cannot be checked; record who registered it", field="owner")
        if normalize_identity(owner) == normalize_identity(actor):
            raise GovernanceError(f"{str(actor).strip()} registered {kind} {name} version {version} (as "
                                  f"{str(owner).strip()!r}) and may not approve it; ask another reviewer",
                                  field="actor")
        failed = [item for item, passed in (checklist or {}).items() if not passed]
        if failed:
            raise GovernanceError(f"cannot approve {kind} {name} version {version}: checklist items "
                                  f"failed: {', '.join(failed)}", field="checklist")
        return self._decide(kind, name, version, DecisionState.APPROVED, actor,
                            {None, DecisionState.IN_REVIEW}, comment, checklist, owner=str(owner).strip(),
                            waivers=_waivers(waivers))

    def reject(self, kind: str, name: str, version: str | int, *, actor: str, comment: str) -> Decision:
        return self._decide(kind, name, version, DecisionState.REJECTED, actor,
                            {None, DecisionState.IN_REVIEW, DecisionState.APPROVED},
                            text_arg(comment, "comment"), None)

    def archive(self, kind: str, name: str, version: str | int, *, actor: str,
                comment: str | None = None) -> Decision:
        return self._decide(kind, name, version, DecisionState.ARCHIVED, actor,
                            {None, DecisionState.IN_REVIEW, DecisionState.APPROVED, DecisionState.REJECTED},
                            comment, None)

    def latest_decision(self, kind: str, name: str, version: str | int) -> Decision | None:
        row = self._read(lambda s: self._latest(s, kind_arg(kind), str(name), str(version)))
        return Decision.from_row(row) if row else None

    def state(self, kind: str, name: str, version: str | int) -> DecisionState | None:
        latest = self.latest_decision(kind, name, version)
        return latest.state if latest else None

    def decision_history(self, kind: str, name: str, version: str | int) -> list[Decision]:
        query = (select(DecisionRow).where(DecisionRow.kind == kind_arg(kind), DecisionRow.name == str(name),
                                           DecisionRow.version == str(version)).order_by(DecisionRow.id))
        return self._read(lambda s: [Decision.from_row(r) for r in s.execute(query).scalars()])

    def pending_promotions(self, kind: str = "model") -> list[Decision]:
        """Subjects whose latest decision is APPROVED and not yet promoted, oldest first."""
        latest = (select(func.max(DecisionRow.id)).where(DecisionRow.kind == kind_arg(kind))
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
            latest.consumed, latest.promoted_at = True, datetime.now(UTC)
            self._append_row(s, latest, actor, "decision.promoted", kind, f"{name}/{version}",
                             {"decision_id": latest.id})
        return latest

    def mark_promoted(self, kind: str, name: str, version: str | int, *, actor: str) -> Decision:
        """Mark the approval consumed (idempotent), so the sensor does not act on it again."""
        args = (kind_arg(kind), text_arg(name, "name"), text_arg(version, "version"), text_arg(actor, "actor"))
        return self._transaction(lambda s: Decision.from_row(self._consume(s, *args)))

    # --- deployments ---------------------------------------------------------------------

    def record_deployment(self, *, name: str, alias: str, version: str | int,
                          previous_version: str | int | None, actor: str, reason: str | None = None,
                          checklist: Mapping[str, Any] | None = None, kind: str = "promotion",
                          consume_approval: bool = False) -> Deployment:
        """Record that ``alias`` now points at ``version``; optionally consume the model's approval.

        ``checklist`` holds what was checked, with the values (not literal ``True``)."""
        if kind not in DEPLOYMENT_KINDS:
            raise GovernanceError(f"kind must be one of {DEPLOYMENT_KINDS}, got {kind!r}", field="kind")
        name, alias, version, actor = (text_arg(name, "name"), text_arg(alias, "alias"),
                                       text_arg(version, "version"), text_arg(actor, "actor"))
        previous = None if previous_version is None else str(previous_version)

        def work(s: Session) -> Deployment:
            row = DeploymentRow(name=name, alias=alias, version=version, previous_version=previous,
                                actor=actor, reason=reason,
                                checklist=dict(checklist) if checklist is not None else None,
                                ts=datetime.now(UTC), kind=kind)
            s.add(row)
            s.flush()
            self._append_row(s, row, actor, f"deployment.{kind}", "model", f"{name}/{version}",
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

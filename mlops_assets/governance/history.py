"""Which version each alias pointed to at time T, and the decision that moved it there.

The answer comes from the governance store's ``deployments`` (every alias move the one alias mover
made: promotion or rollback, who, why, the approval it consumed) and the ``alias.removed`` audit
entries (an archive drops a version's non-protected aliases). It is given only when it is verified
against the hash-chained audit log: the whole chain must verify (``GovernanceStore.verify_audit``: every
entry sealed and linked, the head at its anchor, every governed row bound to the entry that wrote it,
no recorded row missing), because only an intact chain proves that no deployment row was deleted,
inserted or edited; and every deployment row used must be the row its audit entry recorded. When not,
:class:`HistoryBroken` (a ``Conflict``) names the break instead of an answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from mlops_assets.errors import Conflict, InvalidInput, NotFound
from mlops_assets.governance.audit import RowRef, format_ts


class HistoryBroken(Conflict):
    """The alias history cannot be trusted: the audit log or a deployment row does not verify."""

    def __init__(self, name: str, problems: list[str]) -> None:
        super().__init__("audit", [f"the alias history of {name} does not verify: {p}" for p in problems],
                         "restore the governance store from a backup and re-anchor (`mlops audit`), then ask again")
        self.problems = problems


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias: the deployment (or audited removal) that set it, with its decision."""

    ts: datetime
    alias: str
    version: str | None  # None: the alias was removed
    previous_version: str | None
    kind: str  # promotion, rollback or removed
    actor: str
    reason: str | None
    deployment_id: int | None
    approval_decision_id: int | None
    approved_by: str | None
    audit_seq: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ts"] = format_ts(self.ts)
        return out


@dataclass(frozen=True)
class AsOf:
    """What every alias of ``name`` pointed to at ``at`` (``None``: nothing), verified at ``verified_seq``."""

    name: str
    at: datetime
    aliases: dict[str, AliasMove | None]
    verified_entries: int

    def version(self, alias: str) -> str | None:
        move = self.aliases.get(alias)
        return None if move is None else move.version

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "at": format_ts(self.at), "verified_entries": self.verified_entries,
                "aliases": {a: (m.to_dict() if m else None) for a, m in self.aliases.items()}}


def parse_timestamp(value: datetime | str) -> datetime:
    """An aware UTC datetime from an ISO string or datetime (naive: UTC; a date alone: its midnight UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInput("timestamp", f"{value!r} is not an ISO-8601 timestamp",
                               "e.g. 2025-03-01T14:30:00Z") from None
    if not isinstance(value, datetime):
        raise InvalidInput("timestamp", f"must be a datetime or ISO string, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _as_utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _verified_moves(store: Any, name: str) -> tuple[list[AliasMove], int]:
    chain = store.verify_audit()
    problems = [] if chain.ok else [chain.reason or "the audit log does not verify"]
    entries = store.list_audit(limit=None, newest_first=False)
    prefix = f"{name}/"
    recorded: dict[int, RowRef] = {}
    removals = []
    for entry in entries:
        if entry.subject_kind != "model" or not entry.subject_id.startswith(prefix):
            continue
        ref = RowRef.of(entry)
        if ref is not None and ref.table == "deployments" and entry.action.startswith("deployment."):
            recorded[ref.id] = ref
        elif entry.action == "alias.removed":
            removals.append(entry)
    deployments = store.list_deployments(name, limit=None)
    moves = []
    for d in deployments:
        ref = recorded.get(d.id)
        if ref is None:
            problems.append(f"deployments row {d.id} ({d.alias} -> {d.version}) has no audit entry of this model")
            continue
        approval = (d.checklist or {}).get("approval") or {}
        moves.append(AliasMove(_as_utc(d.ts), d.alias, d.version, d.previous_version, d.kind, d.actor, d.reason,
                               d.id, approval.get("decision_id"), approval.get("approved_by"), ref.seq))
    missing = sorted(set(recorded) - {d.id for d in deployments})
    problems += [f"deployments row {i} recorded by audit entry seq {recorded[i].seq} is missing (deleted)"
                 for i in missing]
    for entry in removals:
        alias = str((entry.details or {}).get("alias") or "")
        if alias:
            moves.append(AliasMove(_as_utc(entry.ts), alias, None, entry.subject_id.removeprefix(prefix), "removed",
                                   entry.actor, str((entry.details or {}).get("why") or "") or None, None, None, None,
                                   entry.seq))
    if problems:
        raise HistoryBroken(name, problems)
    moves.sort(key=lambda m: (m.ts, m.audit_seq))
    return moves, chain.entries


def alias_history(store: Any, name: str, alias: str) -> list[AliasMove]:
    """Every verified move of ``alias`` of model ``name``, oldest first (``NotFound`` when none)."""
    moves, _ = _verified_moves(store, name)
    found = [m for m in moves if m.alias == alias]
    if not found:
        raise NotFound("alias", f"model {name!r} has no recorded move of alias {alias!r}")
    return found


def as_of(store: Any, name: str, timestamp: datetime | str) -> AsOf:
    """Which version each alias of ``name`` pointed to at ``timestamp``, with the move that set it.

    An alias with no move at or before ``timestamp`` maps to ``None``. ``NotFound`` when the model has
    no recorded move at all; :class:`HistoryBroken` when the record does not verify.
    """
    at = parse_timestamp(timestamp)
    moves, entries = _verified_moves(store, name)
    if not moves:
        raise NotFound("name", f"model {name!r} has no recorded deployment in the governance store")
    aliases: dict[str, AliasMove | None] = {m.alias: None for m in moves}
    for move in moves:
        if move.ts <= at:
            aliases[move.alias] = move if move.version is not None else None
    return AsOf(name, at, aliases, entries)

"""Plain records the governance store returns, and its error type (no database code here).

Kept apart from ``store.py`` so callers (CLI, management API, Dagster assets, serving) can import
the types without the SQLAlchemy models, and so each module stays small.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from mlops_assets.errors import Conflict

SUBJECT_KINDS = ("model", "prompt")
DEPLOYMENT_KINDS = ("promotion", "rollback")


class GovernanceError(Conflict, ValueError):
    """A governance rule refused the request; ``field`` names the argument or state at fault.

    A :class:`~mlops_assets.errors.Conflict` (HTTP 409): the request is well formed but the state
    refuses it. Still a ``ValueError`` for the callers that catch that."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        ValueError.__init__(self, message)
        self.field = field
        if not getattr(self, "reasons", None):  # subclasses may have set their list of reasons
            self.reasons = [message]
        self.hint = ""


def normalize_identity(who: Any) -> str:
    """The form identities are compared in (four-eyes, roles): trimmed, inner spaces collapsed, casefolded.

    ``" Alice "``, ``"alice"`` and ``"ALICE"`` are one person; ``"Dagster"`` and ``"dagster"`` too.
    """
    return " ".join(str(who or "").split()).casefold()


class DecisionState(StrEnum):
    IN_REVIEW = "IN_REVIEW"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    ARCHIVED = "ARCHIVED"


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


@dataclass(frozen=True)
class Decision:
    """One decision about a model or prompt version; the latest one is the subject's state."""

    id: int
    kind: str
    name: str
    version: str
    state: DecisionState
    actor: str
    comment: str | None
    checklist: dict[str, Any] | None
    ts: datetime
    consumed: bool
    promoted_at: datetime | None
    waivers: dict[str, str] | None = None  # governed exceptions of an approval: {check: reason}

    @classmethod
    def from_row(cls, row: Any) -> Decision:
        return cls(row.id, row.kind, row.name, row.version, DecisionState(row.state), row.actor, row.comment,
                   row.checklist, row.ts, bool(row.consumed), row.promoted_at,
                   dict(row.waivers) if getattr(row, "waivers", None) else None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(state=self.state.value, ts=_iso(self.ts), promoted_at=_iso(self.promoted_at))
        return out


@dataclass(frozen=True)
class Deployment:
    """An alias move: ``kind`` is ``promotion`` or ``rollback``."""

    id: int
    name: str
    alias: str
    version: str
    previous_version: str | None
    actor: str
    reason: str | None
    checklist: dict[str, Any] | None
    ts: datetime
    kind: str

    @classmethod
    def from_row(cls, row: Any) -> Deployment:
        return cls(row.id, row.name, row.alias, row.version, row.previous_version, row.actor, row.reason,
                   row.checklist, row.ts, row.kind)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ts"] = _iso(self.ts)
        return out


@dataclass(frozen=True)
class GateRecord:
    """A gate's verdict on a model version, as the code that computed it recorded it."""

    id: int
    name: str
    version: str
    gate: str
    passed: bool
    values: dict[str, Any]
    thresholds: dict[str, Any]
    failed: list[str]
    details: dict[str, Any]
    actor: str
    ts: datetime

    @classmethod
    def from_row(cls, row: Any) -> GateRecord:
        return cls(row.id, row.name, row.version, row.gate, bool(row.passed), dict(row.values or {}),
                   dict(row.thresholds or {}), list(row.failed or []), dict(row.details or {}), row.actor,
                   row.ts)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ts"] = _iso(self.ts)
        return out


@dataclass(frozen=True)
class Registration:
    """Who registered a model version (normalised), as recorded when it was registered."""

    name: str
    version: str
    registered_by: str
    actor: str
    ts: datetime

    @classmethod
    def from_row(cls, row: Any) -> Registration:
        return cls(row.name, row.version, row.registered_by, row.actor, row.ts)


@dataclass(frozen=True)
class DriftEvent:
    """A drift finding and what was done about it."""

    id: int
    ts: datetime
    source: str
    features: list[str]
    drifted_share: float
    severity: str
    action_taken: str | None
    episode_id: str | None
    details: dict[str, Any]

    @classmethod
    def from_row(cls, row: Any) -> DriftEvent:
        return cls(row.id, row.ts, row.source, list(row.features), row.drifted_share, row.severity,
                   row.action_taken, row.episode_id, dict(row.details or {}))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ts"] = _iso(self.ts)
        return out

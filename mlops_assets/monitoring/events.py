"""Drift events: when a drift report should ask for retraining, and the episode bookkeeping around it.

A *drift episode* starts when the share of drifted columns reaches ``policy.threshold_share`` and ends
when it falls back below it. Each episode asks for retraining once, when it starts; while it lasts,
later reports change nothing. After an episode ends, a new one may not start (nor retrain) until
``cooldown_hours`` have passed since the last event, so a share flapping around the threshold does not
queue retraining after retraining: while cooling down the decision is ``"cooldown"`` and no episode is
opened, so the first report after the cooldown that still shows drift opens it and retrains.

:func:`decide_drift_action` is pure (no Dagster, no database). :func:`record_observation` is the
bookkeeping around it, over an :class:`EpisodeLog`: one event per episode, written when the episode starts,
and marked resolved (a state of its own, not a word inside ``action_taken``) when a later report ends it.
The cooldown therefore counts from the last retraining request. :class:`StoreEpisodeLog` keeps the
episodes in the governance store.

Who runs it: the drift sensor, through :func:`~mlops_assets.monitoring.drift_tick.drift_tick`, for its own
reports and for drift events posted by other services (one episode history for all sources);
:func:`~mlops_assets.monitoring.drift_tick.decisions_for` replays a series of reports through the same
function in memory; the live-performance sensor runs it for its own episodes
(``monitoring.performance``). The alert a decision sends is :mod:`~mlops_assets.monitoring.alerts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, UTC
from typing import Any, Literal, Protocol

from mlops_assets.monitoring.columns import DriftInputError

Action = Literal["retrain", "none", "cooldown"]
Severity = Literal["low", "medium", "high"]


@dataclass(frozen=True)
class DriftPolicy:
    """When drift asks for retraining.

    * ``threshold_share``: an episode is open while the share of drifted columns is ``>=`` this;
    * ``cooldown_hours``: minimum time between the last event and the start of a new episode;
    * ``high_share``: from this share on, severity is ``"high"`` (between the two: ``"medium"``).
    """

    threshold_share: float = 0.3
    cooldown_hours: float = 24.0
    high_share: float = 0.6

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold_share <= 1.0:
            raise DriftInputError("threshold_share", f"must be in (0, 1], got {self.threshold_share}")
        if self.cooldown_hours < 0:
            raise DriftInputError("cooldown_hours", f"must be >= 0, got {self.cooldown_hours}")
        if not self.threshold_share <= self.high_share <= 1.0:
            raise DriftInputError(
                "high_share", f"must be between threshold_share and 1, got {self.high_share}"
            )

    def severity(self, share: float) -> Severity:
        if share >= self.high_share:
            return "high"
        return "medium" if share >= self.threshold_share else "low"


@dataclass(frozen=True)
class DriftObservation:
    """What one drift report says: share of drifted columns, which ones, and when."""

    share_drifted: float
    drifted_columns: tuple[str, ...]
    ts: datetime

    @classmethod
    def from_result(cls, result: Any, ts: datetime | str) -> DriftObservation:
        """From a :class:`~mlops_assets.monitoring.drift.DriftResult` and the report's time."""
        return cls(float(result.share_drifted), tuple(result.drifted_columns), as_utc(ts, "ts"))

    @classmethod
    def from_any(cls, value: DriftObservation | Mapping[str, Any]) -> DriftObservation:
        """From an observation, or a mapping with ``share_drifted`` (or ``share``), ``drifted_columns``
        (or ``drifted_features``) and ``ts``."""
        if isinstance(value, DriftObservation):
            return value
        share = value.get("share_drifted", value.get("share"))
        if share is None:
            raise DriftInputError(
                "current.share_drifted", "is missing", "pass the report's share of drifted columns"
            )
        if "ts" not in value:
            raise DriftInputError("current.ts", "is missing", "pass the report's timestamp")
        columns = value.get("drifted_columns", value.get("drifted_features", ()))
        return cls(float(share), tuple(columns or ()), as_utc(value["ts"], "current.ts"))


@dataclass(frozen=True)
class DriftDecision:
    """What to do about one drift report.

    ``episode_id`` is the episode the report belongs to (the new one when ``new_episode``), or None when
    no episode is open; ``ends_episode`` says the report closes the last event's episode (record it as
    resolved).
    """

    action: Action
    new_episode: bool
    severity: Severity
    reason: str
    episode_id: str | None = None
    ends_episode: bool = False
    share_drifted: float = 0.0
    drifted_columns: tuple[str, ...] = field(default_factory=tuple)

    def to_event(self, observation: DriftObservation) -> dict[str, Any]:
        """The event row to record when ``new_episode`` (and the alert payload for any decision)."""
        return {
            "ts": observation.ts.isoformat(),
            "episode_id": self.episode_id,
            "action": self.action,
            "new_episode": self.new_episode,
            "ends_episode": self.ends_episode,
            "severity": self.severity,
            "share": observation.share_drifted,
            "drifted_columns": list(observation.drifted_columns),
            "resolved": self.ends_episode,
            "reason": self.reason,
        }


def as_utc(value: datetime | date | str, name: str) -> datetime:
    """A timezone-aware UTC datetime; naive values are taken as UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise DriftInputError(name, f"is not an ISO timestamp: {value!r}") from exc
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise DriftInputError(name, f"must be a datetime or ISO string, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _flag(value: Any, name: str) -> bool:
    """A boolean from a bool, 0/1 or a "true"/"false" string (as stored in a table)."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no", ""):
            return False
        raise DriftInputError(name, f"is not a boolean: {value!r}")
    return bool(value)


def episode_id_for(ts: datetime) -> str:
    """A stable episode id from the time the episode starts (``drift-20250102T030405Z``)."""
    return "drift-" + as_utc(ts, "ts").strftime("%Y%m%dT%H%M%SZ")


def decide_drift_action(
    current: DriftObservation | Mapping[str, Any],
    last_event: Mapping[str, Any] | None,
    policy: DriftPolicy | None = None,
) -> DriftDecision:
    """Retrain once per drift episode, never twice within the cooldown (see the module docstring).

    ``last_event`` is the last recorded event (``ts``, ``episode_id``, ``share``, ``resolved``) or None.
    """
    policy = policy or DriftPolicy()
    obs = DriftObservation.from_any(current)
    if not 0.0 <= obs.share_drifted <= 1.0:
        raise DriftInputError("current.share_drifted", f"must be in [0, 1], got {obs.share_drifted}")
    drifting = obs.share_drifted >= policy.threshold_share
    severity = policy.severity(obs.share_drifted)
    share_text = f"share of drifted columns {obs.share_drifted:.2f}"
    common = {
        "severity": severity,
        "share_drifted": obs.share_drifted,
        "drifted_columns": obs.drifted_columns,
    }

    last_ts: datetime | None = None
    open_episode: str | None = None
    if last_event is not None:
        if "ts" not in last_event:
            raise DriftInputError("last_event.ts", "is missing", "pass the recorded event's timestamp")
        last_ts = as_utc(last_event["ts"], "last_event.ts")
        if not _flag(last_event.get("resolved", False), "last_event.resolved"):
            open_episode = last_event.get("episode_id") or episode_id_for(last_ts)
        if obs.ts < last_ts:
            return DriftDecision(
                "none", False, reason=f"report at {obs.ts.isoformat()} is older than the last event "
                f"({last_ts.isoformat()}); ignored", episode_id=open_episode, **common
            )

    if not drifting:
        if open_episode is not None:
            return DriftDecision(
                "none", False, reason=f"{share_text} fell below {policy.threshold_share:.2f}: "
                f"episode {open_episode} ends", episode_id=open_episode, ends_episode=True, **common
            )
        return DriftDecision(
            "none", False, reason=f"{share_text} is below {policy.threshold_share:.2f}", **common
        )

    if open_episode is not None:
        return DriftDecision(
            "none", False, reason=f"{share_text}: episode {open_episode} is still open and already "
            "asked for retraining", episode_id=open_episode, **common
        )
    if last_ts is not None:
        ready_at = last_ts + timedelta(hours=policy.cooldown_hours)
        if obs.ts < ready_at:
            return DriftDecision(
                "cooldown", False, reason=f"{share_text} reaches {policy.threshold_share:.2f}, but the "
                f"cooldown since the last event lasts until {ready_at.isoformat()}", **common
            )
    episode = episode_id_for(obs.ts)
    columns = ", ".join(obs.drifted_columns[:10]) or "none listed"
    return DriftDecision(
        "retrain", True, reason=f"{share_text} reaches {policy.threshold_share:.2f}: episode {episode} "
        f"starts (drifted: {columns})", episode_id=episode, **common
    )


# --- episode bookkeeping: the one code path of the sensor, posted events and the replay ------------------

RETRAIN_REQUESTED = "retraining requested"
ACTION_TEXT: dict[str, str] = {"retrain": RETRAIN_REQUESTED, "cooldown": "cooldown", "none": "none"}
REPORT_SOURCE = "drift_report"


@dataclass(frozen=True)
class EpisodeEvent:
    """The event that opened the latest episode: when (the observation's time), its id, and whether the
    episode has been resolved (a later report fell below the threshold)."""

    id: Any
    ts: datetime
    episode_id: str | None
    share: float
    resolved: bool

    def as_last_event(self) -> dict[str, Any]:
        return {"ts": self.ts, "episode_id": self.episode_id, "share": self.share, "resolved": self.resolved}


class EpisodeLog(Protocol):
    """Where episodes are recorded: the governance store in production (:class:`StoreEpisodeLog`), a list
    in the replay (:class:`~mlops_assets.monitoring.drift_tick.MemoryEpisodeLog`)."""

    def last_episode(self) -> EpisodeEvent | None: ...

    def open_episode(self, observation: DriftObservation, decision: DriftDecision, source: str,
                     event_id: Any | None) -> Any: ...

    def resolve(self, event_id: Any) -> None: ...

    def note(self, event_id: Any, decision: DriftDecision) -> None: ...


@dataclass(frozen=True)
class EpisodeOutcome:
    """What :func:`record_observation` decided and recorded; ``event_id`` is the new episode's event."""

    decision: DriftDecision
    event_id: Any | None = None

    @property
    def retrain(self) -> bool:
        return self.decision.action == "retrain"


def record_observation(log: EpisodeLog, observation: DriftObservation, policy: DriftPolicy, *,
                       source: str = REPORT_SOURCE, event_id: Any | None = None) -> EpisodeOutcome:
    """Decide on one drift observation against the latest episode and record the decision in ``log``.

    * the latest episode ends (``resolve``) when the share falls below the threshold;
    * a new episode opens (``open_episode``) when :func:`decide_drift_action` says so; an observation that
      is already a recorded event (``event_id``, a drift event posted by another service) becomes the
      episode's event, otherwise a new event is recorded;
    * a posted event that opens nothing gets the decision noted on it (``note``), so it is handled once.

    Reports and posted events share one episode history, so the cooldown holds across sources.
    """
    last = log.last_episode()
    decision = decide_drift_action(observation, None if last is None else last.as_last_event(), policy)
    if decision.ends_episode and last is not None:
        log.resolve(last.id)
    if decision.new_episode:
        return EpisodeOutcome(decision, log.open_episode(observation, decision, source, event_id))
    if event_id is not None:
        log.note(event_id, decision)
    return EpisodeOutcome(decision)


class StoreEpisodeLog:
    """An :class:`EpisodeLog` over the governance store (``GovernanceStore``'s drift-event methods).

    The episode's event is the newest one with an ``episode_id`` and ``action_taken ==``
    :data:`RETRAIN_REQUESTED`; its time is the observation's (``details["observed_at"]``), its resolved state
    the store's ``resolved_at`` (never read from ``action_taken``).
    """

    def __init__(self, store: Any, actor: str = "drift_sensor") -> None:
        self.store = store
        self.actor = actor

    def last_episode(self) -> EpisodeEvent | None:
        event = self.store.last_drift_episode(RETRAIN_REQUESTED)
        if event is None:
            return None
        observed = (event.details or {}).get("observed_at") or event.ts
        return EpisodeEvent(event.id, as_utc(observed, "observed_at"), event.episode_id,
                            float(event.drifted_share), event_resolved(event))

    def open_episode(self, observation: DriftObservation, decision: DriftDecision, source: str,
                     event_id: Any | None) -> Any:
        action = ACTION_TEXT[decision.action]
        if event_id is not None:
            self.store.update_drift_event(event_id, action_taken=action, episode_id=decision.episode_id,
                                          details={"observed_at": observation.ts.isoformat(),
                                                   "reason": decision.reason}, actor=self.actor)
            return event_id
        event = self.store.record_drift_event(
            source=source, features=list(observation.drifted_columns), drifted_share=observation.share_drifted,
            severity=decision.severity, action_taken=action, episode_id=decision.episode_id,
            details={"reason": decision.reason, "observed_at": observation.ts.isoformat()}, actor=self.actor)
        return event.id

    def resolve(self, event_id: Any) -> None:
        self.store.update_drift_event(event_id, resolved=True, actor=self.actor)

    def note(self, event_id: Any, decision: DriftDecision) -> None:
        self.store.update_drift_event(event_id, action_taken=ACTION_TEXT[decision.action],
                                      details={"reason": decision.reason}, actor=self.actor)


def event_resolved(event: Any) -> bool:
    """Whether a stored drift event's episode has been resolved (the store's ``resolved_at``)."""
    return bool((getattr(event, "details", None) or {}).get("resolved_at"))

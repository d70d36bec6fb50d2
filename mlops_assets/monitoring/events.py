"""Drift events: when a drift report should ask for retraining, and the alert that says so.

A *drift episode* starts when the share of drifted columns reaches ``policy.threshold_share`` and ends
when it falls back below it. Each episode asks for retraining once, when it starts; while it lasts,
later reports change nothing. After an episode ends, a new one may not start (nor retrain) until
``cooldown_hours`` have passed since the last event, so a share flapping around the threshold does not
queue retraining after retraining: while cooling down the decision is ``"cooldown"`` and no episode is
opened, so the first report after the cooldown that still shows drift opens it and retrains.

Everything here is pure (no Dagster, no database): the sensor passes the latest report and the last
recorded event, and records what the returned :class:`DriftDecision` says: one event row per episode,
written when the episode starts (``decision.to_event(observation)``), and marked ``resolved=True`` (its
``ts`` kept) when a later decision has ``ends_episode``. The cooldown therefore counts from the last
retraining request. :func:`decisions_for` replays a series of reports exactly that way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal, Protocol

import httpx

from mlops_assets.monitoring.columns import DriftInputError

Action = Literal["retrain", "none", "cooldown"]
Severity = Literal["low", "medium", "high"]
ALERT_TIMEOUT_SECONDS = 5.0


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
        return cls(float(result.share_drifted), tuple(result.drifted_columns), _as_utc(ts, "ts"))

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
        return cls(float(share), tuple(columns or ()), _as_utc(value["ts"], "current.ts"))


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


def _as_utc(value: datetime | date | str, name: str) -> datetime:
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
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


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
    return "drift-" + _as_utc(ts, "ts").strftime("%Y%m%dT%H%M%SZ")


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
        last_ts = _as_utc(last_event["ts"], "last_event.ts")
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


class _Logger(Protocol):
    def info(self, msg: str, *args: Any) -> Any: ...

    def warning(self, msg: str, *args: Any) -> Any: ...


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def send_alert(
    event: Mapping[str, Any] | Any,
    webhook_url: str | None,
    logger: _Logger | None = None,
    timeout: float = ALERT_TIMEOUT_SECONDS,
) -> bool:
    """POST ``event`` as JSON to ``webhook_url``; True when the hook answered 2xx.

    Never raises: no URL, a network error or an error status is logged (warning) and gives False, so a
    broken hook cannot fail the run that detected drift. ``event`` may be a mapping or a dataclass;
    datetimes are sent as ISO strings.
    """
    log = logger or logging.getLogger(__name__)
    try:
        body = json.dumps(event, default=_jsonable)
    except (TypeError, ValueError) as exc:
        log.warning(f"drift alert not sent: event is not JSON-serialisable ({exc})")
        return False
    if not webhook_url:
        log.info(f"drift alert not sent (no webhook configured): {body}")
        return False
    try:
        response = httpx.post(
            webhook_url, content=body, headers={"content-type": "application/json"}, timeout=timeout
        )
        response.raise_for_status()
    except Exception as exc:  # noqa: BLE001 - an alert must never fail the caller
        if isinstance(exc, httpx.HTTPStatusError):
            detail = f"HTTP {exc.response.status_code}"
        else:
            detail = f"{type(exc).__name__}: {str(exc).replace(webhook_url, _redact(webhook_url))}"
        log.warning(f"drift alert to {_redact(webhook_url)} failed: {detail}")
        return False
    log.info(f"drift alert sent to {_redact(webhook_url)} (HTTP {response.status_code})")
    return True


def _redact(url: str) -> str:
    """The URL without its path and query (webhook URLs often carry a secret token)."""
    try:
        parsed = httpx.URL(url)
        return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")
    except Exception:  # noqa: BLE001
        return "<webhook>"


def decisions_for(
    observations: Sequence[DriftObservation], policy: DriftPolicy | None = None
) -> list[DriftDecision]:
    """Replay a series of reports through :func:`decide_drift_action`, recording events as a sensor would:
    a new event when an episode starts, ``resolved=True`` on it when the episode ends."""
    last: dict[str, Any] | None = None
    decisions = []
    for obs in observations:
        decision = decide_drift_action(obs, last, policy)
        decisions.append(decision)
        if decision.new_episode:
            last = decision.to_event(obs)
        elif decision.ends_episode and last is not None:
            last = {**last, "resolved": True}
    return decisions

"""Running the drift-episode bookkeeping (:func:`~mlops_assets.monitoring.events.record_observation`).

* :func:`drift_tick`: one evaluation of the drift sensor over the governance store: the drift events
  other services posted (identified by :func:`posted_dedupe_key`) and not handled yet, and the newest
  drift report, in time order;
* :func:`decisions_for`: the same code over a series of reports, with the episodes kept in memory
  (:class:`MemoryEpisodeLog`) instead of the governance store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlops_assets.monitoring.events import (
    REPORT_SOURCE,
    DriftDecision,
    DriftObservation,
    DriftPolicy,
    EpisodeEvent,
    EpisodeOutcome,
    StoreEpisodeLog,
    as_utc,
    record_observation,
)

# --- the drift sensor: its reports and the events posted by other services ------------------------------


def posted_dedupe_key(window_start: Any, window_end: Any, share: float) -> str:
    """The identity of a drift event posted by another service, within its source: (window, share)."""
    def day(value: Any) -> str:
        return "" if value is None else (value.isoformat() if hasattr(value, "isoformat") else str(value))
    return f"{day(window_start)}/{day(window_end)}/{round(float(share), 6)!r}"


def pending_posted_events(store: Any, limit: int = 200) -> list[Any]:
    """Drift events posted by other services that no decision has handled yet, oldest first."""
    events = store.list_drift_events(limit=limit)
    return sorted((e for e in events if e.source != REPORT_SOURCE and not e.action_taken), key=lambda e: e.id)


def drift_tick(store: Any, policy: DriftPolicy, report: DriftObservation | None = None, *,
               actor: str = "drift_sensor") -> list[tuple[DriftObservation, EpisodeOutcome]]:
    """One evaluation of the drift sensor: every posted event not handled yet and the newest drift report
    (if any), in time order, through :func:`record_observation` over the governance store."""
    log = StoreEpisodeLog(store, actor)
    items: list[tuple[DriftObservation, str, Any | None]] = [
        (DriftObservation(float(e.drifted_share), tuple(e.features), as_utc(e.ts, "ts")), e.source, e.id)
        for e in pending_posted_events(store)
    ]
    if report is not None:
        items.append((report, REPORT_SOURCE, None))
    items.sort(key=lambda item: item[0].ts)
    return [(obs, record_observation(log, obs, policy, source=source, event_id=event_id))
            for obs, source, event_id in items]


# --- the replay: the same code path in memory -----------------------------------------------------------


class MemoryEpisodeLog:
    """An :class:`~mlops_assets.monitoring.events.EpisodeLog` in a list (the replay of :func:`decisions_for`
    and tests)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def last_episode(self) -> EpisodeEvent | None:
        for event in reversed(self.events):
            if event["action"] == "retrain" and event["episode_id"]:
                return EpisodeEvent(event["id"], as_utc(event["ts"], "ts"), event["episode_id"],
                                    float(event["share"]), bool(event["resolved"]))
        return None

    def open_episode(self, observation: DriftObservation, decision: DriftDecision, source: str,
                     event_id: Any | None) -> Any:
        event = {**decision.to_event(observation), "id": len(self.events) + 1, "source": source,
                 "resolved": False}
        self.events.append(event)
        return event["id"]

    def resolve(self, event_id: Any) -> None:
        for event in self.events:
            if event["id"] == event_id:
                event["resolved"] = True

    def note(self, event_id: Any, decision: DriftDecision) -> None:
        return None


def decisions_for(
    observations: Sequence[DriftObservation], policy: DriftPolicy | None = None
) -> list[DriftDecision]:
    """Replay a series of reports through :func:`record_observation`, the code the drift sensor runs, with
    the episodes kept in a :class:`MemoryEpisodeLog` instead of the governance store."""
    policy = policy or DriftPolicy()
    log = MemoryEpisodeLog()
    return [record_observation(log, obs, policy).decision for obs in observations]

"""Drift episodes, cooldown and severity; the governance store and the in-memory replay running the same
episode code."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, UTC
from pathlib import Path

import pytest

from mlops_assets.monitoring.columns import DriftInputError
from mlops_assets.monitoring.drift import fast_drift
from mlops_assets.monitoring.drift_tick import decisions_for
from mlops_assets.monitoring.events import (
    DriftObservation,
    DriftPolicy,
    StoreEpisodeLog,
    decide_drift_action,
    event_resolved,
    record_observation,
)
from mlops_assets_tests.monitoring.conftest import make_window

T0 = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)
POLICY = DriftPolicy(threshold_share=0.3, cooldown_hours=24)


def obs(share: float, hours: float = 0.0, columns: tuple[str, ...] = ("cont",)) -> DriftObservation:
    return DriftObservation(share, columns, T0 + timedelta(hours=hours))


def test_one_retraining_per_episode_with_cooldown():
    # hour: 0 calm, 1 drift starts, 2-3 drift goes on, 4 calm (episode ends), 5 drift again inside the
    # cooldown (24 h after the retraining at hour 1), 30 still drifting after the cooldown -> new episode
    series = [obs(0.1, 0), obs(0.4, 1), obs(0.5, 2), obs(0.35, 3), obs(0.2, 4), obs(0.45, 5), obs(0.45, 30),
              obs(0.7, 31)]
    decisions = decisions_for(series, POLICY)
    assert [d.action for d in decisions] == ["none", "retrain", "none", "none", "none", "cooldown", "retrain",
                                             "none"]
    assert [d.new_episode for d in decisions] == [False, True, False, False, False, False, True, False]
    assert [d.ends_episode for d in decisions] == [False, False, False, False, True, False, False, False]
    first, second = decisions[1].episode_id, decisions[6].episode_id
    assert first == "drift-20250303T070000Z" and second == "drift-20250304T120000Z"
    assert decisions[2].episode_id == decisions[3].episode_id == decisions[4].episode_id == first
    assert decisions[5].episode_id is None and "cooldown" in decisions[5].reason
    assert [d.severity for d in decisions] == ["low", "medium", "medium", "medium", "low", "medium", "medium",
                                               "high"]


def test_mapping_inputs_with_iso_timestamps_and_naive_times():
    last = {"ts": "2025-03-03T07:00:00", "episode_id": "drift-x", "share": 0.4, "resolved": False}
    decision = decide_drift_action(
        {"share": 0.1, "drifted_features": [], "ts": "2025-03-03T09:00:00+00:00"}, last, POLICY
    )
    assert decision.action == "none" and decision.ends_episode and decision.episode_id == "drift-x"
    still_open = decide_drift_action(
        {"share": 0.5, "ts": "2025-03-03T09:00:00"}, {**last, "resolved": "false"}
    )
    assert still_open.action == "none" and still_open.episode_id == "drift-x"  # "false" from a table
    resolved = {**last, "resolved": True}
    early = decide_drift_action({"share_drifted": 0.9, "ts": T0 + timedelta(hours=10)}, resolved, POLICY)
    assert early.action == "cooldown" and early.severity == "high"
    late = decide_drift_action({"share_drifted": 0.9, "ts": T0 + timedelta(hours=26)}, resolved, POLICY)
    assert late.action == "retrain" and late.new_episode
    assert decide_drift_action(obs(0.9, 0), resolved, POLICY).action == "none"  # older than the last event


def test_observation_from_a_real_drift_result():
    result = fast_drift(make_window(2000, seed=40), make_window(2000, seed=41, shift=0.6))
    observation = DriftObservation.from_result(result, "2025-03-03T06:00:00Z")
    decision = decide_drift_action(observation, None, DriftPolicy(threshold_share=0.3))
    assert decision.action == "retrain" and set(decision.drifted_columns) == set(result.drifted_columns)
    event = decision.to_event(observation)
    assert event["episode_id"] == "drift-20250303T060000Z" and event["resolved"] is False
    json.dumps(event)


def test_policy_and_input_validation_name_the_field():
    bad = [({"threshold_share": 0}, "threshold_share"), ({"cooldown_hours": -1}, "cooldown_hours"),
           ({"threshold_share": 0.5, "high_share": 0.4}, "high_share")]
    for kwargs, field in bad:
        with pytest.raises(DriftInputError) as excinfo:
            DriftPolicy(**kwargs)
        assert excinfo.value.field == field
    with pytest.raises(DriftInputError) as excinfo:
        decide_drift_action({"share": 0.5}, None)
    assert excinfo.value.field == "current.ts"
    with pytest.raises(DriftInputError) as excinfo:
        decide_drift_action(obs(0.5), {"episode_id": "x"})
    assert excinfo.value.field == "last_event.ts"


def test_the_store_and_the_replay_run_the_same_episode_code(tmp_path: Path) -> None:
    from mlops_assets.governance.store import GovernanceStore

    policy = DriftPolicy(threshold_share=0.5, cooldown_hours=24)
    t0 = datetime(2026, 3, 2, tzinfo=UTC)
    shares = [0.6, 0.7, 0.2, 0.8, 0.9, 0.1, 0.2, 0.7]
    hours = [0, 1, 2, 3, 30, 31, 32, 60]
    observations = [DriftObservation(s, ("f",) if s >= 0.5 else (), t0 + timedelta(hours=h))
                    for s, h in zip(shares, hours, strict=True)]
    replayed = decisions_for(observations, policy)
    store = GovernanceStore(f"sqlite:///{tmp_path / 'gov.db'}", b"k" * 32)
    log = StoreEpisodeLog(store)
    live = [record_observation(log, obs, policy).decision for obs in observations]
    assert [(d.action, d.new_episode, d.ends_episode) for d in live] == \
        [(d.action, d.new_episode, d.ends_episode) for d in replayed]
    assert [d.action for d in live] == ["retrain", "none", "none", "cooldown", "retrain", "none", "none", "retrain"]
    events = store.list_drift_events()
    assert len(events) == 3
    assert [event_resolved(e) for e in events] == [False, True, True]  # newest first

"""The drift report and the drift sensor through Dagster on a temporary MLOPS_HOME: both verdicts side by
side, the profile reused; drift events posted over HTTP (a real uvicorn) deduplicated, under the sensor's
episode and cooldown rules, and refused to the viewer role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import polars as pl
import pytest

from mlops_assets_tests.defs.conftest import build, write_config

pytestmark = pytest.mark.xdist_group("dagster_lifecycle")

KEYS = {
    "viewer-key-0000000000000001": {"owner": "victor", "role": "viewer"},
    "approver-key-00000000000001": {"owner": "bob", "role": "approver"},
}
VIEWER = {"X-API-Key": "viewer-key-0000000000000001"}
APPROVER = {"X-API-Key": "approver-key-00000000000001"}
EVENTS = "/api/v1/ml/lifecycle/drift-events"


def test_drift_report_shows_both_verdicts_and_reuses_the_profile(instance, small_home: Path) -> None:
    from mlops_assets.data.warehouse import Warehouse
    from mlops_assets.settings import get_settings

    defs = build(small_home)
    selection = dg.AssetSelection.groups("ingestion", "features", "monitoring") - dg.AssetSelection.assets(
        "live_performance")  # one partition per day, its own schedule
    result = dg.materialize([*defs.assets, *(defs.asset_checks or [])], resources=defs.resources,
                            selection=selection, instance=instance, raise_on_error=False)
    assert result.success
    md = next(e for e in result.get_asset_materialization_events()
              if e.asset_key.path == ["drift_report"]).materialization.metadata
    assert md["drift_method"].value == "calibrated"
    assert md["share_drifted"].value == md["calibrated_share"].value
    for column in ("p_value", "q_value", "significant"):
        assert column in md["calibrated_per_feature"].value
    for column in ("method", "threshold", "drifted", "wasserstein"):
        assert column in md["evidently_per_feature"].value
    assert md["calibration"].value["profile"] == "built" and md["calibration"].value["null_draws"] == 1000
    s = get_settings()
    assert len(list(s.drift_profiles_dir.glob("*.npz"))) == 1

    again = dg.materialize([*defs.assets], resources=defs.resources, selection=dg.AssetSelection.assets(
        "drift_report"), instance=instance, raise_on_error=False)
    assert again.success
    md2 = again.get_asset_materialization_events()[0].materialization.metadata
    assert md2["calibration"].value["profile"] == "from cache"
    rows = Warehouse(s.warehouse_path).read_table("drift_verdicts")
    assert rows.height == 2
    assert {"calibrated_share", "evidently_share", "calibrated_drift", "evidently_drift"} <= set(rows.columns)
    assert rows["drift_method"].to_list() == ["calibrated", "calibrated"]
    assert rows.filter(pl.col("evidently_share").is_null()).is_empty()


@pytest.fixture()
def api(small_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    from mlops_assets.settings import get_settings
    from mlops_assets_tests.serving.conftest import ThreadedServer
    from serving.management.main import create_app

    monkeypatch.setenv("MLOPS_CONFIG", str(write_config(small_home, {"serving": {"api_keys": KEYS}})))
    get_settings.cache_clear()
    with ThreadedServer(create_app(get_settings())) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_posted_drift_events_start_at_most_one_run_per_episode(instance, small_home: Path,
                                                                 api: httpx.Client) -> None:
    from mlops_assets import stores
    from mlops_assets.defs.monitoring import drift_sensor
    from mlops_assets.monitoring.events import RETRAIN_REQUESTED, event_resolved
    from mlops_assets.settings import get_settings

    event = {"source": "pricing-service", "features": ["vol_20d", "ret_1d"], "drifted_share": 0.8,
             "severity": "high", "window_start": "2026-01-01", "window_end": "2026-03-01"}
    # the lowest role may not post what starts a retraining run
    assert api.post(EVENTS, json=event, headers=VIEWER).status_code == 403
    # the finding: five posts, three of them identical, within one sensor interval
    posts = [event, event, event, {**event, "window_end": "2026-03-02"}, {**event, "drifted_share": 0.9}]
    answers = [api.post(EVENTS, json=body, headers=APPROVER) for body in posts]
    assert [a.status_code for a in answers] == [201, 200, 200, 201, 201]
    assert answers[1].json()["duplicate"] and answers[1].json()["id"] == answers[0].json()["id"]

    defs = build(small_home)
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as ctx:
        runs = drift_sensor(ctx)
    assert isinstance(runs, list) and len(runs) == 1 and runs[0].tags["trigger"] == "drift"
    store = stores.governance_store(get_settings())
    events = store.list_drift_events(source="pricing-service")
    assert len(events) == 3 and all(e.action_taken for e in events)  # each handled once
    assert [e.action_taken for e in events].count(RETRAIN_REQUESTED) == 1
    assert not any(event_resolved(e) for e in events)

    # a later post inside the same episode (and the cooldown) asks for nothing
    assert api.post(EVENTS, json={**event, "drifted_share": 0.95}, headers=APPROVER).status_code == 201
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as ctx:
        assert isinstance(drift_sensor(ctx), dg.SkipReason)

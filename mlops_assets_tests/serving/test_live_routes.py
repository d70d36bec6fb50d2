"""The live-traffic routes of the management API on real uvicorn servers, a real registry, a real
governance store and real prediction-log segments written by a real inference app: as-of (409 on a
broken audit chain), replay (404 for an unknown request id) and champion vs shadow."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from mlops_assets import stores
from mlops_assets.models import promotion
from mlops_assets.models import tags as T
from mlops_assets.models.gates import record_compliance, record_evaluation
from mlops_assets.monitoring.served import SHADOW_PREFIX, list_closed_segments
from mlops_assets.settings import Settings
from mlops_assets_tests.serving.conftest import ThreadedServer, World, copy_version, wait_ready, wait_until

NAME = "live_routes_model"
VIEWER = {"X-API-Key": "viewer-key-0000000000000001"}


@dataclass
class Live:
    url: str
    settings: Settings
    versions: list[str]
    marks: dict[str, datetime]


def _governed(world: World, settings: Settings) -> tuple[list[str], dict[str, datetime]]:
    """v1 and v2 of the session model under ``NAME``, gates recorded; v1 then v2 promoted to production,
    v1 made the challenger (the shadow)."""
    client, store = world.client(), stores.governance_store(settings)
    versions = [copy_version(world, NAME, src, **{T.TAG_EVALUATION_PASSED: "true"}) for src in (world.v1, world.v2)]
    report = SimpleNamespace(passed=True, task_type="binary", checks=[SimpleNamespace(
        name="drift_share", passed=True, value=0.1, threshold=0.5, message="", skipped=False)])
    marks = {"before": datetime.now(UTC)}
    time.sleep(0.02)
    for v in versions:
        record_evaluation(client, store, NAME, v, "test_auc", 0.7, 0.5)
        record_compliance(client, store, NAME, v, report)
        promotion.approve(client, store, NAME, v, reviewer="bob", compliance_required=False)
        promotion.promote(client, store, NAME, v, actor="sensor", reason=f"release {v}", compliance_required=False)
        time.sleep(0.02)
        marks[v] = datetime.now(UTC)
        time.sleep(0.02)
    client.set_registered_model_alias(NAME, "challenger", versions[0])
    return versions, marks


@pytest.fixture(scope="module")
def live(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from serving.management.main import create_app

    settings = world.settings_for(tmp_path_factory.mktemp("live_home"), model={"name": NAME})
    settings.ensure_dirs()
    world.write_snapshot(settings.online_dir)
    versions, marks = _governed(world, settings)
    with ThreadedServer(create_app(settings)) as server:
        yield Live(server.url, settings, versions, marks)


def _get(live: Live, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{live.url}{path}", timeout=60, **{"headers": VIEWER, **kwargs})


def test_replay_and_shadow_routes_on_a_served_request(live: Live, world: World) -> None:
    from serving.inference.main import create_app

    symbol = world.data["symbol"][0]
    with ThreadedServer(create_app(live.settings)) as inference:
        wait_ready(inference.url)
        log = inference.server.config.app.state.service.predlog

        def served_with_shadow() -> str | None:
            r = httpx.post(f"{inference.url}/predict", json={"symbol": symbol}, timeout=10)
            assert r.status_code == 200, r.text
            return r.json()["request_id"] if log.shadow_rows_written > 0 else None

        wait_until(served_with_shadow, timeout=60, interval=0.3, what="shadow rows in the log")
        answer = httpx.post(f"{inference.url}/predict", json={"symbol": symbol}, timeout=10).json()
        request_id = answer["request_id"]
    # the inference app closed its segments at shutdown: the request is in the log
    assert list_closed_segments(live.settings.serving_log_dir, SHADOW_PREFIX)

    r = _get(live, f"/api/v1/ml/replay/{request_id}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reproduced"] is True and body["model_name"] == NAME
    assert body["model_version"] == live.versions[1] == answer["model_version"]
    assert body["tolerance"] is not None and body["rows"] == 1
    assert _get(live, f"/api/v1/ml/replay/{request_id}", headers={}).status_code == 401
    missing = _get(live, "/api/v1/ml/replay/no-such-request-1")
    assert missing.status_code == 404 and missing.json()["field"] == "request_id"

    r = _get(live, f"/api/v1/ml/lifecycle/models/{NAME}/shadow")
    assert r.status_code == 200, r.text
    [pair] = r.json()["live"]
    assert (pair["champion_version"], pair["shadow_version"]) == (live.versions[1], live.versions[0])
    assert pair["pairs"] >= 2 and 0.0 <= pair["agreement"] <= 1.0 and pair["test"] is None
    assert r.json()["measured"] is None  # live_performance has not measured a day yet
    assert _get(live, "/api/v1/ml/lifecycle/models/no_such_model/shadow").status_code == 404


def test_as_of_route_answers_and_a_broken_chain_is_409(live: Live) -> None:
    v1, v2 = live.versions
    path = f"/api/v1/ml/lifecycle/models/{NAME}/as-of"
    before = _get(live, path, params={"t": live.marks["before"].isoformat()})
    assert before.status_code == 200, before.text
    assert before.json()["aliases"]["production"] is None and before.json()["verified"] is True
    first = _get(live, path, params={"t": live.marks[v1].isoformat()}).json()["aliases"]["production"]
    assert (first["version"], first["kind"], first["reason"]) == (v1, "promotion", f"release {v1}")
    assert first["approved_by"] == "bob" and first["approval_decision_id"] is not None
    now = _get(live, path, params={"t": (datetime.now(UTC) + timedelta(days=1)).isoformat()}).json()
    assert now["aliases"]["production"]["version"] == v2 and now["aliases"]["production"]["previous_version"] == v1
    assert _get(live, path, params={"t": "yesterday"}).status_code == 422
    assert _get(live, path, params={"t": live.marks[v1].isoformat()}, headers={}).status_code == 401
    assert _get(live, "/api/v1/ml/lifecycle/models/no_such_model/as-of",
                params={"t": live.marks[v1].isoformat()}).status_code == 404

    store = stores.governance_store(live.settings)
    first_id = min(d.id for d in store.list_deployments(NAME, limit=None))
    db = Path(store.url.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:  # someone with file access rewrites who was in production
        conn.execute("UPDATE deployments SET version = ? WHERE id = ?", (v2, first_id))
    broken = _get(live, path, params={"t": live.marks[v1].isoformat()})
    assert broken.status_code == 409, broken.text
    assert any(f"deployments row {first_id}" in reason for reason in broken.json()["reasons"])

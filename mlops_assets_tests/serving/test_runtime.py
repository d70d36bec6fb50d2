"""Readiness before anything exists, the snapshot/model compatibility rule, and the choice of pair."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from mlops_assets_tests.serving.conftest import ThreadedServer, World, copy_version, wait_until
from serving.inference.loaded import LoadedModel
from serving.inference.state import compatibility, plan

pytestmark = pytest.mark.xdist_group("serving")


def _model(version: str, views: dict[str, str], features: tuple[str, ...] = ("a", "b")) -> LoadedModel:
    return LoadedModel(name="m", version=version, alias="production", variant="production", wrapper=object(),
                       features=features, feature_views=views, task_type="binary", run_id=None)


def _snap(version: str, views: dict[str, str], names: tuple[str, ...] = ("a", "b", "c")) -> SimpleNamespace:
    return SimpleNamespace(version=version, feature_view_versions=views, feature_names=list(names))


def test_compatibility_names_view_versions_and_missing_features() -> None:
    model = _model("3", {"prices": "1.0.0", "vol": "2.1.0"}, ("a", "z"))
    matching = _snap("s1", {"prices": "1.0.0", "vol": "2.1.0", "extra": "9.9.9"}, ("a", "z"))
    assert compatibility(model, matching) == []
    reasons = compatibility(model, _snap("s2", {"prices": "1.1.0"}, ("a",)))
    assert reasons == [
        "feature view 'prices' is 1.1.0 in snapshot s2 but model version 3 was trained on 1.0.0",
        "feature view 'vol' is not in snapshot s2 (model version 3 was trained on vol 2.1.0)",
        "snapshot s2 lacks model feature(s) ['z']",
    ]


def test_plan_prefers_the_newest_compatible_pair() -> None:
    v1, v2 = _model("1", {"p": "1.0.0"}), _model("2", {"p": "2.0.0"})
    live, new = _snap("old", {"p": "1.0.0"}), _snap("new", {"p": "2.0.0"})
    assert plan(v1, v2, live, new)[:2] == (v2, new)                       # both move together
    model, snap, problems, warnings = plan(v1, None, live, new)           # new snapshot, old model: refused
    assert (model, snap, problems) == (v1, live, [])
    assert warnings and "snapshot new for model version 1" in warnings[0]
    model, snap, problems, warnings = plan(v1, v2, live, None)            # new model waits for its snapshot
    assert (model, snap) == (v1, live) and "model version 2 waits" in warnings[-1]
    model, snap, problems, _ = plan(None, v1, None, new)                  # start-up, mismatch: not ready
    assert (model, snap) == (v1, None) and "trained on 1.0.0" in problems[0]
    assert plan(None, v1, None, None)[2] == ["no online feature snapshot has been written yet"]


def test_not_ready_until_model_and_snapshot_exist(world: World, tmp_path: Path) -> None:
    from serving.inference.main import create_app

    settings = world.settings_for(tmp_path / "home", model={"name": "late_model"})
    with ThreadedServer(create_app(settings)) as server:
        url = server.url
        assert httpx.get(f"{url}/health").status_code == 200
        ready = wait_until(lambda: (r := httpx.get(f"{url}/ready")).json()["polled_at"] and r)
        assert ready.status_code == 503
        problems = " ".join(ready.json()["problems"])
        assert "no version of model 'late_model' has alias 'production'" in problems
        assert "no online feature snapshot" in problems
        r = httpx.post(f"{url}/predict", json={"symbol": "AAA"})
        assert r.status_code == 503 and r.json()["detail"].startswith("not ready:")

        copy_version(world, "late_model", world.v1, alias="production")
        still = wait_until(lambda: (r := httpx.get(f"{url}/ready")).json()["model"] and r)
        assert still.status_code == 503 and "no online feature snapshot" in " ".join(still.json()["problems"])
        world.write_snapshot(settings.online_dir)
        wait_until(lambda: httpx.get(f"{url}/ready").status_code == 200)
        assert httpx.post(f"{url}/predict", json={"symbol": "AAA"}).status_code == 200


def test_snapshot_with_other_feature_view_versions_is_refused(world: World, tmp_path: Path) -> None:
    from serving.inference.main import create_app

    settings = world.settings_for(tmp_path / "home")
    world.write_snapshot(settings.online_dir, version="2.0.0")
    with ThreadedServer(create_app(settings)) as server:
        url = server.url
        refused = wait_until(lambda: (r := httpx.get(f"{url}/ready")).json()["polled_at"] and r)
        assert refused.status_code == 503
        assert "feature view 'test_view' is 2.0.0 in snapshot" in " ".join(refused.json()["problems"])
        assert "was trained on 1.0.0" in " ".join(refused.json()["problems"])
        assert httpx.post(f"{url}/predict", json={"symbol": "AAA"}).status_code == 503

        good = world.write_snapshot(settings.online_dir)
        wait_until(lambda: httpx.get(f"{url}/ready").status_code == 200)
        bad = world.write_snapshot(settings.online_dir, version="2.0.0", data=world.data.head(400))
        state = wait_until(lambda: (r := httpx.get(f"{url}/ready").json())["warnings"] and r)
        assert state["ready"] and state["snapshot"]["version"] == good.version
        assert f"refused snapshot {bad.version}" in state["warnings"][0]
        r = httpx.post(f"{url}/predict", json={"symbol": "AAA"})
        assert r.status_code == 200 and r.json()["snapshot_version"] == good.version


def test_a_worker_accepts_connections_only_after_its_first_poll(world: World, tmp_path: Path) -> None:
    """With several workers behind one socket, a starting worker must not take connections (and answer
    503) while its siblings serve: the app's startup waits for the poller's first look at the registry.
    Here that look is held back; until it finishes, nothing listens; the first request answered is a 200."""
    import threading
    import time

    from mlops_assets import stores
    from serving.inference.main import create_app
    from serving.inference.runtime import Runtime, RuntimeConfig

    settings = world.settings_for(tmp_path / "home", model={"name": "first_poll"})
    world.write_snapshot(settings.online_dir)
    copy_version(world, "first_poll", world.v1, alias="production")
    registry_answers = threading.Event()

    def slow_client() -> object:
        registry_answers.wait(30)
        return stores.mlflow_client(settings)

    app = create_app(settings, Runtime(RuntimeConfig.from_settings(settings), slow_client))
    server = ThreadedServer(app)
    server.thread.start()
    try:
        time.sleep(1.5)
        assert not server.server.started, "the worker listened before its first poll finished"
        with pytest.raises(httpx.ConnectError):
            httpx.post(f"{server.url}/predict", json={"symbol": "AAA"}, timeout=5)
        registry_answers.set()
        wait_until(lambda: server.server.started, timeout=30)
        r = httpx.post(f"{server.url}/predict", json={"symbol": "AAA"}, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        registry_answers.set()
        server.__exit__(None, None, None)

"""Promotion under load: the poller swaps the model while clients hammer /predict, with zero failed
requests; then every served request is in the prediction log, read back by read_closed_segments."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from mlops_assets.monitoring.served import read_closed_segments
from mlops_assets_tests.serving.conftest import ThreadedServer, World, copy_version, wait_ready, wait_until

pytestmark = pytest.mark.xdist_group("serving")
CLIENTS = 3


def test_promotion_under_load_has_no_failed_request_and_every_prediction_is_logged(
        world: World, tmp_path: Path) -> None:
    from serving.inference.main import create_app

    settings = world.settings_for(tmp_path / "home", model={"name": "swap_model"})
    world.write_snapshot(settings.online_dir)
    old = copy_version(world, "swap_model", world.v1, alias="production")
    new = copy_version(world, "swap_model", world.v2)
    results: list[tuple[object, str | None, str | None]] = []  # (status, model version, request id)
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post("/predict", json={"instances": [{"symbol": "AAA"}, {"symbol": "BBB"}]})
                    body = r.json()
                    results.append((r.status_code, body.get("model_version"), body.get("request_id")))
                except Exception as exc:  # a dropped connection would be a failed request too
                    results.append((type(exc).__name__, None, None))

    with ThreadedServer(create_app(settings)) as server:
        wait_ready(server.url)
        threads = [threading.Thread(target=hammer) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        wait_until(lambda: len(results) >= 30)
        world.client().set_registered_model_alias("swap_model", "production", new)
        # the poller picks the new alias up at its next poll (fails here if it never does)
        wait_until(lambda: any(v == new for _, v, _ in results[-CLIENTS:]), timeout=30)
        settled = len(results)
        wait_until(lambda: len(results) >= settled + 30)
        stop.set()
        for t in threads:
            t.join()

    statuses = {status for status, _, _ in results}
    assert statuses == {200}, f"failed requests during the swap: {statuses}"
    versions = [v for _, v, _ in results]
    assert versions[0] == old and versions[-1] == new

    logged = read_closed_segments(settings.serving_log_dir)  # the server flushed its buffer at shutdown
    # in the order the server scored them (client threads may record answers out of order under load):
    # once a request was scored by the new version, no later one was scored by the old
    served = logged.sort("ts")["model_version"].to_list()
    first_new = served.index(new)
    assert set(served[:first_new]) == {old} and set(served[first_new:]) == {new}
    assert logged.height == 2 * len(results)
    assert set(logged["request_id"]) == {rid for _, _, rid in results}
    assert set(logged["model_version"]) == {old, new}
    assert set(logged["entity"]) == {"AAA", "BBB"} and set(logged["row"]) == {0, 1}
    assert set(world.features) <= set(logged.columns)
    assert logged.filter(logged["entity"] == "AAA")["f0"].n_unique() == 1  # the online value, as fed

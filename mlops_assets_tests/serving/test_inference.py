"""The inference app on a real uvicorn: enrichment, overrides, batches, and every bad-input case."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from mlops_assets.models.wrapper import load_wrapper
from mlops_assets_tests.serving.conftest import MODEL, World

pytestmark = pytest.mark.xdist_group("serving")


def _post(url: str, body: object | None = None, content: bytes | None = None, **kw) -> httpx.Response:
    if content is not None:
        return httpx.post(f"{url}/predict", content=content, headers={"content-type": "application/json"},
                          **kw)
    return httpx.post(f"{url}/predict", json=body, **kw)


def _reference(world: World, rows: list[dict[str, float]]) -> np.ndarray:
    """P(up) from the registered v1 loaded independently of the app."""
    wrapper = load_wrapper(f"models:/{MODEL}/{world.v1.version}", world.client())
    return wrapper.predict(rows).probabilities


def _online_row(world: World, symbol: str) -> dict[str, float]:
    latest = world.data.filter(world.data["symbol"] == symbol).sort("date").tail(1)
    return {f: float(latest[f][0]) for f in world.features}


def test_single_row_enriched_from_the_online_snapshot(world: World, inference_server) -> None:
    r = _post(inference_server.url, {"symbol": "AAA"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model_name"], body["model_version"], body["alias"], body["variant"]) == (
        MODEL, world.v1.version, "production", "production")
    assert body["snapshot_version"] and body["request_id"]
    expected = _reference(world, [_online_row(world, "AAA")])
    assert body["probabilities"] == pytest.approx(expected.tolist(), abs=1e-6)
    assert body["predictions"] == [int(expected[0] >= 0.5)]


def test_request_features_override_online_values_and_batches(world: World, inference_server) -> None:
    override = {"f0": 3.0, "f1": -2.0}
    full = {f: 0.25 for f in world.features}
    r = _post(inference_server.url, {"instances": [{"symbol": "BBB", "features": override},
                                                    {"features": full}, {"symbol": "CCC"}]})
    assert r.status_code == 200, r.text
    expected = _reference(world, [{**_online_row(world, "BBB"), **override}, full, _online_row(world, "CCC")])
    assert r.json()["probabilities"] == pytest.approx(expected.tolist(), abs=1e-6)
    assert len(r.json()["predictions"]) == 3


def test_unknown_entity_is_404_naming_it(inference_server) -> None:
    r = _post(inference_server.url, {"instances": [{"symbol": "AAA"}, {"symbol": "NOPE"}]})
    assert r.status_code == 404
    assert "'NOPE'" in r.json()["detail"] and "symbol" in r.json()["detail"]


def _locs(r: httpx.Response) -> list[list]:
    assert r.status_code == 422, r.text
    return [item["loc"] for item in r.json()["detail"]]


def test_missing_extra_and_mistyped_features_name_each_field(world: World, inference_server) -> None:
    url = inference_server.url
    partial = {f: 1.0 for f in world.features[:4]}
    assert _locs(_post(url, {"features": partial})) == [["body", "features", f] for f in world.features[4:]]
    mistyped = {"bogus": 1.0, "f0": "high", "f1": True, "f2": None}
    assert _locs(_post(url, {"symbol": "AAA", "features": mistyped})) == [
        ["body", "features", "bogus"], ["body", "features", "f0"], ["body", "features", "f1"],
        ["body", "features", "f2"]]
    assert _locs(_post(url, {"symbol": 42, "colour": "red"})) == [["body", "colour"], ["body", "symbol"]]
    assert _locs(_post(url, {"instances": [{"symbol": "AAA"}, {"features": []}], "x": 1})) == [
        ["body", "x"], ["body", "instances", 1, "features"]]
    assert _locs(_post(url, content=b"{not json")) == [["body"]]
    assert _locs(_post(url, [1, 2])) == [["body"]]
    assert _locs(_post(url, {"instances": []})) == [["body", "instances"]]


def test_oversized_body_and_batch_are_413(world: World, inference_server) -> None:
    url = inference_server.url
    r = _post(url, {"instances": [{"symbol": "AAA"}] * 101})  # max_batch is 100 in the test config
    assert r.status_code == 413 and "max_batch" in r.json()["detail"]
    big = b'{"symbol": "AAA", "features": {"f0": 1.0}, "pad": "' + b"x" * 30_000 + b'"}'
    r = _post(url, content=big)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]

    def chunks():  # no content-length: the limit is enforced while streaming
        for _ in range(30):
            yield b" " * 1000

    r = httpx.post(f"{url}/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_health_ready_metrics_and_invoke_without_llm(world: World, inference_server) -> None:
    url = inference_server.url
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{url}/ready").json()
    assert ready["ready"] and ready["model"]["version"] == world.v1.version
    assert ready["snapshot"]["feature_view_versions"] == {"test_view": "1.0.0"}
    assert _post(url, {"symbol": "AAA"}).status_code == 200
    assert _post(url, {"symbol": "NOPE"}).status_code == 404
    text = httpx.get(f"{url}/metrics").text
    assert f'mlops_serving_predictions_total{{model_name="{MODEL}",model_version="{world.v1.version}"' in text
    labels = f'endpoint="/predict",method="POST",model_version="{world.v1.version}",status="404"'
    assert f"mlops_serving_requests_total{{{labels}}} 1.0" in text
    assert "mlops_serving_request_latency_seconds_bucket" in text
    r = httpx.post(f"{url}/invoke", json={"symbol": "AAA"})
    assert r.status_code == 503 and "market_narrative_llm" in r.json()["detail"]


def test_fastapi_route_gives_the_same_answers_as_the_fast_path(world: World, inference_server) -> None:
    from fastapi.testclient import TestClient

    from mlops_assets_tests.serving.conftest import wait_until
    from serving.inference.main import create_app

    with TestClient(create_app(world.settings).fastapi) as client:
        wait_until(lambda: client.get("/ready").status_code == 200)
        direct = client.post("/predict", json={"symbol": "DDD"})
        bad = client.post("/predict", json={"symbol": "DDD", "features": {"f0": "x"}})
        assert "/predict" in client.get("/openapi.json").json()["paths"]
    fast = _post(inference_server.url, {"symbol": "DDD"})
    assert direct.status_code == fast.status_code == 200
    assert direct.json()["probabilities"] == fast.json()["probabilities"]
    assert bad.status_code == 422 and bad.json() == _post(inference_server.url, {"symbol": "DDD",
                                                                              "features": {"f0": "x"}}).json()


def test_challenger_gets_its_share_of_traffic_and_the_variant_is_logged(world: World, tmp_path) -> None:
    from mlops_assets.monitoring.served import read_closed_segments
    from mlops_assets_tests.serving.conftest import ThreadedServer, copy_version, wait_ready
    from serving.inference.main import create_app

    settings = world.settings_for(tmp_path / "home", model={"name": "ab_model"},
                                  challenger_traffic_percent=30)
    world.write_snapshot(settings.online_dir)
    production = copy_version(world, "ab_model", world.v1, alias="production")
    challenger = copy_version(world, "ab_model", world.v2, alias="challenger")
    with ThreadedServer(create_app(settings)) as server:
        ready = wait_ready(server.url)
        assert ready["challenger"]["version"] == challenger
        with httpx.Client(base_url=server.url) as client:
            answers = [client.post("/predict", json={"symbol": "AAA"}).json() for _ in range(300)]
    variants = [(a["variant"], a["model_version"], a["alias"]) for a in answers]
    assert set(variants) == {("production", production, "production"),
                             ("challenger", challenger, "challenger")}
    share = sum(v[0] == "challenger" for v in variants) / len(variants)
    assert 0.2 < share < 0.4  # 30 % configured; 300 draws put it in this band with overwhelming odds
    logged = read_closed_segments(settings.serving_log_dir)
    assert logged.group_by("variant", "model_version").len().sort("variant").rows() == sorted(
        [("challenger", challenger, sum(v[0] == "challenger" for v in variants)),
         ("production", production, sum(v[0] == "production" for v in variants))])

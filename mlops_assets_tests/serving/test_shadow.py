"""Shadow scoring in the prediction-log writer process, on a real registry, real uvicorn servers and
real segments: the response never changes, the shadow rows carry the served request ids, and a shadow
model that cannot load costs no served row. Plus the champion-vs-shadow comparison on those rows."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest

from mlops_assets.monitoring.served import SHADOW_PREFIX, list_closed_segments, read_closed_segments
from mlops_assets.monitoring.shadow import compare_shadow
from mlops_assets_tests.serving.conftest import ThreadedServer, World, copy_version, wait_ready, wait_until
from serving.inference.predlog import PredictionLog
from serving.inference.predlog_format import LogRecord
from serving.inference.predlog_shadow import ShadowConfig

NAME = "shadow_direction"


@pytest.fixture(scope="module")
def versions(world: World) -> tuple[str, str]:
    """``NAME``: production = a copy of v1, challenger = a copy of v2 (this module's own model)."""
    champion = copy_version(world, NAME, world.v1, alias="production")
    challenger = copy_version(world, NAME, world.v2, alias="challenger")
    return champion, challenger


def _server(world: World, home: Path, shadow_alias: str) -> ThreadedServer:
    from serving.inference.main import create_app

    settings = world.settings_for(home, model={"name": NAME}, shadow_alias=shadow_alias)
    settings.ensure_dirs()
    world.write_snapshot(settings.online_dir)
    return ThreadedServer(create_app(settings))


def _bodies(world: World) -> list[bytes]:
    symbols = world.data["symbol"].unique().sort().to_list()
    row = world.data.row(0, named=True)
    given = {f: float(row[f]) for f in world.features}
    import orjson

    return [orjson.dumps(b) for b in (
        {"symbol": symbols[0]},
        {"symbol": symbols[1], "features": {world.features[0]: 0.25}},
        {"features": given},
        {"instances": [{"symbol": symbols[2]}, {"symbol": symbols[3], "features": {world.features[1]: -1.0}},
                       {"features": given}]},
    )]


def _post_all(url: str, bodies: list[bytes]) -> list[bytes]:
    out = []
    for body in bodies:
        r = httpx.post(f"{url}/predict", content=body, headers={"content-type": "application/json"}, timeout=10)
        assert r.status_code == 200, r.text
        out.append(r.content)
    return out


def _rid(body: bytes) -> str:
    found = re.search(rb'"request_id":"([^"]+)"', body)
    assert found is not None
    return found.group(1).decode()


def test_shadow_scoring_leaves_responses_byte_identical_and_logs_shadow_rows(
        world: World, versions: tuple[str, str], tmp_path: Path) -> None:
    champion, challenger = versions
    bodies = _bodies(world)
    on_home, off_home = tmp_path / "on", tmp_path / "off"
    with _server(world, on_home, "challenger") as server:
        wait_ready(server.url)
        log = server.server.config.app.state.service.predlog
        # the writer loads the shadow model in its own poller: serve until it reports shadow rows
        wait_until(lambda: _post_all(server.url, bodies[:1]) and log.shadow_rows_written > 0, timeout=60,
                   interval=0.2, what="the writer process scores shadow rows")
        assert log.shadow_version == challenger
        with_shadow = _post_all(server.url, bodies)
        ids = [_rid(b) for b in with_shadow]
        on_dir = log.log_dir

        def shadow_ids() -> set[str]:
            frame = read_closed_segments(on_dir, prefix=SHADOW_PREFIX, features=False)
            return set(frame["request_id"].to_list()) & set(ids)

        wait_until(lambda: shadow_ids() == set(ids), timeout=30, what="shadow rows of every request")
    with _server(world, off_home, "") as server:
        wait_ready(server.url)
        without = _post_all(server.url, bodies)
        assert server.server.config.app.state.service.predlog.shadow is None
        off_dir = server.server.config.app.state.service.predlog.log_dir
    # the same bytes, but for the request id each server drew
    for on, off in zip(with_shadow, without):
        assert on.replace(_rid(on).encode(), b"ID") == off.replace(_rid(off).encode(), b"ID")
    assert list_closed_segments(off_dir, SHADOW_PREFIX) == []

    served = read_closed_segments(on_dir, features=False).filter(pl.col("request_id").is_in(ids))
    shadow = read_closed_segments(on_dir, prefix=SHADOW_PREFIX, features=False).filter(
        pl.col("request_id").is_in(ids))
    key = ["request_id", "row"]
    assert served.sort(key)[key].equals(shadow.sort(key)[key])  # one shadow row per served row
    assert set(served["model_version"]) == {champion} and set(served["variant"]) == {"production"}
    assert set(shadow["model_version"]) == {challenger} and set(shadow["variant"]) == {"shadow"}
    joined = served.join(shadow, on=key, suffix="_shadow")
    assert joined["feature_values"].to_list() == joined["feature_values_shadow"].to_list()  # same vectors
    # the shadow predictions are the challenger's own on those vectors
    from mlops_assets.models.wrapper import load_wrapper

    wrapper = load_wrapper(f"models:/{NAME}/{challenger}", world.client())
    x = np.array(joined["feature_values_shadow"].to_list(), dtype=np.float32)
    expected = wrapper.predict(x)
    assert np.array_equal(np.asarray(expected.predictions, dtype=float), joined["prediction_shadow"].to_numpy())
    p = np.asarray(expected.probabilities, dtype=float).reshape(len(x), -1)
    p = p.max(axis=1) if p.shape[1] > 1 else p[:, 0]
    assert np.allclose(p, joined["probability_shadow"].to_numpy(), atol=1e-5, rtol=1e-4)
    # request_features: what each row's request supplied (null for a pure online lookup)
    by_id = {r: served.filter(pl.col("request_id") == r).sort("row")["request_features"].to_list() for r in ids}
    assert by_id[ids[0]] == [None]
    assert by_id[ids[1]] == [[world.features[0]]]
    assert by_id[ids[2]] == [list(world.features)]
    assert by_id[ids[3]] == [None, [world.features[1]], list(world.features)]
    # champion against shadow on identical requests: labels agree where they agree
    [result] = compare_shadow(served, shadow)
    agree = float((joined["prediction"] == joined["prediction_shadow"]).mean())
    assert result.pairs == joined.height and result.agreement == pytest.approx(agree)
    assert result.test is None  # no outcomes joined: no paired test yet


def _records(features: list[str], n: int) -> list[LogRecord]:
    rng = np.random.default_rng(0)
    return [LogRecord(f"r-{i}", time.time(), 0.5, "m", "1", "production", "production", "snap", ["S0"],
                      tuple(features), rng.normal(size=(1, len(features))).astype(np.float32), np.array([1]),
                      np.array([0.7], dtype=np.float32)) for i in range(n)]


def test_a_shadow_model_that_cannot_load_loses_no_served_record(world: World, tmp_path: Path) -> None:
    client = world.client()
    client.create_registered_model("shadow_broken")
    version = client.create_model_version("shadow_broken", source=str(tmp_path / "no-such-model"))
    client.set_registered_model_alias("shadow_broken", "challenger", version.version)
    config = ShadowConfig("shadow_broken", "challenger", world.settings.mlflow_tracking_uri, 0.1)
    log = PredictionLog(tmp_path / "log", flush_rows=10_000, flush_seconds=0.2, shadow=config).start()
    sent = 0

    def load_failed() -> bool:
        nonlocal sent
        for record in _records(world.features, 3):
            log.append(record)
            sent += 1
        return "cannot load shadow_broken version" in (log.shadow_problem or "")

    # the writer keeps writing every segment while its poller finds the version and fails to load it
    wait_until(load_failed, timeout=90, interval=0.3, what="the writer reports the load failure")
    for record in _records(world.features, 5):
        log.append(record)
        sent += 1
    log.close()
    served = read_closed_segments(tmp_path / "log", features=False)
    assert served.height == sent and log.rows_written == sent and log.rows_dropped == 0
    assert list_closed_segments(tmp_path / "log", SHADOW_PREFIX) == []
    assert log.shadow_rows_written == 0 and log.shadow_rows_missing == sent


def test_mcnemar_on_labelled_pairs_matches_the_exact_binomial_and_agreement_counts_all_pairs() -> None:
    from scipy import stats

    from mlops_assets.monitoring.live_metrics import champion_vs_shadow

    n = 40
    champion = [1.0] * 30 + [0.0] * 10
    shadow_pred = [1.0] * 20 + [0.0] * 10 + [0.0] * 8 + [1.0] * 2
    label = [1.0] * 20 + [1.0] * 6 + [0.0] * 4 + [0.0] * 8 + [1.0] * 2
    status = ["labelled"] * 36 + ["pending"] * 4
    outcomes = pl.DataFrame({"request_id": [f"r{i}" for i in range(n)], "row": [0] * n, "model_name": ["m"] * n,
                             "model_version": ["1"] * n, "variant": ["production"] * n, "prediction": champion,
                             "probability": [None] * n, "label": [y if s == "labelled" else None
                                                                  for y, s in zip(label, status)],
                             "label_status": status}, schema_overrides={"probability": pl.Float64})
    shadow = pl.DataFrame({"request_id": [f"r{i}" for i in range(n)], "row": [0] * n, "model_version": ["2"] * n,
                           "prediction": shadow_pred, "probability": [None] * n},
                          schema_overrides={"probability": pl.Float64})
    [c] = champion_vs_shadow(outcomes, shadow)
    agree = np.mean(np.array(champion) == np.array(shadow_pred))
    assert (c.champion_version, c.shadow_version, c.pairs, c.labelled) == ("1", "2", 40, 36)
    assert c.agreement == pytest.approx(agree)
    y, a, s = (np.array(v[:36]) for v in (label, champion, shadow_pred))
    b, cc = int(((a == y) & (s != y)).sum()), int(((a != y) & (s == y)).sum())
    assert (c.test.champion_right_shadow_wrong, c.test.champion_wrong_shadow_right) == (b, cc)
    assert c.test.exact and c.test.p_value == pytest.approx(stats.binomtest(min(b, cc), b + cc, 0.5).pvalue)
    assert c.champion_accuracy == pytest.approx(float((a == y).mean()))
    assert champion_vs_shadow(outcomes, shadow.clear()) == []

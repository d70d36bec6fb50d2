"""Replay of served requests: real snapshots published under a retention policy, a real model version
in a temporary MLflow SQLite registry, and requests scored by the inference app's own code (payload
parsing, online lookup, the model's fast path) and logged by the real prediction-log writer."""

from __future__ import annotations

import os

os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest
import typer
import yaml
from typer.testing import CliRunner

from mlops_assets.errors import NotFound
from mlops_assets.features.online import OnlineFeatureStore, online_retention, write_online_snapshot
from mlops_assets.features.views import FeatureDef, FeatureView
from mlops_assets.models.lightning import TrainConfig
from mlops_assets.models.registration import train_and_register
from mlops_assets.monitoring.replay import Replayer, replay
from mlops_assets.monitoring.served import list_closed_segments
from mlops_assets.settings import Settings, get_settings, load_settings
from mlops_assets.stores import mlflow_client
from mlops_assets_tests.models.synthetic import make_dataset
from serving.inference.loaded import LoadedModel, OnlineVectors, load_model
from serving.inference.payload import build_matrix, parse_payload
from serving.inference.predlog import PredictionLog
from serving.inference.predlog_format import LogRecord

MODEL = "replay_direction"
SYMBOLS = [f"S{i:02d}" for i in range(8)]


def snapshot_frame(features: list[str], seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(len(SYMBOLS), len(features)))
    values[3, 2] = np.nan  # a missing value the model imputes
    return pl.DataFrame({"symbol": SYMBOLS, "date": [date(2024, 1, 2)] * len(SYMBOLS),
                         **{f: values[:, j] for j, f in enumerate(features)}})


def view(features: list[str], version: str = "1.0.0") -> FeatureView:
    return FeatureView(name="replay_view", version=version, owner="team:test", description="test features",
                       features=tuple(FeatureDef(f, pl.col("close"), f) for f in features))


@dataclass
class World:
    settings: Settings
    config_path: Path
    features: list[str]
    version: str

    def client(self) -> Any:
        return mlflow_client(self.settings)

    def publish(self, seed: int, view_version: str = "1.0.0") -> str:
        policy = online_retention(self.settings.features.online_retention_versions,
                                  self.settings.features.online_retention_days)
        return write_online_snapshot([snapshot_frame(self.features, seed)], [view(self.features, view_version)],
                                     self.settings.online_dir, policy).version


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    home = tmp_path_factory.mktemp("replay_home")
    config_path = home / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "home": str(home), "model": {"name": MODEL},
        "features": {"online_retention_versions": 2, "online_retention_days": 0}}))
    settings = load_settings(env={}, config_path=config_path)
    settings.ensure_dirs()
    data, features = make_dataset(n_rows=600, n_features=6, seed=0)
    config = TrainConfig(hidden_sizes=(8,), dropout=0.0, lr=5e-3, batch_size=256, max_epochs=2, patience=1)
    registered = train_and_register(data, features, config, settings.mlflow_tracking_uri, "replay-tests", MODEL,
                                    {"registered_by": "pytest", "feature_views": {"replay_view": "1.0.0"}},
                                    artifact_location=str(settings.artifacts_dir))
    return World(settings, config_path, features, str(registered.version))


def serve(log: PredictionLog, model: LoadedModel, store: OnlineFeatureStore, request_id: str,
          body: dict[str, Any]) -> tuple[np.ndarray, Any]:
    """What the inference app's ``score`` does with a /predict body, logged by the real writer path."""
    payload = parse_payload(orjson.dumps(body), 100)
    x, entities = build_matrix(payload, model.features, model.index, OnlineVectors(store, model.features),
                               "symbol", store.version)
    predictions, probabilities = model.predict(x)
    log.append(LogRecord(request_id, time.time(), 0.2, model.name, model.version, model.alias, model.variant,
                         store.version, entities, model.features, x, predictions, probabilities))
    return predictions, probabilities


@pytest.fixture(scope="module")
def served(world: World) -> dict[str, Any]:
    """Three requests on the first snapshot: one entity, a batch of three (one row without an entity),
    and one on a second snapshot under new feature-view versions."""
    client = world.client()
    model = load_model(client, MODEL, client.get_model_version(MODEL, world.version), "production", "production")
    first = world.publish(seed=1)
    log = PredictionLog(world.settings.serving_log_dir, flush_rows=1000, flush_seconds=60)
    store = OnlineFeatureStore(world.settings.online_dir).load()
    serve(log, model, store, "req-one", {"symbol": "S01"})
    request_values = {f: 0.25 * i for i, f in enumerate(world.features)}
    serve(log, model, store, "req-batch", {"instances": [{"symbol": "S03"}, {"features": request_values},
                                                        {"symbol": "S05"}]})
    log.flush()
    second = world.publish(seed=2, view_version="1.1.0")
    assert store.maybe_reload() is True
    serve(log, model, store, "req-second", {"symbol": "S01"})
    log.close()
    return {"first": first, "second": second, "fast_path": model.fast_path}


def test_a_served_request_is_reproduced(world: World, served: dict[str, Any]) -> None:
    one = replay("req-one", world.settings, world.client())
    assert one.reproduced, one.describe()
    assert (one.snapshot_version, one.model_version, one.rows) == (served["first"], world.version, 1)
    assert one.feature_view_versions == {"replay_view": "1.0.0"}
    assert one.max_probability_diff <= 1e-5 and "REPRODUCED" in one.describe()
    batch = replay("req-batch", world.settings, world.client())
    assert batch.reproduced and batch.rows == 3 and batch.request_supplied_rows == [1], batch.describe()
    second = replay("req-second", world.settings, world.client())
    assert second.reproduced and second.snapshot_version == served["second"]
    assert second.feature_view_versions == {"replay_view": "1.1.0"}


def test_scoring_like_the_app_reproduces_bitwise(world: World, served: dict[str, Any]) -> None:
    compiled: dict[int, LoadedModel] = {}

    def app_scorer(wrapper: Any, x: np.ndarray) -> Any:  # the app's own scoring of the registry model
        model = compiled.get(id(wrapper))
        if model is None:
            model = compiled[id(wrapper)] = LoadedModel(MODEL, world.version, "production", "production", wrapper,
                                                        tuple(wrapper.features), {}, "binary", None)
        return model.predict(x)

    replayer = Replayer.from_settings(world.settings, world.client(), scorer=app_scorer, exact=True)
    for request_id in ("req-one", "req-batch", "req-second"):
        result = replayer.replay(request_id)
        assert result.reproduced and result.bitwise, result.describe()
        assert result.tolerance is None and result.max_probability_diff == 0.0
    assert next(iter(compiled.values())).fast_path == served["fast_path"]


def test_an_unknown_request_id_is_not_found(world: World, served: dict[str, Any]) -> None:
    with pytest.raises(NotFound) as missing:
        replay("req-never-served", world.settings, world.client())
    assert missing.value.field == "request_id" and "req-never-served" in str(missing.value)


@contextmanager
def tampered(log_dir: Path, request_id: str, change: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """The closed segment holding ``request_id`` rewritten with ``change`` applied to its rows, and
    put back as it was afterwards."""
    for path in list_closed_segments(log_dir):
        original = path.read_bytes()
        frame = pl.read_parquet(path)
        if request_id not in frame["request_id"].to_list():
            continue
        rows = frame.to_dicts()
        for row in rows:
            if row["request_id"] == request_id:
                change(row)
        pl.DataFrame(rows, schema=frame.schema).write_parquet(path)
        try:
            yield
        finally:
            path.write_bytes(original)
        return
    raise AssertionError(f"{request_id} is in no segment")


def nudge_feature(row: dict[str, Any]) -> None:
    row["feature_values"][4] += 1e-6


def shift_probability(row: dict[str, Any]) -> None:
    row["probability"] += 0.01


def test_a_tampered_log_value_is_a_named_mismatch_and_the_cli_exits_non_zero(
        world: World, served: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    log_dir = world.settings.serving_log_dir
    with tampered(log_dir, "req-second", nudge_feature):
        result = replay("req-second", world.settings, world.client())
    assert not result.reproduced
    fields = [(m.field, m.row) for m in result.mismatches]
    assert ("f4", 0) in fields, result.describe()
    assert all(f in ("f4", "prediction", "probability") for f, _ in fields)
    assert "MISMATCH" in result.describe() and "f4" in result.describe()

    with tampered(log_dir, "req-batch", shift_probability):
        batch = replay("req-batch", world.settings, world.client())
    assert sorted(m.row for m in batch.mismatches if m.field == "probability") == [0, 1, 2]
    assert not any(m.field.startswith("f") for m in batch.mismatches)  # the features are intact

    monkeypatch.setenv("MLOPS_CONFIG", str(world.config_path))
    # the environment wins over the config file: pin what an earlier test in this process may have exported
    monkeypatch.setenv("MLOPS_HOME", str(world.settings.home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.settings.mlflow_tracking_uri)
    get_settings.cache_clear()
    from mlops_assets.cli.replay import replay_command

    app = typer.Typer()
    app.command("replay")(replay_command)
    app.command("noop")(lambda: None)
    try:
        runner = CliRunner()
        with tampered(log_dir, "req-batch", shift_probability):
            bad = runner.invoke(app, ["replay", "req-batch", "--json"])
        assert bad.exit_code == 1 and json.loads(bad.stdout)["reproduced"] is False, bad.output
        unknown = runner.invoke(app, ["replay", "req-nope"])
        assert unknown.exit_code != 0 and "req-nope" in unknown.output  # the handler's NotFound code
        good = runner.invoke(app, ["replay", "req-batch"])
        assert good.exit_code == 0 and "REPRODUCED" in good.stdout, good.output
    finally:
        get_settings.cache_clear()


def test_outside_the_retention_policy_replay_refuses_naming_it(world: World, served: dict[str, Any]) -> None:
    """Runs last: it prunes the first snapshot (the policy keeps 2 versions, 0 days)."""
    third = world.publish(seed=3)
    assert third not in (served["first"], served["second"])
    with pytest.raises(NotFound) as refused:
        replay("req-one", world.settings, world.client())
    assert refused.value.field == "snapshot_version"
    message = str(refused.value)
    assert served["first"] in message and "pruned by the retention policy" in message
    assert "features.online_retention_versions=2" in message and "features.online_retention_days=0" in message
    assert replay("req-second", world.settings, world.client()).reproduced  # the second is still retained

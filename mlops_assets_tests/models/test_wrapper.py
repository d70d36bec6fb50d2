"""The ModelWrapper protocol, the wrapper registry and load_wrapper's choice of implementation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from mlops_assets.models.lightning import PytorchLightningWrapper
from mlops_assets.models.wrapper import (
    WRAPPER_IMPORT_PATHS,
    ModelInputError,
    ModelWrapper,
    Prediction,
    PyfuncWrapper,
    classification_or_regression_metrics,
    load_wrapper,
    resolve_wrapper_name,
    wrapper_class,
)
from mlops_assets.errors import InvalidInput
from mlops_assets_tests.models.conftest import MODEL_NAME
from mlops_assets_tests.monitoring.test_replay import MODEL as REPLAY_MODEL
from mlops_assets_tests.monitoring.test_replay import World, served, world  # noqa: F401 - the replay's fixtures


class _NoPredict:
    def train(self, data, config): ...

    def evaluate(self, data, config): ...

    def load(self, model_uri): ...


def test_implementations_satisfy_the_protocol():
    assert isinstance(PytorchLightningWrapper(), ModelWrapper)
    assert isinstance(PyfuncWrapper(), ModelWrapper)
    assert not isinstance(_NoPredict(), ModelWrapper)
    with pytest.raises(NotImplementedError, match="import_external_model"):
        PyfuncWrapper().train(None, None)


def test_wrapper_registry_names_the_llm_plug_in_and_refuses_unknown_names():
    assert WRAPPER_IMPORT_PATHS["llm"] == "mlops_assets.llm.chain:LangGraphWrapper"
    assert wrapper_class("lightning") is PytorchLightningWrapper
    with pytest.raises(ModelInputError, match="WRAPPER_IMPORT_PATHS") as err:
        wrapper_class("sklearn-pipeline")
    assert err.value.field == "wrapper" and isinstance(err.value, InvalidInput)
    assert str(err.value).startswith("wrapper: unknown wrapper 'sklearn-pipeline'")
    WRAPPER_IMPORT_PATHS["custom-test"] = "mlops_assets.models.wrapper:PyfuncWrapper"
    try:
        assert wrapper_class("custom-test") is PyfuncWrapper
    finally:
        WRAPPER_IMPORT_PATHS.pop("custom-test")


def test_load_wrapper_picks_lightning_from_tag_or_model_config(store, registered, dataset):
    client = store.client()
    version_uri = f"models:/{MODEL_NAME}/{registered.version}"
    assert resolve_wrapper_name(version_uri, client) == "lightning"  # the version's wrapper tag
    # the logged model itself (no registry version, no tags): model_config["wrapper"] decides
    assert resolve_wrapper_name(registered.logged_model_uri) == "lightning"
    wrapper = load_wrapper(version_uri, client)
    assert isinstance(wrapper, PytorchLightningWrapper)
    data, features = dataset
    assert list(wrapper.features) == features
    rows = data.select(features).tail(10)
    by_logged = load_wrapper(registered.logged_model_uri)
    np.testing.assert_allclose(wrapper.predict(rows.to_dicts()).probabilities,
                               by_logged.predict(rows.to_numpy()).probabilities, rtol=1e-6)
    # evaluate works on a loaded model too, and agrees with what training logged
    metrics = wrapper.evaluate(data)
    assert metrics["test_auc"] == pytest.approx(registered.metrics["test_auc"], abs=1e-6)


def test_metrics_match_plain_reference():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + 0.7 * rng.random(200), 0, 1)
    m = classification_or_regression_metrics("binary", y, p, prefix="test_")
    assert m["test_accuracy"] == pytest.approx(np.mean((p >= 0.5) == y))
    assert m["test_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    eps = 1e-7
    pc = np.clip(p, eps, 1 - eps)
    assert m["test_log_loss"] == pytest.approx(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
    r = classification_or_regression_metrics("regression", p, p + 0.1)
    assert r["mse"] == pytest.approx(0.01) and r["mae"] == pytest.approx(0.1)
    with pytest.raises(ModelInputError):
        classification_or_regression_metrics("ranking", y, p)


def test_prediction_records_are_json_friendly():
    pred = Prediction(np.array([1, 0]), np.array([0.8, 0.1], dtype=np.float32))
    rows = pred.to_records()
    assert rows[0]["prediction"] == 1 and rows[0]["probability"] == pytest.approx(0.8)
    assert Prediction(np.array([0.5])).to_records() == [{"prediction": 0.5}]


@pytest.mark.parametrize(
    ("raw", "task_type", "labels", "probs"),
    [
        (np.array([[0.8, 0.2], [0.3, 0.7]]), "binary", [0, 1], [0.2, 0.7]),
        (np.array([0.2, 0.7]), "binary", [0, 1], [0.2, 0.7]),
        (np.array([1.5, -0.2]), "regression", [1.5, -0.2], None),
        (np.array([0, 1, 1]), "binary", [0, 1, 1], None),  # labels only
        (np.array([[0.1, 0.2, 0.7]]), "multiclass", [2], [[0.1, 0.2, 0.7]]),
    ],
)
def test_pyfunc_outputs_are_interpreted(raw, task_type, labels, probs):
    pred = PyfuncWrapper(task_type=task_type)._interpret(raw)
    np.testing.assert_allclose(pred.predictions, labels)
    if probs is None:
        assert pred.probabilities is None
    else:
        np.testing.assert_allclose(pred.probabilities, probs)


def test_pyfunc_output_frame_in_our_convention():
    import pandas as pd

    frame = pd.DataFrame({"prediction": [1, 0], "probability": [0.9, 0.4]})
    pred = PyfuncWrapper()._interpret(frame)
    assert pred.predictions.tolist() == [1, 0] and pred.probabilities.tolist() == [0.9, 0.4]


def test_a_version_naming_an_unknown_wrapper_is_invalid_input_over_http_and_the_cli(
        world: World, served: dict, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811 - fixtures
    """The ModelInputError of ``load_wrapper`` (an InvalidInput) is answered by type, on the replay tests'
    served requests: the management app's explanation route says 422 with its field and reasons, and
    ``mlops replay`` exits 2 with one line."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from mlops_assets.cli import app
    from mlops_assets.models.tags import TAG_WRAPPER
    from mlops_assets.monitoring.replay import replay
    from mlops_assets.settings import get_settings
    from serving.management.main import create_app

    client = world.client()
    original = client.get_model_version(REPLAY_MODEL, world.version).tags[TAG_WRAPPER]
    client.set_model_version_tag(REPLAY_MODEL, world.version, TAG_WRAPPER, "sklearn-pipeline")
    monkeypatch.setenv("MLOPS_CONFIG", str(world.config_path))
    monkeypatch.setenv("MLOPS_HOME", str(world.settings.home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.settings.mlflow_tracking_uri)
    get_settings.cache_clear()
    try:
        with TestClient(create_app(world.settings)) as api:
            r = api.get("/api/v1/ml/evaluation/explanations/req-one")
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["field"] == "wrapper" and "'sklearn-pipeline'" in body["reasons"][0], body
        assert "WRAPPER_IMPORT_PATHS" in body["detail"]

        result = CliRunner().invoke(app, ["replay", "req-one"])
        assert result.exit_code == 2, result.output  # InvalidInput's exit code
        assert result.stderr.startswith("error: wrapper: unknown wrapper 'sklearn-pipeline'"), result.stderr
        assert "Traceback" not in result.output
    finally:
        client.set_model_version_tag(REPLAY_MODEL, world.version, TAG_WRAPPER, original)
        get_settings.cache_clear()
    assert replay("req-one", world.settings, client).reproduced

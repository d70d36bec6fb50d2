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
from mlops_assets_tests.models.conftest import MODEL_NAME


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
    assert err.value.field == "wrapper"
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

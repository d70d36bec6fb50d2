"""The Lightning wrapper: reproducibility, task types, input forms, errors, and the fast path."""

from __future__ import annotations

import time

import mlflow
import numpy as np
import polars as pl
import pytest

from mlops_assets.models.lightning import PytorchLightningWrapper, TrainConfig
from mlops_assets.models.registry import ensure_experiment
from mlops_assets.models.wrapper import ModelInputError, ModelWrapper, Prediction
from mlops_assets_tests.models.synthetic import make_dataset

SMALL = TrainConfig(hidden_sizes=(16,), batch_size=128, max_epochs=2, patience=2, lr=5e-3)


@pytest.fixture(scope="module")
def small() -> tuple[pl.DataFrame, list[str]]:
    return make_dataset(n_rows=1200, n_features=4, seed=1)


def _train(store, data, features, config, experiment="lightning-unit"):
    wrapper = PytorchLightningWrapper(features, tracking_uri=store.tracking_uri, experiment_name=experiment,
                                      log_checkpoints=False)
    result = wrapper.train(data, config)
    return wrapper, result


def test_same_seed_same_metrics_and_weights(store, small):
    data, features = small
    w1, r1 = _train(store, data, features, SMALL)
    w2, r2 = _train(store, data, features, SMALL)
    w3, r3 = _train(store, data, features, SMALL.model_copy(update={"seed": 7}))
    assert r1.run_id != r2.run_id
    assert r1.loss_curve == r2.loss_curve
    x = data.select(features).to_numpy()
    assert np.array_equal(w1.predict_array(x), w2.predict_array(x))
    assert r3.loss_curve != r1.loss_curve
    assert not np.array_equal(w3.predict_array(x), w1.predict_array(x))  # another seed, another model
    # each call without an active run gets its own finished run with one val_loss per epoch
    client = store.client()
    run = client.get_run(r1.run_id)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(r1.run_id, "val_loss")) == r1.epochs_trained == 2
    assert isinstance(w1, ModelWrapper)


def test_predict_accepts_records_arrays_frames_and_imputes_missing(store, small):
    data, features = small
    wrapper, _ = _train(store, data, features, SMALL)
    rows = data.select(features).head(8)
    by_array = wrapper.predict(rows.to_numpy())
    assert isinstance(by_array, Prediction)
    assert by_array.probabilities.shape == (8,) and by_array.predictions.shape == (8,)
    assert set(np.unique(by_array.predictions)) <= {0, 1}
    expected = by_array.probabilities
    np.testing.assert_allclose(wrapper.predict(rows.to_dicts()).probabilities, expected, rtol=1e-6)
    np.testing.assert_allclose(wrapper.predict(rows).probabilities, expected, rtol=1e-6)
    np.testing.assert_allclose(wrapper.predict(rows.to_pandas()).probabilities, expected, rtol=1e-6)
    one = wrapper.predict(rows.to_dicts()[0])
    assert one.probabilities[0] == pytest.approx(float(by_array.probabilities[0]), rel=1e-6)
    # a missing feature is imputed with the training mean, i.e. equals sending the mean
    mean_row = dict(zip(features, wrapper.predictor.spec.mean))
    partial = {k: v for k, v in rows.to_dicts()[0].items() if k != features[0]}
    filled = {**partial, features[0]: mean_row[features[0]]}
    assert wrapper.predict([partial]).probabilities[0] == pytest.approx(
        float(wrapper.predict([filled]).probabilities[0]), rel=1e-5)
    assert wrapper.predict_array(rows.to_numpy()[0]).shape == (1,)
    with pytest.raises(ValueError, match="expected shape"):
        wrapper.predict_array(np.zeros((2, len(features) + 1)))


def test_single_row_predict_is_fast(store, small):
    data, features = small
    wrapper, _ = _train(store, data, features, SMALL)
    row = data.select(features).to_numpy()[:1].astype(np.float32)
    wrapper.predict_array(row)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        wrapper.predict_array(row)
    per_call_ms = (time.perf_counter() - start) / n * 1000
    assert per_call_ms < 2.0, f"{per_call_ms:.3f} ms per single-row predict"


def test_multiclass_and_regression(store):
    data, features = make_dataset(n_rows=1200, n_features=4, seed=2)
    # three classes from the forward return terciles
    cuts = data["fwd_return"].quantile(1 / 3), data["fwd_return"].quantile(2 / 3)
    data = data.with_columns(
        pl.when(pl.col("fwd_return") < cuts[0]).then(0).when(pl.col("fwd_return") < cuts[1]).then(1)
        .otherwise(2).cast(pl.Int32).alias("tercile"))
    with mlflow.start_run(experiment_id=ensure_experiment(store.client(), "lightning-unit")):
        multi, _ = _train(store, data, features, SMALL.model_copy(update={"task_type": "multiclass",
                                                                           "target": "tercile"}))
        metrics = multi.evaluate(data)
    assert {"test_accuracy", "test_log_loss", "baseline_test_accuracy"} <= set(metrics)
    assert metrics["test_log_loss"] < metrics["baseline_test_log_loss"]
    pred = multi.predict(data.select(features).head(5).to_dicts())
    assert pred.probabilities.shape == (5, 3)
    np.testing.assert_allclose(pred.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert set(pred.predictions) <= {0, 1, 2}

    with mlflow.start_run(experiment_id=ensure_experiment(store.client(), "lightning-unit")):
        reg, _ = _train(store, data, features, SMALL.model_copy(update={"task_type": "regression",
                                                                         "max_epochs": 4}))
        metrics = reg.evaluate(data)
    assert metrics["test_mse"] < metrics["baseline_test_mse"]
    pred = reg.predict(data.select(features).head(5))
    assert pred.probabilities is None and pred.predictions.dtype.kind == "f"
    assert abs(float(np.mean(pred.predictions))) < 0.05  # back on the scale of fwd_return


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.drop("f1"), "f1"),
        (lambda d: d.drop("split"), "split"),
        (lambda d: d.with_columns(pl.col("f0").cast(pl.String)), "f0"),
        (lambda d: d.with_columns(pl.lit(2).cast(pl.Int32).alias("label")), "label"),
        (lambda d: d.filter(pl.col("split") != "validation"), "split"),
        (lambda d: d.with_columns(pl.lit("holdout").alias("split")), "split"),
    ],
)
def test_bad_datasets_name_the_field(store, small, mutate, field):
    data, features = small
    wrapper = PytorchLightningWrapper(features, tracking_uri=store.tracking_uri,
                                      experiment_name="lightning-unit")
    with pytest.raises(ModelInputError) as err:
        wrapper.train(mutate(data), SMALL)
    assert err.value.field == field


def test_config_is_validated():
    with pytest.raises(ValueError, match="dropout"):
        TrainConfig(dropout=1.5)
    with pytest.raises(ValueError, match="task_type"):
        TrainConfig(task_type="ranking")
    assert TrainConfig.model_validate({"hidden_sizes": [8, 4]}).hidden_sizes == (8, 4)

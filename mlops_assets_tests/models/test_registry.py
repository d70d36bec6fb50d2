"""train_and_register end to end, the evaluation gate, alias mapping and external-model import."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mlops_assets.models import tags as T
from mlops_assets.models.registration import (
    apply_gate,
    dataset_fingerprint,
    import_external_model,
    train_and_register,
)
from mlops_assets.models.registry import (
    RegistryError,
    ensure_experiment,
    get_version_by_alias,
    model_uri,
    resolve_alias,
)
from mlops_assets.models.wrapper import PyfuncWrapper, load_wrapper
from mlops_assets_tests.models.conftest import EXPERIMENT, LINEAGE, MODEL_NAME

EXTERNAL_MODEL_FILE = Path(__file__).with_name("external_logit.py")


def test_registered_version_has_challenger_alias_and_lineage(store, registered, dataset):
    client = store.client()
    version = client.get_model_version(MODEL_NAME, registered.version)
    assert str(get_version_by_alias(client, MODEL_NAME, "challenger").version) == registered.version
    assert version.run_id == registered.run_id
    _, features = dataset
    expected = {
        T.TAG_REGISTERED_BY: "pytest",
        T.TAG_FEATURE_VIEWS: json.dumps(LINEAGE["feature_views"], sort_keys=True),
        T.TAG_FEATURES: json.dumps(features),
        T.TAG_DATASET_FINGERPRINT: "sha256:abc123",
        T.TAG_DAGSTER_RUN_ID: "run-0001",
        T.TAG_SOURCE: "trained",
        T.TAG_TASK_TYPE: "binary",
        T.TAG_WRAPPER: "lightning",
    }
    run = client.get_run(registered.run_id)
    for key, value in expected.items():
        assert version.tags.get(key) == value, key
        assert run.data.tags.get(key) == value, key
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert run.info.status == "FINISHED"
    # the artifacts went where they were asked to, not into ./mlruns
    assert run.info.artifact_uri.startswith(f"file://{store.artifact_location}") or \
        run.info.artifact_uri.startswith(store.artifact_location)


def test_run_has_params_per_epoch_history_test_metrics_and_checkpoint(store, registered, config):
    client = store.client()
    run = client.get_run(registered.run_id)
    assert run.data.params["lr"] == str(config.lr)
    assert run.data.params["max_epochs"] == "3"
    epochs = len(registered.loss_curve)
    assert 1 <= epochs <= 3
    for key in ("train_loss", "val_loss", "val_auc"):
        history = client.get_metric_history(registered.run_id, key)
        assert len(history) == epochs, key
    curve_val = [row["val_loss"] for row in registered.loss_curve]
    history_val = [m.value for m in sorted(client.get_metric_history(registered.run_id, "val_loss"),
                                          key=lambda m: m.step)]
    assert np.allclose(curve_val, history_val)
    for key in ("test_accuracy", "test_auc", "test_log_loss", "baseline_test_accuracy"):
        assert key in run.data.metrics and key in registered.metrics
        assert run.data.metrics[key] == pytest.approx(registered.metrics[key])
    artifacts = [a.path for a in client.list_artifacts(registered.run_id)]
    assert any(path.startswith("best-epoch=") for path in artifacts), artifacts


def test_trained_model_beats_naive_baseline(registered):
    m = registered.metrics
    assert m["test_auc"] > 0.75
    assert m["test_accuracy"] > m["baseline_test_accuracy"] + 0.1
    assert m["test_log_loss"] < m["baseline_test_log_loss"] - 0.05


def test_every_training_registers_a_new_version_and_moves_challenger(store, registered, dataset, config):
    data, features = dataset
    second = train_and_register(data.gather_every(2), features, config.model_copy(update={"max_epochs": 1}),
                                store.tracking_uri, EXPERIMENT, MODEL_NAME,
                                {"registered_by": "pytest", "custom_note": {"why": "retrain"}},
                                artifact_location=store.artifact_location)
    client = store.client()
    assert int(second.version) > int(registered.version)
    first = client.get_model_version(MODEL_NAME, registered.version)  # still registered, evaluation on record
    assert first.run_id == registered.run_id and first.tags[T.TAG_SOURCE] == "trained"
    assert str(get_version_by_alias(client, MODEL_NAME, "challenger").version) == second.version
    tags = client.get_model_version(MODEL_NAME, second.version).tags
    assert tags["lineage.custom_note"] == '{"why": "retrain"}'
    assert tags[T.TAG_DATASET_FINGERPRINT] == dataset_fingerprint(data.gather_every(2))


def test_gate_pass_and_fail_are_tagged(store, registered):
    client = store.client()
    ok = apply_gate(client, MODEL_NAME, registered.version, "test_auc", registered.metrics["test_auc"], 0.6)
    assert ok.passed
    tags = client.get_model_version(MODEL_NAME, registered.version).tags
    assert tags[T.TAG_EVALUATION_PASSED] == "true"
    assert tags[T.TAG_EVALUATION_METRIC] == "test_auc"
    assert float(tags[T.TAG_EVALUATION_VALUE]) == pytest.approx(registered.metrics["test_auc"])
    assert T.TAG_REJECTED not in tags

    bad = apply_gate(client, MODEL_NAME, registered.version, "test_log_loss", 0.69, 0.5,
                     higher_is_better=False)
    assert not bad.passed and "0.69" in bad.reason
    tags = client.get_model_version(MODEL_NAME, registered.version).tags
    assert tags[T.TAG_EVALUATION_PASSED] == "false"
    assert tags[T.TAG_REJECTED] == "true"
    assert "test_log_loss" in tags[T.TAG_REJECTED_REASON]
    # apply_gate never moves aliases other than challenger
    assert get_version_by_alias(client, MODEL_NAME, "staging") is None


def test_gate_fails_on_missing_value(store, registered):
    result = apply_gate(store.client(), MODEL_NAME, registered.version, "test_auc", float("nan"), 0.5)
    assert not result.passed and math.isnan(result.value) and "missing" in result.reason


@pytest.mark.parametrize(
    ("stage", "expected"),
    [("Production", "prod-v"), ("production", "prod-v"), ("PROD-V", "prod-v"), ("Staging", "staging"),
     (" staging ", "staging"), ("challenger", "challenger")],
)
def test_resolve_alias_maps_stages_case_insensitively(stage, expected):
    assert resolve_alias(stage, {"production": "prod-v"}) == expected


@pytest.mark.parametrize("stage", ["Archived", "None", "", "qa"])
def test_resolve_alias_refuses_unknown_stages(stage):
    with pytest.raises(RegistryError) as err:
        resolve_alias(stage)
    assert err.value.field == "MLFLOW_MODEL_STAGE" and "production" in str(err.value)


def test_model_uri_and_missing_alias(store):
    assert model_uri("m", "production") == "models:/m@production"
    with pytest.raises(RegistryError):
        model_uri("m", "")
    assert get_version_by_alias(store.client(), "no-such-model", "production") is None


@pytest.mark.filterwarnings("ignore:.*An input example was not provided")
def test_import_external_pyfunc_model_goes_through_pyfunc_wrapper(store, dataset, tmp_path):
    data, features = dataset
    train = data.filter(data["split"] == "train")
    clf = LogisticRegression().fit(train.select(features).to_numpy(), train["label"].to_numpy())
    coefficients = tmp_path / "coefficients.json"
    coefficients.write_text(json.dumps({"features": features, "coef": clf.coef_[0].tolist(),
                                        "intercept": float(clf.intercept_[0])}))
    example = data.select(features).head(5).to_pandas()
    signature = mlflow.models.infer_signature(example, clf.predict_proba(example.values))
    with mlflow.start_run(experiment_id=ensure_experiment(store.client(), "another-team")) as run:
        mlflow.pyfunc.log_model(name="clf", python_model=str(EXTERNAL_MODEL_FILE),
                                artifacts={"coefficients": str(coefficients)},
                                signature=signature,
                                pip_requirements=["mlflow", "numpy", "pandas"])
    client = store.client()
    imported = import_external_model(client, f"runs:/{run.info.run_id}/clf", MODEL_NAME, "alice",
                                     description="baseline from the research team")
    version = client.get_model_version(MODEL_NAME, imported.version)
    assert version.tags[T.TAG_SOURCE] == "imported"
    assert version.tags[T.TAG_REGISTERED_BY] == "alice"
    assert version.tags[T.TAG_WRAPPER] == "pyfunc"
    assert version.tags[T.TAG_IMPORTED_FROM] == f"runs:/{run.info.run_id}/clf"
    assert json.loads(version.tags[T.TAG_FEATURES]) == features
    assert str(get_version_by_alias(client, MODEL_NAME, "challenger").version) == imported.version

    wrapper = load_wrapper(model_uri(MODEL_NAME, "challenger"), client)
    assert isinstance(wrapper, PyfuncWrapper)
    rows = data.select(features).tail(20)
    pred = wrapper.predict(rows.to_dicts())
    expected = clf.predict_proba(rows.to_numpy())[:, 1]
    assert np.allclose(pred.probabilities, expected)
    assert np.array_equal(pred.predictions, (expected >= 0.5).astype(int))
    assert np.allclose(wrapper.predict(rows.to_numpy()).probabilities, expected)
    metrics = wrapper.evaluate(data)
    assert metrics["test_auc"] > 0.75

    # a registered version of another model is imported by copy (models:/name/version)
    again = import_external_model(client, f"models:/{MODEL_NAME}/{imported.version}", "copy-target", "bob")
    copied = client.get_model_version("copy-target", again.version)
    assert copied.source == version.source and copied.tags[T.TAG_SOURCE] == "imported"


def test_import_refuses_unreadable_source(store):
    with pytest.raises(RegistryError) as err:
        import_external_model(store.client(), "runs:/0123456789abcdef/model", MODEL_NAME, "alice")
    assert err.value.field == "source_model_uri"

"""Optuna tuning: each trial is a nested MLflow run, the parent records the best params."""

from __future__ import annotations

import pytest

from mlops_assets.models.lightning import TrainConfig
from mlops_assets.models.registry import RegistryError
from mlops_assets.models.tuning import run_tuning, suggest_config, tune
from mlops_assets_tests.models.synthetic import make_dataset


def test_two_trials_make_nested_runs_and_parent_logs_best(store):
    data, features = make_dataset(n_rows=1000, n_features=4, seed=5)
    base = TrainConfig(max_epochs=2, patience=1, batch_size=128)
    result = run_tuning(data, features, base, n_trials=2, tracking_uri=store.tracking_uri,
                        experiment_name="tuning-test", artifact_location=store.artifact_location)
    client = store.client()
    parent = client.get_run(result.parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                   filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert len(children) == 2 == len(result.trials)
    assert {c.info.run_id for c in children} == {t["run_id"] for t in result.trials}
    child_losses = {c.info.run_id: c.data.metrics["val_loss"] for c in children}
    assert result.best_value == pytest.approx(min(child_losses.values()))
    assert parent.data.metrics["best_val_loss"] == pytest.approx(result.best_value)
    assert parent.data.params["lr"] == str(result.best_config.lr)
    assert parent.data.params["max_epochs"] == "2"  # the base config is kept for what is not searched
    best_child = client.get_run(parent.data.tags["optuna.best_trial_run_id"])
    assert best_child.data.params["lr"] == str(result.best_config.lr)
    assert result.best_config.max_epochs == 2 and result.best_config != base


def test_tune_returns_a_config_and_validates_arguments(store):
    data, features = make_dataset(n_rows=600, n_features=4, seed=6)
    base = TrainConfig(max_epochs=1, batch_size=256)
    space = {"lr": ("float", 1e-3, 1e-2, True)}
    best = tune(data, features, base, n_trials=1, tracking_uri=store.tracking_uri,
                experiment_name="tuning test 2", search_space=space)
    # no artifact_location given: a SQLite store keeps artifacts next to the database, not ./mlruns
    experiment = store.client().get_experiment_by_name("tuning test 2")
    assert experiment.artifact_location.endswith("mlartifacts/tuning-test-2")
    assert str(store.root) in experiment.artifact_location
    assert isinstance(best, TrainConfig) and 1e-3 <= best.lr <= 1e-2
    assert best.hidden_sizes == base.hidden_sizes
    with pytest.raises(RegistryError, match="tracking_uri"):
        tune(data, features, base, n_trials=1)
    with pytest.raises(RegistryError, match="n_trials"):
        run_tuning(data, features, base, n_trials=0, tracking_uri=store.tracking_uri, experiment_name="x")


def test_suggest_config_rejects_unknown_fields():
    import optuna

    trial = optuna.create_study().ask()
    with pytest.raises(RegistryError, match="not a TrainConfig field"):
        suggest_config(trial, TrainConfig(), {"momentum": ("float", 0.1, 0.9, False)})
    cfg = suggest_config(trial, TrainConfig(), {"hidden_sizes": ("categorical", ["64-32"])})
    assert cfg.hidden_sizes == (64, 32)

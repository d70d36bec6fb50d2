"""The walk-forward gate's MLflow side on a real SQLite store: the version's own hyper-parameters,
Lightning fold runs nested under the version's run (not counted as trials), the trial count over
the experiment and its tuning experiment, and a version that cannot be retrained."""

from __future__ import annotations

import datetime as dt

import mlflow
import numpy as np
import polars as pl
import pytest

from mlops_assets.evaluation.trials import (
    TAG_WALK_FORWARD_FOLD,
    count_trials,
    lightning_fold_trainer,
    version_train_config,
)
from mlops_assets.evaluation.walk_forward import walk_forward_predictions

FEATURES = ["f_signal", "f_noise"]


def _dataset(n_dates: int = 120, n_symbols: int = 4) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    n = n_dates * n_symbols
    x = rng.normal(size=(n, 2))
    fwd = 0.01 * (x[:, 0] + rng.normal(size=n))
    dates = [dt.date(2021, 1, 1) + dt.timedelta(days=i) for i in range(n_dates)]
    split = ["train"] * int(n_dates * 0.6) + ["validation"] * int(n_dates * 0.2)
    split += ["test"] * (n_dates - len(split))
    return pl.DataFrame({
        "symbol": [f"S{j}" for _ in range(n_dates) for j in range(n_symbols)],
        "date": [d for d in dates for _ in range(n_symbols)],
        "split": [s for s in split for _ in range(n_symbols)],
        "f_signal": x[:, 0], "f_noise": x[:, 1], "fwd_return": fwd, "label": (fwd > 0).astype(np.int32),
    })


def test_fold_runs_use_the_versions_config_and_do_not_count_as_trials(mlops_home) -> None:
    from mlops_assets import stores
    from mlops_assets.models.lightning import TrainConfig
    from mlops_assets.models.registration import Lineage, train_and_register
    from mlops_assets.settings import get_settings

    s = get_settings()
    data = _dataset()
    config = TrainConfig(hidden_sizes=(8,), max_epochs=2, batch_size=64, lr=3e-3, seed=7)
    reg = train_and_register(data, FEATURES, config, tracking_uri=s.mlflow_tracking_uri, experiment_name="exp",
                             model_name="m", lineage=Lineage(registered_by="test"))
    client = stores.mlflow_client(s)
    own = version_train_config(client, reg.run_id)
    assert own.model_dump(exclude={"target"}) == config.model_dump(exclude={"target"})
    assert own.target == "label"  # the run logs the resolved label column
    assert version_train_config(client, reg.run_id, max_epochs=1).max_epochs == 1

    # a tuning experiment: the parent is not a trial, its two nested trials are
    tuning = client.create_experiment("exp-tuning")
    parent = client.create_run(tuning).info.run_id
    for i in range(2):
        run = client.create_run(tuning, tags={"optuna.trial": str(i), "mlflow.parentRunId": parent})
        client.log_metric(run.info.run_id, "val_loss", 0.69)
    before = count_trials(client, "exp")
    assert before.n_trials == 3 and before.sharpe_variance is None and "2 tuning trial(s)" in before.source

    experiment_id = client.get_run(reg.run_id).info.experiment_id
    trainer = lightning_fold_trainer(client, FEATURES, config, tracking_uri=s.mlflow_tracking_uri,
                                     parent_run_id=reg.run_id, experiment_id=experiment_id)
    wf = walk_forward_predictions(data, FEATURES, trainer, n_folds=2, horizon=1, embargo=2)
    scores = wf.predictions.get_column("score").to_numpy()
    assert wf.predictions.height == 60 * 4 and np.all((scores >= 0) & (scores <= 1))
    fold_runs = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_WALK_FORWARD_FOLD}` != ''")
    assert sorted(r.data.tags[TAG_WALK_FORWARD_FOLD] for r in fold_runs) == ["0", "1"]
    assert all(r.data.tags["mlflow.parentRunId"] == reg.run_id for r in fold_runs)
    assert all(r.data.params["hidden_sizes"] == "(8,)" for r in fold_runs)
    assert count_trials(client, "exp").n_trials == 3  # the fold runs are not trials

    # logged evaluation Sharpe ratios give the variance across trials (annualised -> per day)
    client.log_metric(reg.run_id, "eval_wf_sharpe", 1.0)
    other = client.create_run(experiment_id).info.run_id
    client.log_metric(other, "eval_backtest_sharpe", 3.0)
    trials = count_trials(client, "exp")
    assert trials.n_trials == 4 and trials.n_with_sharpe == 2
    assert trials.sharpe_variance == pytest.approx(np.var([1 / 252 ** 0.5, 3 / 252 ** 0.5], ddof=1))


def test_a_run_without_training_params_cannot_be_retrained(mlops_home) -> None:
    from mlops_assets import stores
    from mlops_assets.settings import get_settings

    client = stores.mlflow_client(get_settings())
    exp = client.create_experiment("imported")
    run = client.create_run(exp).info.run_id
    assert version_train_config(client, run) is None
    assert version_train_config(client, None) is None
    assert mlflow.get_tracking_uri().startswith("sqlite")

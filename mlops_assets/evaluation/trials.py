"""What the walk-forward evaluation reads from MLflow: the number of trials an experiment ran (for
the Deflated Sharpe Ratio), a version's own hyper-parameters, and the Lightning fold trainer.

Every training run of the experiment counts as a trial, and so does every tuning trial (the nested
``trial-*`` runs, tagged ``optuna.trial``, of ``f"{experiment_name}-tuning"``); the tuning parent
runs and the walk-forward fold runs (tagged :data:`TAG_WALK_FORWARD_FOLD`) do not. The variance of
the trials' Sharpe ratios comes from runs that logged an evaluation Sharpe (``eval_wf_sharpe``,
else ``eval_backtest_sharpe``, both annualised); tuning trials log only validation losses, so with
fewer than two such runs the assessment falls back to the null sampling variance ``1 / T``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from mlops_assets.evaluation.assess import TrialsInfo
from mlops_assets.evaluation.skill import TRADING_DAYS
from mlops_assets.evaluation.walk_forward import TrainFn

TAG_WALK_FORWARD_FOLD = "mlops.walk_forward_fold"
TAG_OPTUNA_TRIAL = "optuna.trial"
SHARPE_METRICS = ("eval_wf_sharpe", "eval_backtest_sharpe")


def _all_runs(client: Any, experiment_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def count_trials(client: Any, experiment_name: str) -> TrialsInfo:
    """N and the per-period variance of the trials' Sharpe ratios (see the module docs)."""
    training, tuning, sharpes = 0, 0, []
    for name, is_tuning in ((experiment_name, False), (f"{experiment_name}-tuning", True)):
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            continue
        for run in _all_runs(client, experiment.experiment_id):
            tags = run.data.tags
            if TAG_WALK_FORWARD_FOLD in tags:
                continue
            if is_tuning and TAG_OPTUNA_TRIAL not in tags:
                continue  # the tuning parent run is not a trial
            if is_tuning:
                tuning += 1
            else:
                training += 1
            value = next((run.data.metrics[m] for m in SHARPE_METRICS if m in run.data.metrics), None)
            if value is not None and math.isfinite(value):
                sharpes.append(value / math.sqrt(TRADING_DAYS))
    n = training + tuning
    source = f"{training} training run(s) in '{experiment_name}' + {tuning} tuning trial(s)"
    variance = float(np.var(sharpes, ddof=1)) if len(sharpes) >= 2 else None
    if variance is not None:
        source += f"; Sharpe variance from the {len(sharpes)} runs with a logged evaluation Sharpe"
    return TrialsInfo(max(1, n), variance, source, len(sharpes))


def version_train_config(client: Any, run_id: str | None, *, max_epochs: int | None = None) -> Any | None:
    """The version's own ``TrainConfig`` from its run's params, or None when the run has none (a
    version imported by URI). ``max_epochs`` caps the epochs (cheap fold training)."""
    from mlops_assets.models.lightning import TrainConfig

    if not run_id:
        return None
    params = client.get_run(run_id).data.params
    fields = {}
    for name in TrainConfig.model_fields:
        if name not in params:
            continue
        raw = params[name]
        try:
            fields[name] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            fields[name] = None if raw == "None" else raw
    if "hidden_sizes" not in fields or "lr" not in fields:
        return None
    config = TrainConfig.model_validate(fields)
    if max_epochs is not None and config.max_epochs > max_epochs:
        config = config.model_copy(update={"max_epochs": max_epochs})
    return config


def lightning_fold_trainer(client: Any, features: Sequence[str], config: Any, *, tracking_uri: str,
                           parent_run_id: str, experiment_id: str) -> TrainFn:
    """A ``train_fn`` for :func:`walk_forward_predictions`: each fold trains the platform's
    Lightning wrapper with ``config`` in its own MLflow run, nested under the version's run and
    tagged :data:`TAG_WALK_FORWARD_FOLD` (so it is not counted as a trial), checkpoints not uploaded."""
    import mlflow

    from mlops_assets.models.lightning import PytorchLightningWrapper

    def train(frame: pl.DataFrame, fold: int):
        wrapper = PytorchLightningWrapper(list(features), tracking_uri=tracking_uri, log_checkpoints=False)
        run = client.create_run(experiment_id, run_name=f"walk-forward-fold-{fold}", tags={
            "mlflow.parentRunId": parent_run_id, TAG_WALK_FORWARD_FOLD: str(fold)})
        with mlflow.start_run(run_id=run.info.run_id, nested=mlflow.active_run() is not None):
            wrapper.train(frame, config)
        return wrapper.predict_array

    return train

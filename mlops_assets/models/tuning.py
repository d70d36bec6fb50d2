"""Hyper-parameter search for the Lightning MLP with Optuna, tracked in MLflow.

One parent MLflow run per search; each Optuna trial trains in a nested run (its params, loss
curve and metrics land there) and is scored on the validation split only -- the test split is
left for the final evaluation. The parent run logs the best configuration as its params and
``best_<metric>`` as a metric. The sampler is seeded from ``base_config.seed``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import mlflow
import optuna
import polars as pl
from mlflow import MlflowClient

from mlops_assets.models.lightning import PytorchLightningWrapper, TrainConfig
from mlops_assets.models.registry import RegistryError, ensure_experiment
from mlops_assets.settings import use_mlflow_tracking_uri

# name -> ("float", low, high, log) | ("categorical", choices); hidden sizes as "32-16"
DEFAULT_SEARCH_SPACE: dict[str, tuple[Any, ...]] = {
    "lr": ("float", 1e-4, 1e-2, True),
    "dropout": ("float", 0.0, 0.3, False),
    "weight_decay": ("float", 1e-6, 1e-2, True),
    "hidden_sizes": ("categorical", ["16", "32", "32-16", "64-32"]),
    "batch_size": ("categorical", [128, 256, 512]),
}


@dataclass(frozen=True)
class TuningResult:
    """The best configuration and the record of every trial."""

    best_config: TrainConfig
    best_value: float
    metric: str
    parent_run_id: str
    trials: list[dict[str, Any]] = field(default_factory=list)


def suggest_config(trial: optuna.Trial, base: TrainConfig,
                   space: Mapping[str, tuple[Any, ...]]) -> TrainConfig:
    """``base`` with the parameters of ``space`` drawn by ``trial``."""
    updates: dict[str, Any] = {}
    for name, spec in space.items():
        if name not in TrainConfig.model_fields:
            raise RegistryError("search_space", f"{name!r} is not a TrainConfig field")
        kind = spec[0]
        if kind == "float":
            updates[name] = trial.suggest_float(name, spec[1], spec[2], log=bool(spec[3]))
        elif kind == "int":
            updates[name] = trial.suggest_int(name, spec[1], spec[2])
        elif kind == "categorical":
            updates[name] = trial.suggest_categorical(name, list(spec[1]))
        else:
            raise RegistryError("search_space", f"{name}: kind {kind!r} is not float, int or categorical")
    if isinstance(updates.get("hidden_sizes"), str):
        updates["hidden_sizes"] = tuple(int(v) for v in updates["hidden_sizes"].split("-"))
    return TrainConfig.model_validate({**base.model_dump(), **updates})


def run_tuning(
    dataset: pl.DataFrame,
    features: Sequence[str],
    base_config: TrainConfig,
    n_trials: int = 5,
    timeout_s: float | None = None,
    *,
    tracking_uri: str,
    experiment_name: str,
    metric: str = "val_loss",
    direction: str = "minimize",
    search_space: Mapping[str, tuple[Any, ...]] | None = None,
    run_name: str = "tuning",
    artifact_location: str | None = None,
) -> TuningResult:
    """Search ``search_space`` (default ``DEFAULT_SEARCH_SPACE``) for ``n_trials`` or ``timeout_s``."""
    if n_trials < 1:
        raise RegistryError("n_trials", "need at least one trial")
    if direction not in ("minimize", "maximize"):
        raise RegistryError("direction", "use 'minimize' or 'maximize'")
    space = dict(search_space or DEFAULT_SEARCH_SPACE)
    use_mlflow_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = ensure_experiment(client, experiment_name, artifact_location)
    optuna.logging.set_verbosity(logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=base_config.seed)
    study = optuna.create_study(direction=direction, sampler=sampler)
    trials: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        config = suggest_config(trial, base_config, space)
        wrapper = PytorchLightningWrapper(list(features), tracking_uri=tracking_uri, log_checkpoints=False)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"trial-{trial.number}", nested=True,
                              tags={"optuna.trial": str(trial.number)}) as child:
            result = wrapper.train(dataset, config)
        value = result.metrics.get(metric, math.nan)
        if not math.isfinite(value):
            raise RegistryError("metric", f"trial {trial.number} produced no finite {metric!r} "
                                f"(got {sorted(result.metrics)})")
        trial.set_user_attr("config", config.model_dump(mode="json"))
        trial.set_user_attr("run_id", child.info.run_id)
        trials.append({"number": trial.number, "run_id": child.info.run_id, metric: value,
                       "epochs": result.epochs_trained, **trial.params})
        return value

    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                          tags={"optuna.n_trials": str(n_trials)}) as parent:
        study.optimize(objective, n_trials=n_trials, timeout=timeout_s)
        best = TrainConfig.model_validate(study.best_trial.user_attrs["config"])
        mlflow.log_params({k: str(v) for k, v in best.model_dump().items()})
        mlflow.log_metric(f"best_{metric}", study.best_value)
        mlflow.set_tag("optuna.best_trial_run_id", study.best_trial.user_attrs["run_id"])
    return TuningResult(best, float(study.best_value), metric, parent.info.run_id, trials)


def tune(
    dataset: pl.DataFrame,
    features: Sequence[str],
    base_config: TrainConfig,
    n_trials: int = 5,
    timeout_s: float | None = None,
    tracking_uri: str = "",
    experiment_name: str = "tuning",
    **kwargs: Any,
) -> TrainConfig:
    """The best ``TrainConfig`` found (see ``run_tuning`` for the full record)."""
    if not tracking_uri:
        raise RegistryError("tracking_uri", "pass the MLflow tracking URI explicitly")
    return run_tuning(dataset, features, base_config, n_trials, timeout_s, tracking_uri=tracking_uri,
                      experiment_name=experiment_name, **kwargs).best_config

"""``PytorchLightningWrapper``: the tabular MLP trained with PyTorch Lightning, tracked in MLflow.

``train`` fits ``LitMLP`` (``lit_module.py``: the network of ``torch_mlp.build_mlp`` over the
standardised feature vector) with ``pytorch_lightning.Trainer`` on CPU, seeded and deterministic,
early-stopping on ``val_loss``. An ``MLFlowLogger`` bound to an explicit tracking URI and to the
run id writes params, per-epoch ``train_loss``/``val_loss``/``val_*`` metrics and the best
checkpoint to that run. ``evaluate`` runs ``trainer.test()`` on the ``test`` split and logs
``test_*`` metrics plus naive ``baseline_test_*`` references. ``log_model`` logs a pyfunc
models-from-code model (``pyfunc_model.py``), not ``mlflow.pytorch.log_model``. ``load`` reads that
model's artifacts straight into a ``TorchPredictor``; ``load``/``predict`` never import Lightning,
so serving stays light (Lightning is imported by ``train``/``evaluate`` only).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

import mlflow
import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.models.lightning_io import (
    PYFUNC_MODEL_NAME,
    dataset_arrays,
    log_pyfunc_model,
    model_artifacts,
    resolve_target,
)
from mlops_assets.models.torch_mlp import ModelSpec, TorchPredictor
from mlops_assets.models.wrapper import (
    ModelInputError,
    Prediction,
    TrainResult,
    classification_or_regression_metrics,
)
from mlops_assets.settings import use_mlflow_tracking_uri

if TYPE_CHECKING:
    from mlops_assets.models.lit_module import LitMLP


class TrainConfig(BaseModel):
    """Hyper-parameters of one training run (all logged as MLflow params)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden_sizes: tuple[int, ...] = Field((32, 16), min_length=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    lr: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(256, ge=1)
    max_epochs: int = Field(20, ge=1)
    patience: int = Field(3, ge=1)
    seed: int = 42
    weight_decay: float = Field(0.0, ge=0.0)
    task_type: Literal["binary", "multiclass", "regression"] = "binary"
    target: str | None = Field(None, description="label column; default label, or fwd_return for regression")
    num_threads: int = Field(1, ge=1, description="torch intra-op threads while training/testing")


class PytorchLightningWrapper:
    """``ModelWrapper`` for the Lightning MLP.

    ``features`` fixes the input order. ``tracking_uri`` is handed explicitly to MLflow and to the
    Lightning logger; ``train`` logs into the active MLflow run, or creates a run in
    ``experiment_name`` when none is active. ``log_checkpoints=False`` skips uploading the best
    checkpoint (used by tuning trials).
    """

    name = "lightning"

    def __init__(self, features: list[str] | tuple[str, ...] | None = None, tracking_uri: str | None = None,
                 experiment_name: str = "Default", log_checkpoints: bool = True) -> None:
        self.features: tuple[str, ...] = tuple(features or ())
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.log_checkpoints = log_checkpoints
        self.run_id: str | None = None
        self.module: LitMLP | None = None
        self.predictor: TorchPredictor | None = None
        self.config: TrainConfig | None = None
        self._example: pl.DataFrame | None = None
        self._train_target: np.ndarray | None = None

    # -- MLflow plumbing -------------------------------------------------------------------
    def _client(self) -> mlflow.MlflowClient:
        if self.tracking_uri:
            use_mlflow_tracking_uri(self.tracking_uri)
        return mlflow.MlflowClient(tracking_uri=mlflow.get_tracking_uri())

    def _ensure_run(self, client: mlflow.MlflowClient) -> str:
        """The active run, else a new run in ``experiment_name`` (each ``train`` call its own)."""
        active = mlflow.active_run()
        if active is not None:
            return active.info.run_id
        from mlops_assets.models.registry import ensure_experiment

        return client.create_run(ensure_experiment(client, self.experiment_name)).info.run_id

    def _logger(self) -> Any:
        from mlops_assets.models.lit_module import make_logger

        return make_logger(mlflow.get_tracking_uri(), self.run_id, self.log_checkpoints)

    # -- ModelWrapper ------------------------------------------------------------------------
    def train(self, data: pl.DataFrame, config: TrainConfig | Mapping[str, Any]) -> TrainResult:
        """Fit on the ``train`` split, early-stop on ``validation``; weights = best epoch."""
        from mlops_assets.models.lit_module import LitMLP, fit_module, seed_everything

        config = config if isinstance(config, TrainConfig) else TrainConfig.model_validate(dict(config))
        if not self.features:
            raise ModelInputError("features", "the wrapper needs the ordered feature list to train")
        started = time.perf_counter()
        target = resolve_target(config)
        arrays = dataset_arrays(data, self.features, target, config.task_type)
        spec = arrays.spec(config)
        seed_everything(config.seed)  # before the weights are drawn
        module = LitMLP(len(self.features), config.hidden_sizes, config.dropout, spec.n_outputs,
                        config.task_type, config.lr, config.weight_decay, spec.target_mean, spec.target_std)
        client = self._client()
        self.run_id = self._ensure_run(client)
        logger = self._logger()
        logger.log_hyperparams({**config.model_dump(), "target": target, "n_features": len(self.features),
                                "n_train_rows": len(arrays.x_train), "n_validation_rows": len(arrays.x_val)})
        outcome = fit_module(module, (arrays.x_train, arrays.y_train), (arrays.x_val, arrays.y_val), config,
                             logger)
        curve, best_path = outcome.loss_curve, outcome.best_checkpoint
        self.module, self.config = module, config
        self.predictor = TorchPredictor(spec, module.net.state_dict())
        self._example = data.filter(pl.col("split") == "train").select(self.features).head(5)
        self._train_target = arrays.y_train
        best = min(curve, key=lambda r: r.get("val_loss", float("inf"))) if curve else {}
        return TrainResult(
            run_id=self.run_id,
            metrics={k: v for k, v in best.items() if k != "epoch"},
            loss_curve=curve,
            best_epoch=int(best.get("epoch", -1)),
            epochs_trained=len(curve),
            best_checkpoint=Path(best_path).stem if best_path else None,
            duration_s=round(time.perf_counter() - started, 3),
            n_train_rows=len(arrays.x_train),
            n_validation_rows=len(arrays.x_val),
        )

    def evaluate(self, data: pl.DataFrame,
                 config: TrainConfig | Mapping[str, Any] | None = None) -> dict[str, float]:
        """``trainer.test()`` on the ``test`` split; logs and returns ``test_*`` and baseline metrics."""
        from mlops_assets.models.lit_module import run_test

        if self.predictor is None:
            raise RuntimeError("train() or load() the model before evaluate()")
        spec = self.predictor.spec
        if config is not None and not isinstance(config, TrainConfig):
            config = TrainConfig.model_validate(dict(config))
        config = config or self.config or TrainConfig(task_type=spec.task_type, target=spec.target)
        arrays = dataset_arrays(data, self.features, spec.target, spec.task_type, spec=spec, need_train=False)
        if len(arrays.x_test) == 0:
            raise ModelInputError("split", "no 'test' rows to evaluate on")
        module = self.module or self._module_from_predictor()
        logger = False
        if self.run_id:
            self._client()
            logger = self._logger()
        metrics = run_test(module, arrays.x_test, arrays.y_test, logger, config.seed, config.num_threads)
        y_train = arrays.y_train if len(arrays.y_train) else self._train_target
        baseline = baseline_metrics(y_train, arrays.y_test, spec)
        metrics.update(baseline)
        metrics["test_n_rows"] = float(len(arrays.x_test))
        if self.run_id:
            mlflow.MlflowClient(tracking_uri=mlflow.get_tracking_uri()).log_batch(
                self.run_id, metrics=[mlflow.entities.Metric(k, v, int(time.time() * 1000), 0)
                                      for k, v in {**baseline, "test_n_rows": metrics["test_n_rows"]}.items()
                                      if np.isfinite(v)])
        return metrics

    def load(self, model_uri: str) -> None:
        """Load a model logged by ``log_model`` (any ``runs:/``, ``models:/`` or local URI)."""
        with model_artifacts(model_uri) as (spec_path, weights_path):
            self.predictor = TorchPredictor.from_files(spec_path, weights_path)
        self.features = self.predictor.features
        self.module = None

    def predict(self, input: Any) -> Prediction:
        """Rows as dicts, a dict, a 2-D array in ``features`` order, or a polars/pandas frame."""
        predictor = self._require_predictor()
        if isinstance(input, np.ndarray):
            x = input
        elif isinstance(input, Mapping):
            x = predictor.records_to_array([input])
        elif isinstance(input, pl.DataFrame):
            x = input.select(self.features).to_numpy().astype(np.float32)
        elif hasattr(input, "columns") and hasattr(input, "to_numpy"):  # pandas
            x = input[list(self.features)].to_numpy(dtype=np.float32)
        else:
            x = predictor.records_to_array(list(input))
        output = predictor.predict_array(x)
        labels = predictor.classes_from_output(output)
        probabilities = None if predictor.spec.task_type == "regression" else output
        return Prediction(labels, probabilities)

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """Fast path: model output only (see ``TorchPredictor.predict_array``)."""
        return self._require_predictor().predict_array(x)

    # -- logging the servable model ------------------------------------------------------------
    def log_model(self, name: str = PYFUNC_MODEL_NAME,
                  extra_metadata: Mapping[str, str] | None = None) -> Any:
        """Log the pyfunc models-from-code model into the training run; returns MLflow's ModelInfo."""
        predictor = self._require_predictor()
        if self.run_id is None:
            raise RuntimeError("log_model needs the run of train(); train first")
        self._client()
        return log_pyfunc_model(predictor, self.run_id, self._example, name, wrapper_name=self.name,
                                extra_metadata=extra_metadata)

    # -- helpers ---------------------------------------------------------------------------------
    def _require_predictor(self) -> TorchPredictor:
        if self.predictor is None:
            raise RuntimeError("call load(model_uri) or train() before predict")
        return self.predictor

    def _module_from_predictor(self) -> LitMLP:
        from mlops_assets.models.lit_module import LitMLP

        spec = self._require_predictor().spec
        module = LitMLP(len(spec.features), spec.hidden_sizes, spec.dropout, spec.n_outputs, spec.task_type,
                        target_mean=spec.target_mean, target_std=spec.target_std)
        module.net.load_state_dict(self.predictor.net.state_dict())
        return module.eval()


def baseline_metrics(y_train: np.ndarray | None, y_test: np.ndarray, spec: ModelSpec) -> dict[str, float]:
    """Naive references fitted on the train target: class prevalence (accuracy of the majority
    class), or the mean for regression; keys ``baseline_test_*``."""
    if y_train is None or len(y_train) == 0:
        return {}
    if spec.task_type == "binary":
        output = np.full(len(y_test), float(np.mean(y_train)))
    elif spec.task_type == "multiclass":
        freq = np.bincount(y_train.astype(int), minlength=spec.n_outputs) / len(y_train)
        output = np.tile(freq, (len(y_test), 1))
    else:
        output = np.full(len(y_test), float(np.mean(y_train)))
    metrics = classification_or_regression_metrics(spec.task_type, y_test, output)
    if spec.task_type == "binary":  # the majority class, not the constant probability, sets accuracy
        majority = float(np.mean(y_train) >= 0.5)
        metrics["accuracy"] = float(np.mean(y_test == majority))
    return {f"baseline_test_{k}": v for k, v in metrics.items() if k != "auc"}

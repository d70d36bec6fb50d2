"""The ``ModelWrapper`` protocol and ``load_wrapper``, the one way serving obtains a model.

Serving calls only ``load`` and ``predict`` and never learns whether the model behind a registry
alias is the Lightning MLP, an LLM chain or a pyfunc model imported from elsewhere:
``load_wrapper(model_uri, client)`` picks the implementation from the model version's ``wrapper``
tag, else from the logged model's ``model_config["wrapper"]``, else falls back to the generic
``PyfuncWrapper``. Implementations are named in ``WRAPPER_IMPORT_PATHS`` (name -> "module:Class")
and imported lazily, so importing this module stays cheap (no torch, no Lightning).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from mlops_assets.errors import InvalidInput
from mlops_assets.models.tags import TAG_TASK_TYPE, TAG_WRAPPER

if TYPE_CHECKING:
    import polars as pl
    from mlflow import MlflowClient

WRAPPER_IMPORT_PATHS: dict[str, str] = {
    "lightning": "mlops_assets.models.lightning:PytorchLightningWrapper",
    "llm": "mlops_assets.llm.chain:LangGraphWrapper",
    "pyfunc": "mlops_assets.models.wrapper:PyfuncWrapper",
}
FALLBACK_WRAPPER = "pyfunc"


class ModelInputError(InvalidInput):
    """Data handed to a wrapper is unusable (HTTP 422, CLI exit 2); ``field`` names the column or argument,
    ``reasons`` the problem; ``str()`` is ``"<field>: <message>"``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)


@dataclass(frozen=True)
class Prediction:
    """Output of ``ModelWrapper.predict`` for n input rows.

    ``predictions``: class labels (classification) or values (regression), shape ``(n,)``.
    ``probabilities``: P(class 1) with shape ``(n,)`` for binary, ``(n, k)`` for multiclass,
    ``None`` for regression or when the model gives no probabilities.
    """

    predictions: np.ndarray
    probabilities: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-friendly rows: ``{"prediction": ..., "probability": ...}``."""
        rows: list[dict[str, Any]] = []
        for i, pred in enumerate(self.predictions.tolist()):
            row: dict[str, Any] = {"prediction": pred}
            if self.probabilities is not None:
                row["probability"] = self.probabilities[i].tolist()
            rows.append(row)
        return rows


@dataclass(frozen=True)
class TrainResult:
    """What ``ModelWrapper.train`` reports: the MLflow run, best epoch and the loss curve."""

    run_id: str
    metrics: dict[str, float]
    loss_curve: list[dict[str, float]]
    best_epoch: int
    epochs_trained: int
    best_checkpoint: str | None
    duration_s: float
    n_train_rows: int
    n_validation_rows: int


@runtime_checkable
class ModelWrapper(Protocol):
    """The contract every model implementation satisfies (names fixed by the user's documents)."""

    def train(self, data: "pl.DataFrame", config: Any) -> TrainResult: ...

    def evaluate(self, data: "pl.DataFrame", config: Any) -> dict[str, float]: ...

    def load(self, model_uri: str) -> None: ...

    def predict(self, input: Any) -> Prediction: ...


def wrapper_class(name: str) -> type:
    """Import the class registered as ``name``."""
    try:
        module_name, class_name = WRAPPER_IMPORT_PATHS[name].split(":")
    except KeyError:
        raise ModelInputError(
            "wrapper", f"unknown wrapper {name!r}; known: {sorted(WRAPPER_IMPORT_PATHS)} "
            "(add one to WRAPPER_IMPORT_PATHS as 'package.module:Class')",
        ) from None
    return getattr(importlib.import_module(module_name), class_name)


def pin_model_uri(model_uri: str, client: "MlflowClient | None") -> tuple[str, dict[str, str]]:
    """``models:/name@alias`` -> (``models:/name/<version>``, that version's tags).

    Pinning first means the version whose tags chose the wrapper is the version that gets loaded,
    even if the alias moves meanwhile. Other URIs (and ``client=None``) come back unchanged, no tags.
    """
    if client is None or not model_uri.startswith("models:/"):
        return model_uri, {}
    body = model_uri[len("models:/"):]
    if "@" in body:
        name, alias = body.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in body and body.rsplit("/", 1)[1].isdigit():
        name, number = body.rsplit("/", 1)
        version = client.get_model_version(name, number)
    else:  # models:/<logged model id>
        return model_uri, {}
    return f"models:/{name}/{version.version}", dict(version.tags or {})


def _wrapper_name(model_uri: str, tags: Mapping[str, str]) -> str:
    if tags.get(TAG_WRAPPER):
        return tags[TAG_WRAPPER]
    from mlflow.models import get_model_info

    info = get_model_info(model_uri)
    model_config = (info.flavors.get("python_function") or {}).get("config") or {}
    name = model_config.get("wrapper") or (info.metadata or {}).get("wrapper")
    return str(name) if name else FALLBACK_WRAPPER


def resolve_wrapper_name(model_uri: str, client: "MlflowClient | None" = None) -> str:
    """``wrapper`` tag of the version, else ``model_config["wrapper"]`` of the MLmodel, else pyfunc."""
    pinned, tags = pin_model_uri(model_uri, client)
    return _wrapper_name(pinned, tags)


def load_wrapper(model_uri: str, client: "MlflowClient | None" = None, **kwargs: Any) -> ModelWrapper:
    """Build the wrapper that fits ``model_uri`` and ``load`` it; ``kwargs`` go to its constructor.

    ``client`` (an ``MlflowClient`` on the tracking/registry URI) reads the version's tags; an
    alias is pinned to its current version before loading. Artifacts are fetched through the
    global MLflow tracking URI, so point ``mlflow.set_tracking_uri`` / ``MLFLOW_TRACKING_URI`` at
    the same store. The generic ``PyfuncWrapper`` gets the version's ``task_type`` tag.
    """
    pinned, tags = pin_model_uri(model_uri, client)
    name = _wrapper_name(pinned, tags)
    if name == FALLBACK_WRAPPER and tags.get(TAG_TASK_TYPE) and "task_type" not in kwargs:
        kwargs["task_type"] = tags[TAG_TASK_TYPE]
    wrapper = wrapper_class(name)(**kwargs)
    wrapper.load(pinned)
    return wrapper


def classification_or_regression_metrics(
    task_type: str,
    y_true: np.ndarray,
    output: np.ndarray,
    prefix: str = "",
    classes: Sequence[int] | None = None,
) -> dict[str, float]:
    """Standard metrics for a model output (see ``Prediction`` for the output shapes).

    binary: accuracy, auc, log_loss, brier; multiclass: accuracy, log_loss; regression: mse, mae,
    r2. Keys are prefixed with ``prefix`` (e.g. ``"test_"``). ``classes``: the sorted label values
    behind the multiclass probability columns (default ``0..k-1``).
    """
    from sklearn import metrics as skm

    y_true = np.asarray(y_true)
    out: dict[str, float] = {}
    if task_type == "binary":
        p = np.clip(np.asarray(output, dtype=np.float64), 1e-7, 1 - 1e-7)
        out["accuracy"] = skm.accuracy_score(y_true, (p >= 0.5).astype(int))
        out["auc"] = skm.roc_auc_score(y_true, p) if len(np.unique(y_true)) == 2 else float("nan")
        out["log_loss"] = skm.log_loss(y_true, p, labels=[0, 1])
        out["brier"] = skm.brier_score_loss(y_true, p)
    elif task_type == "multiclass":
        p = np.clip(np.asarray(output, dtype=np.float64), 1e-7, 1)
        p = p / p.sum(axis=1, keepdims=True)
        labels = np.asarray(classes) if classes is not None else np.arange(p.shape[1])
        out["accuracy"] = skm.accuracy_score(y_true, labels[np.argmax(p, axis=1)])
        out["log_loss"] = skm.log_loss(y_true, p, labels=labels)
    elif task_type == "regression":
        out["mse"] = skm.mean_squared_error(y_true, output)
        out["mae"] = skm.mean_absolute_error(y_true, output)
        out["r2"] = skm.r2_score(y_true, output) if len(y_true) > 1 else float("nan")
    else:
        raise ModelInputError("task_type", f"{task_type!r} is not binary, multiclass or regression")
    return {f"{prefix}{k}": float(v) for k, v in out.items()}


def split_rows(data: "pl.DataFrame", split: str) -> "pl.DataFrame":
    """Rows of one split (``split`` column: train / validation / test)."""
    import polars as pl

    if "split" not in data.columns:
        raise ModelInputError("split", "the dataset needs a 'split' column (train/validation/test)")
    return data.filter(pl.col("split") == split)


class PyfuncWrapper:
    """Generic wrapper over any MLflow pyfunc model (e.g. one imported from another team).

    Interprets the pyfunc output: a DataFrame with ``prediction``/``probability`` columns (our
    convention), a 2-D array of class probabilities, or a 1-D array (probabilities of class 1 for
    ``task_type="binary"`` when all values lie in [0, 1], otherwise predictions).
    """

    def __init__(self, task_type: str = "binary", features: Sequence[str] | None = None) -> None:
        self.task_type = task_type
        self.features: list[str] | None = list(features) if features else None
        self.model: Any = None

    def train(self, data: "pl.DataFrame", config: Any) -> TrainResult:
        raise NotImplementedError(
            "PyfuncWrapper serves models trained elsewhere; train with PytorchLightningWrapper "
            "or import a trained model with `mlops models import` (models.registration.import_external_model)"
        )

    def load(self, model_uri: str) -> None:
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(model_uri)
        schema = self.model.metadata.get_input_schema()
        if self.features is None and schema is not None and schema.has_input_names():
            self.features = list(schema.input_names())

    def _frame(self, input: Any) -> Any:
        import pandas as pd

        if isinstance(input, np.ndarray):
            if self.features is None:
                raise ModelInputError("input", "an array input needs the feature order; pass features=")
            return pd.DataFrame(np.atleast_2d(input), columns=self.features)
        if isinstance(input, Mapping):
            input = [input]
        frame = pd.DataFrame(list(input))
        return frame[self.features] if self.features else frame

    def predict(self, input: Any) -> Prediction:
        if self.model is None:
            raise RuntimeError("call load(model_uri) before predict")
        raw = self.model.predict(self._frame(input))
        return self._interpret(raw)

    def _interpret(self, raw: Any) -> Prediction:
        import pandas as pd

        if isinstance(raw, pd.DataFrame):
            if "prediction" in raw.columns:
                prob_cols = [c for c in raw.columns if c.startswith("probability")]
                probs = None
                if prob_cols == ["probability"]:
                    probs = raw["probability"].to_numpy(dtype=np.float64)
                elif prob_cols:
                    probs = raw[prob_cols].to_numpy(dtype=np.float64)
                return Prediction(raw["prediction"].to_numpy(), probs)
            raw = raw.to_numpy()
        arr = np.asarray(raw)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim == 2:
            probs = arr.astype(np.float64)
            labels = np.argmax(probs, axis=1)
            if self.task_type == "binary" and probs.shape[1] == 2:
                return Prediction(labels, probs[:, 1])
            return Prediction(labels, probs)
        if self.task_type == "binary" and arr.dtype.kind == "f" and np.all((arr >= 0) & (arr <= 1)):
            return Prediction((arr >= 0.5).astype(np.int64), arr.astype(np.float64))
        return Prediction(arr)

    def evaluate(self, data: "pl.DataFrame", config: Any = None) -> dict[str, float]:
        """``test_*`` metrics on the ``test`` split (returned, not logged: the caller owns the run).

        The label column is ``config.target`` (attribute or key), else ``label`` / ``fwd_return``.
        """
        test = split_rows(data, "test")
        default_target = "fwd_return" if self.task_type == "regression" else "label"
        configured = config.get("target") if isinstance(config, Mapping) else getattr(config, "target", None)
        target = configured or default_target
        if target not in test.columns:
            raise ModelInputError(target, f"label column missing from the dataset (has {test.columns})")
        if test.height == 0:
            raise ModelInputError("split", "no 'test' rows to evaluate on")
        pred = self.predict(test.select(self.features or []).to_dicts() if self.features else test.to_dicts())
        output = pred.probabilities if pred.probabilities is not None else pred.predictions
        return classification_or_regression_metrics(
            self.task_type, test[target].to_numpy(), output, prefix="test_"
        )

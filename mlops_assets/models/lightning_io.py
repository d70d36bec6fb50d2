"""Data in and model out for the Lightning wrapper.

In: ``dataset_arrays`` turns the training dataset (polars; ``split`` = train/validation/test) into
standardised float32 arrays, with errors that name the offending column. Out: ``log_pyfunc_model``
logs the servable pyfunc models-from-code model (``pyfunc_model.py`` + ``torch_mlp.py`` as a code
path, spec JSON + state dict as artifacts, pinned pip requirements so nothing is inferred over the
network), and ``download_model_artifacts`` fetches those two artifacts back for a fast load.
"""

from __future__ import annotations

import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import polars as pl

from mlops_assets.models.torch_mlp import (
    ModelSpec,
    TorchPredictor,
    save_artifacts,
    standardisation_stats,
    standardise,
)
from mlops_assets.models.wrapper import ModelInputError

PYFUNC_MODEL_NAME = "model"
PYFUNC_MODEL_FILE = Path(__file__).with_name("pyfunc_model.py")
TORCH_MLP_FILE = Path(__file__).with_name("torch_mlp.py")
SPLITS = ("train", "validation", "test")


def resolve_target(config: Any) -> str:
    """The label column: ``config.target``, else ``fwd_return`` for regression, else ``label``."""
    return config.target or ("fwd_return" if config.task_type == "regression" else "label")


@dataclass(frozen=True)
class DatasetArrays:
    """Standardised inputs and targets per split, with the statistics used to standardise."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[int, ...]
    target: str
    target_mean: float
    target_std: float

    def spec(self, config: Any) -> ModelSpec:
        return ModelSpec(features=self.features, mean=self.mean, std=self.std,
                         hidden_sizes=tuple(config.hidden_sizes), dropout=float(config.dropout),
                         task_type=config.task_type, classes=self.classes, target=self.target,
                         target_mean=self.target_mean, target_std=self.target_std)


def _check_columns(data: pl.DataFrame, features: Sequence[str], target: str) -> None:
    for column in ("split", target, *features):
        if column not in data.columns:
            raise ModelInputError(column, f"column missing from the dataset (has {data.columns})")
    for name in features:
        if not data.schema[name].is_numeric():
            raise ModelInputError(name, f"feature must be numeric, got {data.schema[name]}")
    unknown = set(data["split"].unique().drop_nulls().to_list()) - set(SPLITS)
    if unknown:
        raise ModelInputError("split", f"unknown split values {sorted(unknown)}; use {SPLITS}")


def _encode_target(y: np.ndarray, task_type: str, classes: tuple[int, ...], target: str) -> np.ndarray:
    if task_type == "regression":
        return y.astype(np.float32)
    if task_type == "binary":
        bad = set(np.unique(y).tolist()) - {0, 1}
        if bad:
            raise ModelInputError(target, f"binary labels must be 0/1, found {sorted(bad)[:5]}")
        return y.astype(np.float32)
    lookup = {c: i for i, c in enumerate(classes)}
    try:
        return np.asarray([lookup[int(v)] for v in y], dtype=np.int64)
    except KeyError as err:
        raise ModelInputError(target, f"label {err.args[0]} not seen in the train split {classes}") from None


def dataset_arrays(data: pl.DataFrame, features: Sequence[str], target: str, task_type: str,
                   spec: ModelSpec | None = None, need_train: bool = True) -> DatasetArrays:
    """Split, standardise (with ``spec``'s statistics if given, else the train split's) and encode."""
    features = tuple(features)
    _check_columns(data, features, target)
    data = data.filter(pl.col(target).is_not_null() & pl.col(target).is_not_nan()
                       if data.schema[target].is_float() else pl.col(target).is_not_null())
    parts = {s: data.filter(pl.col("split") == s) for s in SPLITS}
    if need_train:
        for s in ("train", "validation"):
            if parts[s].height == 0:
                raise ModelInputError("split", f"no {s!r} rows with a non-null {target!r}")
    raw = {s: parts[s].select(features).cast(pl.Float64).to_numpy().astype(np.float64) for s in SPLITS}
    ys = {s: parts[s][target].to_numpy() for s in SPLITS}
    if spec is None:
        mean, std = standardisation_stats(raw["train"])
        classes = tuple(sorted(int(v) for v in np.unique(ys["train"]))) if task_type == "multiclass" else (
            () if task_type == "regression" else (0, 1))
        t_mean, t_std = (float(np.mean(ys["train"])), float(np.std(ys["train"]) or 1.0)) \
            if task_type == "regression" else (0.0, 1.0)
    else:
        mean, std, classes = spec.mean, spec.std, spec.classes
        t_mean, t_std = spec.target_mean, spec.target_std
    mean_a = np.asarray(mean, dtype=np.float32)
    inv_std = (1.0 / np.asarray(std, dtype=np.float64)).astype(np.float32)
    xs = {s: standardise(raw[s], mean_a, inv_std) for s in SPLITS}
    enc = {s: _encode_target(ys[s], task_type, classes, target) for s in SPLITS}
    return DatasetArrays(xs["train"], enc["train"], xs["validation"], enc["validation"],
                         xs["test"], enc["test"],
                         features, tuple(mean), tuple(std), tuple(classes), target, t_mean, t_std)


def pinned_requirements() -> list[str]:
    """Exact versions of what the pyfunc needs (torch without its local ``+cpu`` label)."""
    names = ("mlflow", "torch", "numpy", "pandas")
    return [f"{name}=={package_version(name).split('+')[0]}" for name in names]


@contextmanager
def _in_run(run_id: str) -> Iterator[None]:
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield
        return
    with mlflow.start_run(run_id=run_id, nested=active is not None):
        yield


def log_pyfunc_model(predictor: TorchPredictor, run_id: str, example: pl.DataFrame | None, name: str,
                     wrapper_name: str, extra_metadata: Mapping[str, str] | None = None) -> Any:
    """Log ``predictor`` as a models-from-code pyfunc in ``run_id``; returns MLflow's ``ModelInfo``."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    spec = predictor.spec
    if example is None or example.height == 0:  # a loaded model: the training means are a valid row
        example_pd = pd.DataFrame([dict(zip(spec.features, spec.mean))])
    else:
        example_pd = example.select(spec.features).cast(pl.Float64).to_pandas()
    output = pd.DataFrame(predictor.output_columns(predictor.predict_array(example_pd.to_numpy())))
    metadata = {"wrapper": wrapper_name, "task_type": spec.task_type, "features": list(spec.features),
                **dict(extra_metadata or {})}
    with tempfile.TemporaryDirectory() as tmp, _in_run(run_id), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer.*")
        paths = save_artifacts(tmp, spec, predictor.net.state_dict())
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PYFUNC_MODEL_FILE),
            artifacts=paths,
            code_paths=[str(TORCH_MLP_FILE)],
            signature=infer_signature(example_pd, output),
            input_example=example_pd,
            pip_requirements=pinned_requirements(),
            model_config={"wrapper": wrapper_name},
            metadata=metadata,
        )


@contextmanager
def model_artifacts(model_uri: str) -> Iterator[tuple[Path, Path]]:
    """Fetch the spec and weights of a logged model into a temp dir; yield their paths.

    Only the model directory (a few KB: MLmodel, code, spec, weights) is downloaded; the
    directory is removed when the block exits, so read the files inside it.
    """
    import mlflow
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="mlops-model-") as local:
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=local))
        conf = Model.load(str(model_dir)).flavors.get("python_function", {})
        artifacts = conf.get("artifacts") or {}
        try:
            spec_rel = artifacts["spec"]["path"]
            weights_rel = artifacts["weights"]["path"]
        except KeyError:
            raise ModelInputError(
                "model_uri", f"{model_uri} was not logged by PytorchLightningWrapper (no spec/weights "
                "artifacts); load it with PyfuncWrapper",
            ) from None
        yield model_dir / spec_rel, model_dir / weights_rel

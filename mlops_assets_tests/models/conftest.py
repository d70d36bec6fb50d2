"""Shared fixtures for the model-layer tests: a real SQLite MLflow store and ONE trained model.

Training is the expensive part, so ``registered`` trains and registers once per session (tiny
planted-signal dataset, 3 epochs) and the tests read what it produced.
"""

from __future__ import annotations

import os

os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import mlflow  # noqa: E402
import polars as pl  # noqa: E402
import pytest  # noqa: E402

from mlops_assets.models.lightning import TrainConfig  # noqa: E402
from mlops_assets.models.registration import RegisteredModel, train_and_register  # noqa: E402
from mlops_assets_tests.models.synthetic import make_dataset  # noqa: E402

MODEL_NAME = "direction-mlp"
EXPERIMENT = "trading-direction"
LINEAGE = {
    "registered_by": "pytest",
    "feature_views": {"price_features": "1.2.0", "volume_features": "2.0.1"},
    "dataset_fingerprint": "sha256:abc123",
    "dagster_run_id": "run-0001",
}


@dataclass(frozen=True)
class Store:
    root: Path
    tracking_uri: str
    artifact_location: str

    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("mlflow")
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    s = Store(root, f"sqlite:///{root}/mlflow.db", str(root / "mlartifacts"))
    mlflow.set_tracking_uri(s.tracking_uri)
    yield s
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def dataset() -> tuple[pl.DataFrame, list[str]]:
    return make_dataset(n_rows=3000, n_features=6, seed=0)


@pytest.fixture(scope="session")
def config() -> TrainConfig:
    return TrainConfig(hidden_sizes=(32, 16), dropout=0.05, lr=5e-3, batch_size=128, max_epochs=3, patience=2)


@pytest.fixture(scope="session")
def registered(store: Store, dataset: tuple[pl.DataFrame, list[str]], config: TrainConfig) -> RegisteredModel:
    data, features = dataset
    return train_and_register(data, features, config, store.tracking_uri, EXPERIMENT, MODEL_NAME, LINEAGE,
                              artifact_location=store.artifact_location, run_name="fixture")

"""Helpers for the governance tests of the model layer: a real MLflow SQLite registry with one logged
pyfunc model, a real SQLite governance store, and versions whose gates are recorded through
``models.gates`` (the store first, the tags as a mirror), exactly as the Dagster assets do."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from mlflow import MlflowClient

from mlops_assets.governance.store import GovernanceStore
from mlops_assets.models import gates as G
from mlops_assets.models import tags as T

KEY = b"p" * 32
_names = itertools.count()


class _EchoModel(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return model_input


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, str]:
    home = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{home}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    # artifacts under tmp, not ./mlruns in the working directory
    experiment = client.create_experiment("promotion-tests", artifact_location=(home / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(name="model", python_model=_EchoModel(), pip_requirements=[])
    yield client, info.model_uri
    mlflow.set_tracking_uri(previous)


@pytest.fixture()
def store(tmp_path: Path) -> GovernanceStore:
    return GovernanceStore(f"sqlite:///{tmp_path / 'governance.db'}", KEY, tmp_path / "audit.head")


def compliance_report(failed: dict[str, float] | None = None, passing: tuple[str, ...] = ("drift_share",)):
    """A compliance report shaped like ``evaluation.compliance.ComplianceReport``."""
    failed = failed or {}
    checks = [SimpleNamespace(name=c, passed=True, value=0.1, threshold=0.5, message="", skipped=False)
              for c in passing if c not in failed]
    checks += [SimpleNamespace(name=c, passed=False, value=v, threshold=0.5, message=f"{c} is {v}", skipped=False)
               for c, v in failed.items()]
    return SimpleNamespace(passed=not failed, task_type="binary", checks=checks)


def register(registry: tuple[MlflowClient, str], store: GovernanceStore, n: int, *, score: float | None = 0.7,
             threshold: float = 0.5, compliance: dict[str, float] | None | bool = None,
             registered_by: str | None = "alice") -> tuple[MlflowClient, str]:
    """A fresh registered model with ``n`` versions, each registered by ``registered_by`` with its
    evaluation gate (``score`` against ``threshold``; ``None``: never evaluated) recorded, and, unless
    ``compliance`` is ``None``, a compliance result (``True``: passed; a dict: the failing checks)."""
    client, model_uri = registry
    name = f"model-{next(_names)}"
    client.create_registered_model(name)
    for _ in range(n):
        version = client.create_model_version(name, model_uri).version
        if registered_by is not None:
            client.set_model_version_tag(name, version, T.TAG_REGISTERED_BY, registered_by)
        if score is not None:
            G.record_evaluation(client, store, name, version, "test_auc", score, threshold)
        if compliance is not None:
            G.record_compliance(client, store, name, version,
                                compliance_report(None if compliance is True else compliance))
    return client, name

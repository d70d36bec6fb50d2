"""Open the platform's stores from Settings: one place for the CLI, the Dagster resources and serving."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops_assets.data.warehouse import Warehouse
from mlops_assets.settings import Settings
from mlops_assets.settings import use_mlflow_tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops_assets.governance.store import GovernanceStore


def governance_store(settings: Settings) -> GovernanceStore:
    """The governance store (approvals, deployments, drift events, audit log).

    The HMAC key comes from ``MLOPS_AUDIT_KEY`` or a 0600 key file outside the database; the audit
    head is anchored in a file beside it, so a truncated log is caught.
    """
    from mlops_assets.governance.keys import resolve_audit_key
    from mlops_assets.governance.store import GovernanceStore

    settings.secrets_dir.mkdir(parents=True, exist_ok=True)
    key = resolve_audit_key(settings.secrets_dir / "audit.key")
    return GovernanceStore(settings.governance_db_url, key, anchor_path=settings.secrets_dir / "audit.head")


def mlflow_client(settings: Settings) -> MlflowClient:
    """A client on the configured tracking store and registry; the tracking URI is also set process-wide
    for ``mlflow.*`` calls (the registry follows it: a process-wide registry URI would outlive it)."""
    from mlflow import MlflowClient

    use_mlflow_tracking_uri(settings.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def warehouse(settings: Settings) -> Warehouse:
    return Warehouse(settings.warehouse_path, write_threads=settings.data.warehouse_threads)

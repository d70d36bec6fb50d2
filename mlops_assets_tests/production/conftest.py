"""The scale-out stack the production tests share, built once per session on real servers:

- Dagster: an instance made from ``dagster.prod.yaml`` (dagster-postgres storage, queued run
  coordinator, the ``duckdb_warehouse`` pool limit) on a fresh Postgres database;
- MLflow: the tracking server started by ``.ci/services.sh`` (Postgres backend), over HTTP;
- governance: the store on a fresh Postgres database (``MLOPS_GOVERNANCE_URL``);
- everything switched by environment variables only, as an operator would.

On it the graph runs ingestion → features → ``trained_model`` twice (versions v1 and v2) and one prompt
template evaluation whose LLM calls go to a local fake OpenAI server that only accepts the session's
fake ``OPENAI_API_KEY``; then v1 is approved by a reviewer and promoted to ``production``.

The environment is set only while the stack runs something (``Stack.active()``), so other test folders
sharing the pytest worker never see it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlops_assets.settings import PROJECT_ROOT, Settings, load_settings
from mlops_assets_tests.production.helpers import SESSION, Services, fresh_database, load_services, \
    mlflow_globals_restored, write_config

FAKE_KEY = f"sk-test-FAKE-{SESSION}-do-not-store-0123456789abcdef"
PROMPT_ID = "market_narrative"


@pytest.fixture(scope="session")
def services() -> Services:
    return load_services()


@pytest.fixture(autouse=True)
def _restore_mlflow_globals() -> Iterator[None]:
    """Each test leaves MLflow's process-wide URIs as it found them (stores.mlflow_client sets them)."""
    with mlflow_globals_restored():
        yield


@dataclass(repr=False)
class Stack:
    services: Services
    home: Path
    config: Path
    dagster_home: Path
    dagster_url: str
    governance_url: str
    model_name: str
    experiment: str
    env: dict[str, str]
    run_ids: dict[str, str] = field(default_factory=dict)  # what -> Dagster run id
    versions: list[str] = field(default_factory=list)
    llm_requests: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:  # short, and never the request log (it holds the fake key's header)
        return f"Stack(home={self.home}, model={self.model_name}, versions={self.versions})"

    @property
    def settings(self) -> Settings:
        return load_settings(env=self.env)

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.services.mlflow_url, registry_uri=self.services.mlflow_url)

    def store(self) -> Any:
        from mlops_assets import stores

        return stores.governance_store(self.settings)

    @contextmanager
    def active(self) -> Iterator[None]:
        """The stack's environment for the duration of the block (Settings reloaded on entry and exit)."""
        from mlops_assets.settings import get_settings

        with pytest.MonkeyPatch.context() as mp:
            for key, value in self.env.items():
                mp.setenv(key, value)
            get_settings.cache_clear()
            try:
                yield
            finally:
                get_settings.cache_clear()
        get_settings.cache_clear()


def prod_instance(dagster_home: Path) -> Any:
    """A Dagster instance from the shipped ``dagster.prod.yaml`` (DAGSTER_PG_URL must be set)."""
    import dagster as dg

    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.prod.yaml", dagster_home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(dagster_home))


def _materialize(defs: Any, instance: Any, selection: Any, **kwargs: Any) -> Any:
    import dagster as dg

    result = dg.materialize([*defs.assets, *(defs.asset_checks or [])], resources=defs.resources,
                            selection=selection, instance=instance, raise_on_error=False, **kwargs)
    assert result.success, f"run {result.run_id} failed: {[e.message for e in result.get_step_failure_events()]}"
    return result


def _version_of(result: Any) -> str:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "trained_model"]
    return str(event.materialization.metadata["model_version"].value)


def run_pipeline(stack: Stack) -> None:
    import dagster as dg

    from mlops_assets.definitions import build_defs
    from mlops_assets.models.promotion import approve, promote
    from mlops_assets_tests.fake_openai import FakeOpenAIConfig, FakeOpenAIServer

    with FakeOpenAIServer(FakeOpenAIConfig(required_api_key=FAKE_KEY)) as llm:
        stack.env["OPENAI_BASE_URL"] = llm.base_url
        with stack.active():
            instance = prod_instance(stack.dagster_home)
            try:
                defs = build_defs()
                features = _materialize(defs, instance, dg.AssetSelection.groups("ingestion", "features"))
                stack.run_ids["features"] = features.run_id
                for i, seed in enumerate((3, 11)):
                    trained = _materialize(defs, instance, dg.AssetSelection.assets("trained_model"),
                                           run_config={"ops": {"trained_model": {"config": {"seed": seed}}}})
                    stack.run_ids[f"train{i + 1}"] = trained.run_id
                    stack.versions.append(_version_of(trained))
                instance.add_dynamic_partitions("prompt_templates", [PROMPT_ID])
                prompt = defs.resolve_job_def("prompt_evaluation_job").execute_in_process(
                    instance=instance, partition_key=PROMPT_ID, raise_on_error=False)
                stack.run_ids["prompt"] = prompt.run_id
                assert prompt.get_asset_materialization_events(), "the prompt evaluation did not run"
            finally:
                instance.dispose()
            client, store = stack.client(), stack.store()
            approve(client, store, stack.model_name, stack.versions[0], reviewer="alice", compliance_required=False)
            promote(client, store, stack.model_name, stack.versions[0], alias="production", actor="alice",
                    reason="first production version", compliance_required=False)
            store.close()
        stack.llm_requests = list(llm.requests)
        del stack.env["OPENAI_BASE_URL"]


@pytest.fixture(scope="session")
def stack(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("prod_stack")
    home = root / "home"
    prompts = root / "prompts"
    shutil.copytree(PROJECT_ROOT / "prompts", prompts)
    config = write_config(root / "config.yaml", prompts_dir=str(prompts))
    with ExitStack() as cleanup:
        dagster_url = cleanup.enter_context(fresh_database(services, "dagster_t"))
        governance_url = cleanup.enter_context(fresh_database(services, "governance_t"))
        model_name, experiment = f"prod_direction_{SESSION}", f"prod-tests-{SESSION}"
        env = {
            "MLOPS_HOME": str(home), "MLOPS_CONFIG": str(config), "DAGSTER_HOME": str(root / "dagster"),
            "DAGSTER_PG_URL": dagster_url, "MLFLOW_TRACKING_URI": services.mlflow_url,
            "MLOPS_GOVERNANCE_URL": governance_url, "MLFLOW_MODEL_NAME": model_name,
            "MLFLOW_EXPERIMENT_NAME": experiment, "MLFLOW_MODEL_STAGE": "production", "OPENAI_API_KEY": FAKE_KEY,
        }
        built = Stack(services, home, config, root / "dagster", dagster_url, governance_url, model_name,
                      experiment, env)
        with mlflow_globals_restored():
            run_pipeline(built)
        yield built
    os.environ.pop("DAGSTER_PG_URL", None)

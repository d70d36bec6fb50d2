"""Pytest fixtures for LLM tests: the local OpenAI-compatible server and the embedding model.

Register once in ``mlops_assets_tests/conftest.py`` with
``pytest_plugins = ["mlops_assets_tests.conftest_llm"]`` (test modules that need the fixtures
also name it in their own ``pytest_plugins``, which is a no-op once it is registered).

- ``fake_openai_server`` (session): a :class:`FakeOpenAIServer` on a free port;
- ``fake_openai`` (function): the same server, reset to its default behaviour and empty log;
- ``openai_client`` (function): a real ``openai.OpenAI`` client pointed at it;
- ``embedder`` (session): the all-MiniLM-L6-v2 model, loaded once per test process;
- ``llm_tracking_uri`` (session): one SQLite MLflow store for the prompt-registry and LLM tests
  (creating the schema costs seconds; tests use their own prompt and model names).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mlops_assets_tests.fake_openai import FAKE_API_KEY, FakeOpenAIServer


@pytest.fixture(scope="session")
def fake_openai_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture()
def fake_openai(fake_openai_server: FakeOpenAIServer) -> FakeOpenAIServer:
    fake_openai_server.reset()
    return fake_openai_server


@pytest.fixture()
def openai_client(fake_openai: FakeOpenAIServer) -> Any:
    from openai import OpenAI

    return OpenAI(api_key=FAKE_API_KEY, base_url=fake_openai.base_url, max_retries=0, timeout=10)


@pytest.fixture(scope="session")
def llm_tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('llm_mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="session")
def embedder() -> Any:
    from mlops_assets.prompts.groundedness import get_embedder

    return get_embedder()

"""Test-wide set-up: every test session gets its own MLOPS_HOME, and nothing reaches the network."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["mlops_assets_tests.conftest_llm"]

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
for _var in ("MLFLOW_TRACKING_URI", "MLOPS_CONFIG", "DATA_LOADER_TYPE", "DATA_SOURCE_PATH", "OPENAI_API_KEY",
             "OPENAI_BASE_URL", "MLFLOW_MODEL_NAME", "MLFLOW_MODEL_STAGE", "MLFLOW_EXPERIMENT_NAME"):
    os.environ.pop(_var, None)


@pytest.fixture()
def mlops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh MLOPS_HOME for one test, with Settings reloaded from it."""
    from mlops_assets.settings import get_settings

    home = tmp_path / "mlops_home"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    get_settings.cache_clear()
    get_settings().ensure_dirs()
    yield home
    get_settings.cache_clear()

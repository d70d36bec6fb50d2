"""Settings: defaults < YAML < environment; paths resolved against the project root; bad values named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlops_assets.settings import PROJECT_ROOT, SettingsError, load_settings


def test_precedence_defaults_yaml_env(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name: from_yaml\n  experiment_name: exp_yaml\nmonitoring:\n  drift_share_threshold: 0.4\n")
    s = load_settings(env={"MLFLOW_MODEL_NAME": "from_env"}, config_path=cfg)
    assert s.model.name == "from_env"            # env beats yaml
    assert s.model.experiment_name == "exp_yaml"  # yaml beats default
    assert s.monitoring.drift_share_threshold == 0.4
    assert s.data.loader_type == "synthetic"      # default


def test_relative_home_resolves_against_project_root() -> None:
    s = load_settings(env={"MLOPS_HOME": "some/where"}, config_path=None)
    assert s.home == (PROJECT_ROOT / "some/where").resolve()
    assert s.mlflow_tracking_uri == f"sqlite:///{s.home / 'mlflow.db'}"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"DATA_LOADER_TYPE": "ftp"}, "data.loader_type"),
        ({"DATA_LOADER_TYPE": "local", "DATA_SOURCE_PATH": "/no/such/dir"}, "data.source_path"),
        ({"DATA_LOADER_TYPE": "local"}, "data.source_path"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(env=env, config_path=None)


def test_threshold_out_of_range_in_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("monitoring:\n  drift_share_threshold: 3\n")
    with pytest.raises(SettingsError, match=r"monitoring\.drift_share_threshold"):
        load_settings(env={}, config_path=cfg)
    cfg.write_text("data:\n  warehouse_threads: -1\n")
    with pytest.raises(SettingsError, match=r"data\.warehouse_threads"):
        load_settings(env={}, config_path=cfg)
    cfg.write_text("modle:\n  name: typo\n")
    with pytest.raises(SettingsError, match="modle"):
        load_settings(env={}, config_path=cfg)


def test_stage_maps_onto_alias() -> None:
    assert load_settings(env={"MLFLOW_MODEL_STAGE": "Production"}).serving_alias == "production"
    assert load_settings(env={"MLFLOW_MODEL_STAGE": "STAGING"}).serving_alias == "staging"
    assert load_settings(env={"MLFLOW_MODEL_STAGE": "champion"}).serving_alias == "champion"


def test_opening_a_home_does_not_leak_its_tracking_uri_into_later_settings(tmp_path, monkeypatch) -> None:
    """MLflow exports the URI it is given as MLFLOW_TRACKING_URI; a second home opened later in the same
    process (the demo, a code server, the test suite) must still get its own registry."""
    import mlflow

    from mlops_assets import stores
    from mlops_assets.settings import load_settings

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = load_settings(env={"MLOPS_HOME": str(tmp_path / "one")})
    stores.mlflow_client(first)
    assert mlflow.get_tracking_uri() == first.mlflow_tracking_uri  # fluent calls use the opened home
    second = load_settings(env={**os.environ, "MLOPS_HOME": str(tmp_path / "two")})
    assert second.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'two' / 'mlflow.db'}"

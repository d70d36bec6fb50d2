"""Dagster wiring tests: a temporary MLOPS_HOME with a small config, and a real Dagster instance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

SMALL_CONFIG = {
    "data": {"n_symbols": 12, "n_days": 420, "seed": 7},
    "features": {"leakage_sample_dates": 2},
    "model": {"max_epochs": 3, "hidden_sizes": [16], "batch_size": 256},
    "evaluation": {"shap_sample": 20, "stress_windows": 1},
}


def write_config(home: Path, overrides: dict | None = None) -> Path:
    config = {k: dict(v) for k, v in SMALL_CONFIG.items()}
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    path = home.parent / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def small_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from mlops_assets.settings import get_settings

    home = tmp_path / "home"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    monkeypatch.setenv("MLOPS_CONFIG", str(write_config(home)))
    get_settings.cache_clear()
    get_settings().ensure_dirs()
    yield home
    get_settings.cache_clear()


def build(home: Path):
    """Fresh Definitions for the current settings (resources read MLOPS_HOME at build time)."""
    from mlops_assets.definitions import build_defs

    return build_defs()


@pytest.fixture()
def instance(small_home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(small_home / "dagster")) as inst:
        yield inst

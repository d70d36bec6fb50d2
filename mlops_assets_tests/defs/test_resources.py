"""PlatformResource: every field it shows in the launchpad changes what the run uses."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from mlops_assets.defs.resources import PlatformResource, build_resources
from mlops_assets.settings import get_settings


def test_unset_fields_keep_the_settings(small_home: Path) -> None:
    assert PlatformResource().settings == get_settings()
    built = build_resources(get_settings())["platform"]
    assert built.settings.home == get_settings().home
    assert built.settings.mlflow_tracking_uri == get_settings().mlflow_tracking_uri


def test_changed_home_moves_every_store(small_home: Path, tmp_path: Path, monkeypatch) -> None:
    # mlflow.set_tracking_uri (any earlier test in this process) exports MLFLOW_TRACKING_URI, which the
    # settings would read as an explicit tracking URI; this test is about the one derived from home
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    other = tmp_path / "other-home"
    resource = PlatformResource(home=str(other), model_name="spread_model", experiment_name="spreads")
    s = resource.settings
    assert s.home == other
    assert s.warehouse_path == other / "warehouse.duckdb"
    assert s.mlflow_tracking_uri == f"sqlite:///{other / 'mlflow.db'}"
    assert (s.model.name, s.model.experiment_name) == ("spread_model", "spreads")
    assert get_settings().model.name != "spread_model"  # the process-wide settings are untouched
    s.ensure_dirs()
    resource.governance()  # a real governance store, opened where the field says
    assert (other / "governance.db").exists()
    assert not (small_home / "governance.db").exists()


def test_a_launchpad_override_reaches_the_asset(small_home: Path, tmp_path: Path) -> None:
    other = tmp_path / "launchpad-home"
    seen: dict[str, str] = {}

    @dg.asset
    def where(platform: PlatformResource) -> None:
        seen["home"] = str(platform.settings.home)
        seen["model"] = platform.settings.model.name

    result = dg.materialize([where], resources={"platform": PlatformResource(home=str(other), model_name="m2")})
    assert result.success
    assert seen == {"home": str(other), "model": "m2"}

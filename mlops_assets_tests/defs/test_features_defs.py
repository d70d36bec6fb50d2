"""The ingestion and feature groups materialized on a temporary MLOPS_HOME, and their gates failing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from mlops_assets.data.warehouse import Warehouse
from mlops_assets.features.views import FEATURE_VIEWS, FeatureDef
from mlops_assets_tests.defs.conftest import build

FEATURE_SELECTION = dg.AssetSelection.groups("ingestion", "features")


def _materialize(defs: dg.Definitions, selection, instance=None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*defs.assets, *(defs.asset_checks or [])], resources=defs.resources, selection=selection,
        raise_on_error=False, instance=instance,
    )


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture()
def materialized(small_home: Path):
    defs = build(small_home)
    result = _materialize(defs, FEATURE_SELECTION)
    return small_home, defs, result


def test_feature_group_materializes_with_its_gates(materialized) -> None:
    from mlops_assets.features.online import OnlineFeatureStore
    from mlops_assets.features.readmodels import read_read_model

    home, _, result = materialized
    assert result.success
    checks = _checks(result)
    assert checks["schema_change_versioned"].passed and checks["point_in_time_correct"].passed
    wh = Warehouse(home / "warehouse.duckdb")
    tables = set(wh.list_tables())
    assert {"raw_market_data", "fv_price_returns_v1", "feature_catalog", "training_dataset"} <= tables
    raw = wh.read_table("raw_market_data")
    assert raw["symbol"].n_unique() == 12
    dataset = wh.read_table("training_dataset")
    assert set(dataset["split"].unique()) == {"train", "validation", "test"}
    # the point-in-time label: next day's direction, checked on one symbol against the raw prices
    sym = dataset["symbol"][0]
    px = raw.filter(pl.col("symbol") == sym).sort("date").with_columns(
        (pl.col("close").shift(-1) > pl.col("close")).cast(pl.Int32).alias("expected"))
    joined = dataset.filter(pl.col("symbol") == sym).join(px.select("date", "expected"), on="date")
    assert joined.height > 0 and (joined["label"] == joined["expected"]).all()
    # the online snapshot and read-models the serving processes read
    store = OnlineFeatureStore(home / "online")
    store.load()
    row = store.lookup(sym)
    assert row is not None and "ret_5d" in row
    assert store.feature_view_versions == {v.name: v.version for v in FEATURE_VIEWS}
    catalog = read_read_model(home / "readmodels", "feature_catalog")
    assert catalog.height == sum(len(v.features) for v in FEATURE_VIEWS)
    mats = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert mats["raw_market_data"]["dagster/row_count"].value == raw.height
    assert "histograms" in mats["feature_statistics"]


def test_schema_change_without_major_bump_fails_the_catalog_gate(materialized, monkeypatch) -> None:
    home, _, first = materialized
    assert first.success
    before = Warehouse(home / "warehouse.duckdb").read_table("feature_catalog")
    view = FEATURE_VIEWS[0]
    retyped = replace(view, features=tuple(
        replace(f, dtype=pl.Float32()) if f.name == "ret_5d" else f for f in view.features))
    monkeypatch.setattr("mlops_assets.defs.features.FEATURE_VIEWS", (retyped, *FEATURE_VIEWS[1:]))
    defs = build(home)
    result = _materialize(defs, dg.AssetSelection.assets("feature_catalog"))
    check = _checks(result)["schema_change_versioned"]
    assert not check.passed
    assert "ret_5d" in check.description
    after = Warehouse(home / "warehouse.duckdb").read_table("feature_catalog")
    assert after.sort("view", "feature").equals(before.sort("view", "feature"))  # history untouched


def test_a_feature_that_looks_ahead_fails_the_leakage_gate(materialized, monkeypatch) -> None:
    home, _, first = materialized
    assert first.success
    view = FEATURE_VIEWS[0]
    leaky = replace(view, features=(*view.features, FeatureDef(
        "next_day_return", pl.col("close").shift(-1) / pl.col("close") - 1, "tomorrow's return (a leak)",
        inputs=("close",))))
    monkeypatch.setattr("mlops_assets.defs.features.FEATURE_VIEWS", (leaky, *FEATURE_VIEWS[1:]))
    defs = build(home)
    result = _materialize(defs, dg.AssetSelection.assets("training_dataset"))
    check = _checks(result)["point_in_time_correct"]
    assert not check.passed
    assert "next_day_return" in check.description


def test_bad_source_file_fails_with_a_readable_message(small_home: Path, monkeypatch) -> None:
    from mlops_assets.settings import get_settings

    bad = small_home.parent / "bad.csv"
    bad.write_text("symbol,date,open\nA,2024-01-02,1\n")
    monkeypatch.setenv("DATA_LOADER_TYPE", "local")
    monkeypatch.setenv("DATA_SOURCE_PATH", str(bad))
    get_settings.cache_clear()
    defs = build(small_home)
    result = _materialize(defs, dg.AssetSelection.assets("raw_market_data"))
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "bad.csv" in failure.event_specific_data.error.message
    assert "close" in failure.event_specific_data.error.message


def test_a_view_retyped_without_a_major_bump_refuses_to_write_its_table(materialized) -> None:
    from mlops_assets.defs.features import build_view_asset

    home, defs, first = materialized
    assert first.success
    view = FEATURE_VIEWS[0]
    table = f"fv_{view.name}_v{view.version.split('.')[0]}"
    before = Warehouse(home / "warehouse.duckdb").read_table(table)
    retyped = replace(view, features=tuple(
        replace(f, dtype=pl.Float32()) if f.name == "ret_5d" else f for f in view.features))
    asset = build_view_asset(retyped)
    raw = next(a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.key == dg.AssetKey("raw_market_data"))
    result = dg.materialize([asset, raw.to_source_asset()], resources=defs.resources, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "ret_5d" in failure.description and "major version bump" in failure.description
    assert f"{table} not written" in failure.description
    assert Warehouse(home / "warehouse.duckdb").read_table(table).equals(before)  # nothing was written

"""Read-models: atomic Parquet exports the management API reads instead of DuckDB."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from mlops_assets.features.catalog import catalog_rows
from mlops_assets.features.readmodels import (
    CATALOG,
    ReadModelNameError,
    ReadModelNotFoundError,
    dataset_sample_name,
    export_read_model,
    list_read_models,
    read_model_manifest,
    read_read_model,
    sample_rows,
)
from mlops_assets.features.views import FEATURE_VIEWS


def test_round_trip_keeps_types_including_lists_and_timestamps(tmp_path: Path) -> None:
    catalog = catalog_rows(FEATURE_VIEWS, now=datetime(2024, 5, 1, tzinfo=UTC))
    path = export_read_model(catalog, tmp_path, CATALOG, extra={"run_id": "abc"})
    assert path.exists() and path.parent == tmp_path
    back = read_read_model(tmp_path, CATALOG)
    assert back.equals(catalog)
    assert back.schema == catalog.schema
    manifest = read_model_manifest(tmp_path, CATALOG)
    assert manifest["rows"] == catalog.height and manifest["run_id"] == "abc"
    assert manifest["columns"] == catalog.columns
    assert manifest["data_file"] == path.name


def test_replacing_keeps_one_previous_file(tmp_path: Path) -> None:
    paths = [export_read_model(pl.DataFrame({"x": [i]}), tmp_path, "stats") for i in range(4)]
    assert read_read_model(tmp_path, "stats")["x"].to_list() == [3]
    remaining = sorted(p.name for p in tmp_path.glob("stats-*.parquet"))
    assert remaining == sorted([paths[2].name, paths[3].name])
    # another name with the same prefix is never touched
    export_read_model(pl.DataFrame({"y": [1]}), tmp_path, "stats-extra")
    export_read_model(pl.DataFrame({"x": [9]}), tmp_path, "stats")
    assert read_read_model(tmp_path, "stats-extra")["y"].to_list() == [1]
    assert list_read_models(tmp_path) == ["stats", "stats-extra"]


def test_missing_and_unsafe_names(tmp_path: Path) -> None:
    with pytest.raises(ReadModelNotFoundError, match="materialize"):
        read_read_model(tmp_path, CATALOG)
    assert isinstance(ReadModelNotFoundError("x"), FileNotFoundError)
    for bad in ("../etc", "a/b", "", ".hidden"):
        with pytest.raises(ReadModelNameError, match="name"):
            export_read_model(pl.DataFrame({"x": [1]}), tmp_path, bad)
    assert list_read_models(tmp_path / "nowhere") == []


def test_dataset_sample_is_seeded_and_ordered() -> None:
    df = pl.DataFrame({"i": list(range(10_000))})
    sample = sample_rows(df, n=300, seed=4)
    assert sample.height == 300
    assert sample["i"].is_sorted()
    assert sample.equals(sample_rows(df, n=300, seed=4))
    assert sample_rows(df.head(10), n=300).height == 10
    assert dataset_sample_name("training_dataset") == "training_dataset_sample"

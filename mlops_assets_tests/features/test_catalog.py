"""Feature catalog: rows per feature and version, skipped notes, history across versions, diffs."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import polars as pl
import pytest

from mlops_assets.data.synthetic import generate_market_data
from mlops_assets.features.catalog import (
    CATALOG_SCHEMA,
    CatalogError,
    catalog_rows,
    diff_versions,
    latest_versions,
    merge_history,
    schema_from_catalog,
    versions_of,
)
from mlops_assets.features.compute import compute_views
from mlops_assets.features.views import FEATURE_VIEWS, PRICE_RETURNS, TECHNICAL_INDICATORS, FeatureDef

T0 = datetime(2024, 1, 1, tzinfo=UTC)
T1 = datetime(2024, 2, 1, tzinfo=UTC)


def _bumped(view, version, features, description=None):  # noqa: ANN001, ANN202
    return dataclasses.replace(view, version=version, features=tuple(features),
                               description=description or view.description)


def test_one_row_per_declared_feature_with_lineage() -> None:
    catalog = catalog_rows(FEATURE_VIEWS, now=T0)
    assert dict(catalog.schema) == CATALOG_SCHEMA
    assert catalog.height == sum(len(v.features) for v in FEATURE_VIEWS)
    row = catalog.filter(pl.col("feature") == "rsi_14").row(0, named=True)
    assert row["view"] == "technical_indicators"
    assert row["version"] == TECHNICAL_INDICATORS.version
    assert row["table"] == f"fv_technical_indicators_v{TECHNICAL_INDICATORS.major}"
    assert row["owner"] == TECHNICAL_INDICATORS.owner
    assert row["tags"] == list(TECHNICAL_INDICATORS.tags)
    assert row["upstream"] == ["raw_market_data"]
    assert row["schema_hash"] == TECHNICAL_INDICATORS.schema_hash()
    assert row["status"] == "declared" and row["skipped_reason"] is None
    assert row["created_at"] == T0
    # declared order is kept within a view
    assert catalog.filter(pl.col("view") == "price_returns")["feature"].to_list() == PRICE_RETURNS.feature_names


def test_skipped_features_are_marked_with_the_reason() -> None:
    market = generate_market_data(n_symbols=2, n_days=80, seed=1).drop("volume")
    results = compute_views(FEATURE_VIEWS, market)
    catalog = catalog_rows(FEATURE_VIEWS, results, upstream={"technical_indicators": ["raw_market_data", "x"]})
    skipped = catalog.filter(pl.col("status") == "skipped")
    assert skipped["feature"].to_list() == ["volume_z_20"]
    assert "volume" in skipped["skipped_reason"].item()
    assert skipped["upstream"].to_list() == [["raw_market_data", "x"]]
    assert catalog.filter(pl.col("feature") == "ret_1d")["status"].item() == "computed"


def test_history_keeps_old_versions_and_first_seen_time() -> None:
    v1 = catalog_rows([PRICE_RETURNS], now=T0)
    extra = FeatureDef("ret_60d", pl.col("close") / pl.col("close").shift(60) - 1, "Return over 60 days.")
    v1_1 = _bumped(PRICE_RETURNS, "1.1.0", [*PRICE_RETURNS.features, extra])
    merged = merge_history(v1, catalog_rows([v1_1], now=T1))
    assert versions_of(merged, "price_returns") == ["1.0.0", "1.1.0"]
    assert merged.height == len(PRICE_RETURNS.features) * 2 + 1
    # re-registering the same version keeps when it was first seen, updates the rest
    again = merge_history(merged, catalog_rows([v1_1], now=datetime(2024, 3, 1, tzinfo=UTC)))
    assert again.height == merged.height
    assert set(again.filter(pl.col("version") == "1.1.0")["created_at"].to_list()) == {T1}
    assert set(again.filter(pl.col("version") == "1.0.0")["created_at"].to_list()) == {T0}
    assert latest_versions(again) == {"price_returns": "1.1.0"}


def test_versions_sort_numerically_not_as_text() -> None:
    rows = [catalog_rows([_bumped(PRICE_RETURNS, v, PRICE_RETURNS.features)], now=T0) for v in ("1.10.0", "1.9.0", "1.2.0")]
    merged = merge_history(merge_history(rows[0], rows[1]), rows[2])
    assert versions_of(merged, "price_returns") == ["1.2.0", "1.9.0", "1.10.0"]
    assert latest_versions(merged)["price_returns"] == "1.10.0"


def test_merge_accepts_a_stored_catalog_without_new_columns() -> None:
    stored = catalog_rows([PRICE_RETURNS], now=T0).drop("source_columns", "definition_hash")
    merged = merge_history(stored, catalog_rows([TECHNICAL_INDICATORS], now=T1))
    assert set(merged["view"]) == {"price_returns", "technical_indicators"}
    assert merged.filter(pl.col("view") == "price_returns")["source_columns"].null_count() == len(PRICE_RETURNS.features)


def test_diff_between_versions() -> None:
    features = list(PRICE_RETURNS.features)
    retyped = dataclasses.replace(features[0], dtype=pl.Float32())
    redescribed = dataclasses.replace(features[1], description="Another text.")
    added = FeatureDef("ret_60d", pl.col("close") / pl.col("close").shift(60) - 1, "Return over 60 days.")
    v2 = _bumped(PRICE_RETURNS, "2.0.0", [retyped, redescribed, features[2], added])  # momentum removed
    catalog = merge_history(catalog_rows([PRICE_RETURNS], now=T0), catalog_rows([v2], now=T1))
    diff = diff_versions(catalog, "price_returns", "1.0.0", "2.0.0")
    assert diff["added"] == ["ret_60d"]
    assert diff["removed"] == ["momentum_60d"]
    assert diff["retyped"] == [{"feature": "ret_1d", "from": "Float64", "to": "Float32"}]
    assert diff["description_changed"] == ["ret_5d"]
    assert diff["bump"] == "major"
    assert schema_from_catalog(catalog, "price_returns", "2.0.0")["ret_1d"] == "Float32"
    with pytest.raises(CatalogError, match=r"no version '3.0.0'.*1.0.0"):
        diff_versions(catalog, "price_returns", "1.0.0", "3.0.0")

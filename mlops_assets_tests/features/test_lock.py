"""The schema-change rule and the committed lock file of view schemas."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from mlops_assets.features.catalog import catalog_rows
from mlops_assets.features.lock import (
    DEFAULT_LOCK_PATH,
    LockFileError,
    check_catalog_against_views,
    check_lock,
    check_schema_change,
    errors,
    write_lock,
)
from mlops_assets.features.views import FEATURE_VIEWS, PRICE_RETURNS, FeatureDef

BASE = {"symbol": "String", "date": "Date", "a": "Float64", "b": "Float64"}


def kinds(violations) -> list[tuple[str, str | None]]:  # noqa: ANN001
    return [(v.kind, v.column) for v in violations]


# -- the rule ----------------------------------------------------------------------------------------

def test_unchanged_schema_passes_any_forward_version() -> None:
    for version in ("1.0.0", "1.0.1", "1.1.0", "2.0.0"):
        assert check_schema_change(BASE, "1.0.0", BASE, version, view="v") == []


def test_removed_column_needs_a_major_bump() -> None:
    current = {k: v for k, v in BASE.items() if k != "b"}
    for version in ("1.0.1", "1.1.0", "1.9.9"):
        violations = check_schema_change(BASE, "1.0.0", current, version, view="v")
        assert kinds(violations) == [("removed", "b")]
        assert "'b'" in violations[0].message and "2.0.0" in violations[0].message
    assert check_schema_change(BASE, "1.0.0", current, "2.0.0") == []


def test_retyped_column_needs_a_major_bump() -> None:
    current = {**BASE, "a": "Float32"}
    violations = check_schema_change(BASE, "1.2.3", current, "1.3.0", view="v")
    assert kinds(violations) == [("retyped", "a")]
    assert "Float64 -> Float32" in violations[0].message
    assert check_schema_change(BASE, "1.2.3", current, "2.0.0") == []


def test_added_column_needs_at_least_a_minor_bump() -> None:
    current = {**BASE, "c": "Float64"}
    assert kinds(check_schema_change(BASE, "1.0.0", current, "1.0.0")) == [("added", "c")]
    assert kinds(check_schema_change(BASE, "1.0.0", current, "1.0.5")) == [("added", "c")]
    assert check_schema_change(BASE, "1.0.0", current, "1.1.0") == []
    assert check_schema_change(BASE, "1.0.0", current, "2.0.0") == []


def test_version_must_not_go_backwards() -> None:
    assert kinds(check_schema_change(BASE, "2.0.0", BASE, "1.9.0")) == [("version_decreased", None)]


# -- the lock file -----------------------------------------------------------------------------------

def test_committed_lock_matches_the_views_and_is_fast() -> None:
    start = time.perf_counter()
    violations = check_lock(FEATURE_VIEWS)
    assert time.perf_counter() - start < 1.0
    assert violations == [], [v.message for v in violations]
    locked = json.loads(DEFAULT_LOCK_PATH.read_text())["views"]
    assert set(locked) == {v.name for v in FEATURE_VIEWS}


def test_committed_lock_passes_in_a_fresh_process() -> None:
    """The hashes must not depend on the process (hash randomisation, import order)."""
    code = (
        "from mlops_assets.features.lock import check_lock; from mlops_assets.features.views import FEATURE_VIEWS;"
        "import sys; sys.exit(len(check_lock(FEATURE_VIEWS)))"
    )
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60).returncode == 0


def test_write_then_check_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "views.lock.json"
    write_lock(FEATURE_VIEWS, path)
    assert check_lock(FEATURE_VIEWS, path) == []
    assert path.read_text().endswith("\n")
    first = path.read_text()
    write_lock(list(reversed(FEATURE_VIEWS)), path)
    assert path.read_text() == first  # stable text: no diff noise


def _locked(tmp_path: Path) -> Path:
    path = tmp_path / "views.lock.json"
    write_lock(FEATURE_VIEWS, path)
    return path


def test_changed_view_fails_the_lock_check(tmp_path: Path) -> None:
    path = _locked(tmp_path)
    dropped = dataclasses.replace(PRICE_RETURNS, features=PRICE_RETURNS.features[:-1])
    views = [dropped, *FEATURE_VIEWS[1:]]
    violations = check_lock(views, path)
    assert kinds(violations) == [("removed", "momentum_60d")]
    assert violations[0].view == "price_returns" and violations[0].severity == "error"


def test_correct_bump_still_needs_a_new_lock(tmp_path: Path) -> None:
    path = _locked(tmp_path)
    dropped = dataclasses.replace(PRICE_RETURNS, version="2.0.0", features=PRICE_RETURNS.features[:-1])
    violations = check_lock([dropped, *FEATURE_VIEWS[1:]], path)
    assert kinds(violations) == [("stale_lock", None)]
    assert "mlops features lock" in violations[0].message
    write_lock([dropped, *FEATURE_VIEWS[1:]], path)
    assert check_lock([dropped, *FEATURE_VIEWS[1:]], path) == []


def test_added_feature_with_minor_bump_and_new_or_removed_views(tmp_path: Path) -> None:
    path = _locked(tmp_path)
    extra = FeatureDef("ret_60d", pl.col("close") / pl.col("close").shift(60) - 1, "Return over 60 days.")
    same_version = dataclasses.replace(PRICE_RETURNS, features=(*PRICE_RETURNS.features, extra))
    assert kinds(check_lock([same_version, *FEATURE_VIEWS[1:]], path)) == [("added", "ret_60d")]
    new_view = dataclasses.replace(PRICE_RETURNS, name="more_returns")
    assert kinds(check_lock([*FEATURE_VIEWS, new_view], path)) == [("stale_lock", None)]
    assert kinds(check_lock(FEATURE_VIEWS[1:], path)) == [("view_removed", None)]


def test_changed_logic_without_bump_is_a_warning(tmp_path: Path) -> None:
    path = _locked(tmp_path)
    first = PRICE_RETURNS.features[0]
    changed = dataclasses.replace(first, expr=pl.col("close") / pl.col("close").shift(2) - 1)
    view = dataclasses.replace(PRICE_RETURNS, features=(changed, *PRICE_RETURNS.features[1:]))
    violations = check_lock([view, *FEATURE_VIEWS[1:]], path)
    assert kinds(violations) == [("definition_changed", None)]
    assert violations[0].severity == "warning" and errors(violations) == []
    bumped = dataclasses.replace(view, version="1.0.1")
    assert kinds(check_lock([bumped, *FEATURE_VIEWS[1:]], path)) == [("stale_lock", None)]


def test_missing_or_corrupt_lock(tmp_path: Path) -> None:
    assert kinds(check_lock(FEATURE_VIEWS, tmp_path / "nope.json")) == [("missing_lock", None)]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LockFileError, match="mlops features lock"):
        check_lock(FEATURE_VIEWS, bad)


def test_catalog_check_against_views() -> None:
    catalog = catalog_rows(FEATURE_VIEWS, now=datetime(2024, 1, 1, tzinfo=UTC))
    assert check_catalog_against_views(catalog, FEATURE_VIEWS) == []
    retyped = dataclasses.replace(PRICE_RETURNS.features[0], dtype=pl.Float32())
    view = dataclasses.replace(PRICE_RETURNS, features=(retyped, *PRICE_RETURNS.features[1:]))
    violations = check_catalog_against_views(catalog, [view])
    assert kinds(violations) == [("retyped", "ret_1d")]
    assert errors(violations) == violations

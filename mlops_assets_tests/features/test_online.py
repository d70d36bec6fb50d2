"""Online snapshot: latest vector per symbol, atomic publication, reader lookups and reloads
(in threads and from another process)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from mlops_assets.data.synthetic import generate_market_data
from mlops_assets.errors import InvalidInput, NotFound
from mlops_assets.features.atomic import PublicationNotFoundError, Retention, retained_versions
from mlops_assets.features.compute import compute_views
from mlops_assets.features.online import (
    OnlineFeatureStore,
    OnlineSnapshotError,
    build_snapshot,
    online_retention,
    write_online_snapshot,
)
from mlops_assets.features.views import FEATURE_VIEWS, FeatureDef, FeatureView

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def market() -> pl.DataFrame:
    return generate_market_data(n_symbols=5, n_days=200, seed=2)


@pytest.fixture(scope="module")
def frames(market: pl.DataFrame) -> list[pl.DataFrame]:
    return [r.df for r in compute_views(FEATURE_VIEWS, market).values()]


def test_snapshot_is_the_latest_row_of_every_view(tmp_path: Path, frames, market) -> None:
    info = write_online_snapshot(frames, FEATURE_VIEWS, tmp_path)
    assert info.n_entities == 5
    assert info.feature_view_versions == {v.name: v.version for v in FEATURE_VIEWS}
    assert info.feature_names == [f for v in FEATURE_VIEWS for f in v.feature_names]
    assert info.path.exists() and info.path.name == f"snapshot-{info.version}.parquet"
    assert info.as_of == market["date"].max()
    manifest = json.loads(info.manifest_path.read_text())
    assert manifest["version"] == info.version and manifest["data_file"] == info.path.name
    assert manifest["feature_view_versions"] == info.feature_view_versions
    assert manifest["columns"] == ["symbol", "as_of", *info.feature_names]

    store = OnlineFeatureStore(tmp_path).load()
    assert store.version == info.version
    assert store.feature_names == info.feature_names
    assert store.feature_view_versions == info.feature_view_versions
    assert sorted(store.entities) == sorted(market["symbol"].unique().to_list())
    last = market["date"].max()
    for frame in frames:
        expected = frame.filter((pl.col("symbol") == "SYM0003") & (pl.col("date") == last)).row(0, named=True)
        got = store.lookup("SYM0003")
        assert got is not None and got["as_of"] == last.isoformat()
        for feature, value in expected.items():
            if feature not in ("symbol", "date"):
                assert got[feature] == pytest.approx(value) if isinstance(value, float) else got[feature] == value
    assert store.lookup("NOPE") is None
    assert store.lookup_many(["SYM0001", "NOPE"])[1] is None
    looked_up = store.lookup("SYM0001")
    looked_up["ret_1d"] = 123.0  # a copy: the store is not modified
    assert store.lookup("SYM0001")["ret_1d"] != 123.0


def test_symbols_with_stale_views_get_the_oldest_date(tmp_path: Path, frames) -> None:
    last = frames[0]["date"].max()
    stale = frames[1].filter(~((pl.col("symbol") == "SYM0002") & (pl.col("date") == last)))
    missing = frames[2].filter(pl.col("symbol") != "SYM0005")
    snapshot = build_snapshot([frames[0], stale, missing], FEATURE_VIEWS)
    row = snapshot.filter(pl.col("symbol") == "SYM0002").row(0, named=True)
    assert row["as_of"] < last
    assert snapshot.filter(pl.col("symbol") == "SYM0005")["vol_20d"].item() is None
    with pytest.raises(OnlineSnapshotError, match="one per view"):
        build_snapshot(frames[:2], FEATURE_VIEWS)
    with pytest.raises(OnlineSnapshotError, match="ret_1d"):
        build_snapshot([frames[0], frames[0]], FEATURE_VIEWS[:2])


def _constant_frames(k: float, symbols: int = 50) -> tuple[list[pl.DataFrame], list[FeatureView]]:
    """One view whose every feature equals k for every symbol: a reader must never mix two k's."""
    names = [f"f{i}" for i in range(8)]
    frame = pl.DataFrame({
        "symbol": [f"S{i:03d}" for i in range(symbols)],
        "date": [date(2024, 1, 1)] * symbols,
        **{n: [k] * symbols for n in names},
    })
    view = FeatureView(name="const", version="1.0.0", owner="team:test", description="constant",
                       features=tuple(FeatureDef(n, pl.col("close"), "constant") for n in names))
    return [frame], [view]


def test_atomic_swap_keeps_the_previous_file_and_leaves_no_temp_files(tmp_path: Path) -> None:
    infos = [write_online_snapshot(*_constant_frames(float(k)), tmp_path) for k in range(3)]
    assert len({i.version for i in infos}) == 3
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(["snapshot.manifest.json", *(i.path.name for i in infos),  # the default: 30 days
                            *(f"snapshot-{i.version}.manifest.json" for i in infos)])
    same = write_online_snapshot(*_constant_frames(2.0), tmp_path)
    assert same.version == infos[2].version  # same content, same version
    assert not list(tmp_path.glob(".*tmp"))


def test_reader_reloads_only_when_the_version_changes(tmp_path: Path) -> None:
    with pytest.raises(PublicationNotFoundError, match="materialize"):
        OnlineFeatureStore(tmp_path).load()
    write_online_snapshot(*_constant_frames(1.0), tmp_path)
    store = OnlineFeatureStore(tmp_path).load()
    assert store.maybe_reload() is False
    time.sleep(0.01)
    write_online_snapshot(*_constant_frames(1.0), tmp_path)  # same content rewritten
    assert store.maybe_reload() is False and store.lookup("S001")["f0"] == 1.0
    write_online_snapshot(*_constant_frames(2.0), tmp_path)
    assert store.maybe_reload() is True
    assert store.lookup("S001")["f0"] == 2.0
    assert store.maybe_reload() is False


def test_lookup_takes_microseconds(tmp_path: Path) -> None:
    write_online_snapshot(*_constant_frames(1.0, symbols=2_000), tmp_path)
    store = OnlineFeatureStore(tmp_path).load()
    start = time.perf_counter()
    for i in range(20_000):
        store.lookup(f"S{i % 1000:03d}")
    per_lookup = (time.perf_counter() - start) / 20_000
    assert per_lookup < 50e-6, per_lookup


def test_readers_never_see_a_half_written_snapshot(tmp_path: Path) -> None:
    """Reader threads and a reader process poll while the writer publishes 19 new versions; every
    row they see has all features from one version, and nothing fails."""
    write_online_snapshot(*_constant_frames(0.0), tmp_path)
    code = (
        "import time; from mlops_assets.features.online import OnlineFeatureStore\n"
        f"s = OnlineFeatureStore({str(tmp_path)!r}).load(); seen = set(); end = time.time() + 30\n"
        "print('ready', flush=True)\n"
        "while time.time() < end:\n"
        "    s.maybe_reload(); r = s.lookup('S007'); v = {r[f'f{i}'] for i in range(8)}\n"
        "    assert len(v) == 1, r; seen |= v\n"
        "    if 19.0 in seen: break\n"
        "print(len(seen))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"

    store = OnlineFeatureStore(tmp_path).load()
    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                store.maybe_reload()
                row = store.lookup("S007")
                if row is None or len({row[f"f{i}"] for i in range(8)}) != 1:
                    problems.append(f"inconsistent row {row}")
            except Exception as exc:  # noqa: BLE001 - any error is a failure of the protocol
                problems.append(repr(exc))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for k in range(1, 20):
        write_online_snapshot(*_constant_frames(float(k)), tmp_path)
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0, out
    assert problems == []
    assert store.lookup("S007")["f0"] == 19.0


def test_same_rows_under_new_view_versions_is_a_new_snapshot(tmp_path: Path, frames) -> None:
    from dataclasses import replace

    first = write_online_snapshot(frames, FEATURE_VIEWS, tmp_path)
    store = OnlineFeatureStore(tmp_path).load()
    bumped = (replace(FEATURE_VIEWS[0], version="1.0.1"), *FEATURE_VIEWS[1:])
    second = write_online_snapshot(frames, bumped, tmp_path)
    assert second.version != first.version
    assert store.maybe_reload() is True
    assert store.feature_view_versions[FEATURE_VIEWS[0].name] == "1.0.1"


T0 = datetime(2024, 3, 1, tzinfo=UTC)


def test_retention_keeps_versions_by_count_and_by_age_and_opens_them(tmp_path: Path) -> None:
    """Five publications a day apart, policy: the newest 2 and anything superseded < 2.5 days ago."""
    policy = online_retention(versions=2, days=2.5)
    infos = [write_online_snapshot(*_constant_frames(float(k)), tmp_path, policy, now=T0 + timedelta(days=k))
             for k in range(5)]
    # v4 current, v3 newest-2; v2 superseded at day 3 (1 day ago), v1 at day 2 (2 days), v0 at day 1 (3 days)
    kept = retained_versions(tmp_path, "snapshot", policy, now=T0 + timedelta(days=4))
    assert kept == [infos[k].version for k in (4, 3, 2, 1)]
    assert sorted(p.name for p in tmp_path.glob("snapshot-*.parquet")) == sorted(
        infos[k].path.name for k in (1, 2, 3, 4))
    old = OnlineFeatureStore.at_version(tmp_path, infos[1].version, policy)
    assert old.version == infos[1].version and old.lookup("S001")["f0"] == 1.0
    assert old.feature_view_versions == {"const": "1.0.0"} and old.feature_names == [f"f{i}" for i in range(8)]
    manifest = json.loads((tmp_path / f"snapshot-{infos[1].version}.manifest.json").read_text())
    assert manifest["published_at"] == (T0 + timedelta(days=1)).isoformat()
    write_online_snapshot(*_constant_frames(9.0), tmp_path, policy, now=T0 + timedelta(days=5))
    assert old.maybe_reload() is False and old.version == infos[1].version  # pinned
    current = OnlineFeatureStore(tmp_path).load()
    assert current.lookup("S001")["f0"] == 9.0  # the current snapshot is what readers get
    with pytest.raises(NotFound) as pruned:
        OnlineFeatureStore.at_version(tmp_path, infos[0].version, policy)
    assert "features.online_retention_days=2.5" in str(pruned.value)
    assert "features.online_retention_versions=2" in str(pruned.value)
    assert pruned.value.field == "snapshot_version"
    with pytest.raises(NotFound, match="pruned by the retention policy"):  # a day later, v1 aged out
        OnlineFeatureStore.at_version(tmp_path, infos[1].version, policy)
    with pytest.raises(NotFound, match="not a published version"):
        OnlineFeatureStore.at_version(tmp_path, "../../etc", policy)


def test_retention_never_drops_the_previous_version_and_is_validated(tmp_path: Path) -> None:
    tight = online_retention(versions=2, days=0)
    infos = [write_online_snapshot(*_constant_frames(float(k)), tmp_path, tight, now=T0 + timedelta(days=k))
             for k in range(4)]
    assert sorted(p.name for p in tmp_path.glob("snapshot-*.parquet")) == sorted(
        infos[k].path.name for k in (2, 3))
    assert OnlineFeatureStore.at_version(tmp_path, infos[2].version, tight).lookup("S000")["f3"] == 2.0
    for bad in ({"versions": 1}, {"versions": 2.5}, {"days": -1.0}, {"days": float("nan")}):
        with pytest.raises(InvalidInput):
            Retention(**bad)


def test_retention_settings_are_validated(tmp_path: Path) -> None:
    from mlops_assets.settings import SettingsError, load_settings

    config = tmp_path / "config.yaml"
    config.write_text("features: {online_retention_versions: 5, online_retention_days: 7}\n")
    features = load_settings(env={"MLOPS_HOME": str(tmp_path)}, config_path=config).features
    assert online_retention(features.online_retention_versions, features.online_retention_days) == Retention(
        5, 7.0, "features.online_retention_versions=5, features.online_retention_days=7")
    for bad in ("online_retention_versions: 1", "online_retention_days: -1"):
        config.write_text(f"features: {{{bad}}}\n")
        with pytest.raises(SettingsError, match=bad.split(":")[0]):
            load_settings(env={"MLOPS_HOME": str(tmp_path)}, config_path=config)

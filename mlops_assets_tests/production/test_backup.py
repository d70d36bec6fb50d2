"""Backup and restore of the embedded MLOPS_HOME through the CLI commands: a round trip into a fresh home at
another path (the old one gone) leaves the registry, the warehouse, the online snapshot, Dagster's history
and the audit log as they were, and the model loads from the restored artifacts. A tampered archive and a
non-empty target are refused; restoring an older database under a newer anchor is detected and
re-anchored with ``reset_anchor``."""

from __future__ import annotations

import io
import shutil
import stat
import tarfile
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from mlops_assets.settings import load_settings

pytestmark = pytest.mark.xdist_group("production")
MODEL = "backup_direction"


def _env(home: Path, config: Path) -> dict[str, str]:
    return {"MLOPS_HOME": str(home), "MLOPS_CONFIG": str(config)}


def _build_home(home: Path, config: Path) -> dict:
    """A small but complete home: warehouse tables, an MLflow registry with aliases, approvals and
    deployments in the governance store, an online snapshot and a Dagster instance with history."""
    import dagster as dg

    from mlops_assets import stores
    from mlops_assets.data.synthetic import generate_market_data
    from mlops_assets.features.online import write_online_snapshot
    from mlops_assets.features.views import FeatureDef, FeatureView
    from mlops_assets.models.promotion import approve, promote
    from mlops_assets.models.registration import apply_gate, train_and_register
    from mlops_assets_tests.models.synthetic import make_dataset

    s = load_settings(env=_env(home, config))
    s.ensure_dirs()
    wh = stores.warehouse(s)
    market = generate_market_data(n_symbols=4, n_days=60, seed=3)
    wh.write_table("raw_market_data", market)
    data, features = make_dataset(n_rows=400, n_features=4, seed=0)
    wh.write_table("training_dataset", data)
    lineage = {"registered_by": "alice", "feature_views": {"v": "1.0.0"}}
    v1 = train_and_register(data, features, {"hidden_sizes": (4,), "max_epochs": 1, "batch_size": 256},
                            s.mlflow_tracking_uri, "backup-tests", MODEL, lineage,
                            artifact_location=str(s.artifacts_dir))
    client, store = stores.mlflow_client(s), stores.governance_store(s)
    src = client.get_model_version(MODEL, v1.version)
    v2 = str(client.create_model_version(MODEL, src.source, run_id=src.run_id, tags=src.tags,
                                         model_id=src.source.rsplit("/", 1)[-1]).version)
    for version in (v1.version, v2):
        apply_gate(client, MODEL, version, "test_auc", 0.7, 0.5, store=store)
    approve(client, store, MODEL, v1.version, reviewer="bob", compliance_required=False)
    promote(client, store, MODEL, v1.version, alias="production", actor="bob", compliance_required=False)
    client.set_registered_model_alias(MODEL, "staging", v2)
    store.record_drift_event(source="backup-test", features=["f0"], drifted_share=0.4, severity="low")
    view = FeatureView(name="v", version="1.0.0", owner="team:test", description="backup test view",
                       features=tuple(FeatureDef(f, pl.col("close") * i, f) for i, f in enumerate(features)))
    write_online_snapshot([data.select("symbol", "date", *features)], [view], s.online_dir)
    with dg.DagsterInstance.local_temp(tempdir=str(s.dagster_home)) as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("backup_marker", metadata={"n": 1}))
    return {"features": features, "versions": (v1.version, v2), "audit": len(store.list_audit(limit=None))}


def _registry(client) -> dict:
    out = {}
    for mv in client.search_model_versions(f"name='{MODEL}'"):
        full = client.get_model_version(MODEL, mv.version)
        out[str(mv.version)] = (sorted(full.aliases), {k: v for k, v in full.tags.items()}, full.run_id)
    return out


def _tables(s) -> dict[str, pl.DataFrame]:
    from mlops_assets import stores

    wh = stores.warehouse(s)
    return {t: wh.read_table(t) for t in wh.list_tables()}


def test_backup_and_restore_round_trip_into_a_fresh_home(tmp_path: Path, monkeypatch) -> None:
    from mlops_assets import stores
    from mlops_assets.backup import BackupError, BackupInvalid, read_backup_manifest, restore_home
    from mlops_assets.cli import app
    from mlops_assets.features.atomic import read_published
    from mlops_assets.features.online import SNAPSHOT_NAME
    from mlops_assets.models.wrapper import load_wrapper
    from mlops_assets.settings import get_settings

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": MODEL}, "evaluation": {"compliance_required": False}}))
    home = tmp_path / "site-a" / "home"
    built = _build_home(home, config)
    before = load_settings(env=_env(home, config))
    registry, tables = _registry(stores.mlflow_client(before)), _tables(before)
    snapshot = read_published(before.online_dir, SNAPSHOT_NAME)[1]
    archive = tmp_path / "backups" / "home.tar.gz"

    runner = CliRunner()
    for key, value in _env(home, config).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    result = runner.invoke(app, ["backup", "--out", str(archive)])
    assert result.exit_code == 0, result.output
    assert "2 table(s)" in result.output and "audit key included" in result.output
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    manifest = read_backup_manifest(archive)
    kinds = {e.path: e.kind for e in manifest.entries}
    assert kinds["warehouse.duckdb"] == "duckdb" and kinds["mlflow.db"] == "sqlite"
    assert kinds["governance.db"] == "sqlite" and kinds["secrets/audit.key"] == "file"
    assert any(p.startswith("dagster/") and k == "sqlite" for p, k in kinds.items())
    assert not any(p.endswith(("-wal", "-shm", ".lock")) for p in kinds)

    shutil.move(tmp_path / "site-a", tmp_path / "site-a-gone")  # the old home no longer exists at its path
    fresh = tmp_path / "site-b" / "home"
    monkeypatch.setenv("MLOPS_HOME", str(fresh))
    get_settings.cache_clear()
    result = runner.invoke(app, ["restore", str(archive)])
    assert result.exit_code == 0, result.output
    assert "audit log: ok" in result.output

    after = load_settings(env=_env(fresh, config))
    store = stores.governance_store(after)
    verification = store.verify_audit()
    assert verification.ok and verification.entries == built["audit"]
    assert store.list_deployments(MODEL, alias="production")[0].version == built["versions"][0]
    client = stores.mlflow_client(after)
    assert _registry(client) == registry
    restored = _tables(after)
    assert restored.keys() == tables.keys()
    for name, frame in tables.items():
        assert restored[name].equals(frame), f"table {name} differs after restore"
    assert read_published(after.online_dir, SNAPSHOT_NAME)[1].equals(snapshot)
    experiment = client.get_experiment_by_name("backup-tests")
    assert experiment.artifact_location.startswith(str(fresh)), experiment.artifact_location
    wrapper = load_wrapper(f"models:/{MODEL}/{built['versions'][0]}", client)
    frame = pl.DataFrame({f: [0.1, -0.2] for f in built["features"]})
    assert len(wrapper.predict(frame).predictions) == 2
    assert stat.S_IMODE((fresh / "secrets" / "audit.key").stat().st_mode) == 0o600
    import dagster as dg

    with dg.DagsterInstance.from_config(str(after.dagster_home)) as instance:
        assert instance.get_latest_materialization_event(dg.AssetKey("backup_marker")) is not None

    # a non-empty home is refused, then moved aside with --force
    result = runner.invoke(app, ["restore", str(archive)])
    assert result.exit_code == 4 and "error: home: " in result.output and "not empty" in result.output  # a Conflict
    store.append_audit("carol", "test.after_restore", "test", "x")  # the anchor moves past the backup
    result = runner.invoke(app, ["restore", str(archive), "--force"])
    assert result.exit_code == 0, result.output
    assert list(fresh.parent.glob("home.before-restore-*"))

    # an older database under a newer anchor: detected, then re-anchored on purpose
    newer_anchor = next(fresh.parent.glob("home.before-restore-*")) / "secrets" / "audit.head"
    shutil.copy2(newer_anchor, fresh / "secrets" / "audit.head")
    store = stores.governance_store(after)
    bad = store.verify_audit()
    assert not bad.ok and "truncated" in bad.reason
    store.reset_anchor("oncall", "restored the backup of the morning on purpose")
    assert store.verify_audit().ok

    # a tampered archive is refused before anything is moved into place
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive, "r:gz") as src, tarfile.open(tampered, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name == "home/governance.db":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    with pytest.raises(BackupError, match="checksum") as err:
        restore_home(tampered, tmp_path / "site-c" / "home")
    assert isinstance(err.value, BackupInvalid) and err.value.field == "archive"  # an InvalidInput
    assert not (tmp_path / "site-c" / "home").exists()
    get_settings.cache_clear()

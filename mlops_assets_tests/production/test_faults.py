"""Fault tests: a run killed with SIGKILL mid-write, four runs at once on one warehouse, the serving app
starting while its model store is unreachable, and attempts to get around the governance rules.
Each asserts the promise it names and fails if it breaks."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from mlops_assets.settings import PROJECT_ROOT, load_settings
from mlops_assets_tests.production.helpers import SESSION, child_env, wait_until, write_config
from datetime import UTC

pytestmark = pytest.mark.xdist_group("production")
WORKER = "mlops_assets_tests.production.materialize_worker"


def _worker(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", WORKER, *args], cwd=PROJECT_ROOT, env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _records(path: Path) -> dict[int, dict[str, str]]:
    if not path.exists():
        return {}
    return {r["seed"]: r["tables"] for r in map(json.loads, path.read_text().splitlines()) if r}


def _check_publications(directory: Path) -> int:
    """Every manifest points at a complete data file: it exists, reads as Parquet (a torn file does not:
    its footer is at the end) and has the manifest's columns; the online snapshot also its row count."""
    manifests = list(directory.glob("*.manifest.json"))  # the current one per name, and retained versions'
    for path in manifests:
        manifest = json.loads(path.read_text())
        data_file = directory / manifest["data_file"]
        assert manifest["version"] in data_file.name, f"{path.name}: data file {data_file.name} is not its version"
        frame = pl.read_parquet(data_file)
        assert frame.columns == manifest["columns"], f"{path.name}: columns differ from the manifest"
        if "n_entities" in manifest:
            assert frame.height == manifest["rows"] == manifest["n_entities"], f"{path.name}: row count differs"
    return sum(1 for path in manifests if "-" not in path.name.removesuffix(".manifest.json"))  # current ones


def _check_warehouse(home: Path, records: dict[int, dict[str, str]]) -> dict[str, int]:
    """Every table opens and reads; each deterministic table holds one complete seed's content."""
    import duckdb

    from mlops_assets_tests.production.materialize_worker import table_digests

    digests = table_digests(home / "warehouse.duckdb")
    for table, digest in digests.items():
        complete = {seed: t.get(table) for seed, t in records.items()}
        assert digest in complete.values(), f"table {table} holds neither seed's complete content: half-written"
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


def test_sigkill_mid_write_leaves_old_or_new_content_and_the_rerun_is_green(tmp_path: Path, services) -> None:
    from mlops_assets import stores
    from mlops_assets_tests.production.materialize_worker import table_digests

    home = tmp_path / "home"
    config = write_config(tmp_path / "config.yaml")
    model, experiment = f"kill_{SESSION}", f"kill-tests-{SESSION}"
    env = child_env(MLOPS_HOME=str(home), MLOPS_CONFIG=str(config), DAGSTER_HOME=None,
                    MLFLOW_TRACKING_URI=services.mlflow_url, MLFLOW_MODEL_NAME=model, MLFLOW_EXPERIMENT_NAME=experiment)
    settings = load_settings(env={k: env[k] for k in ("MLOPS_HOME", "MLOPS_CONFIG", "MLFLOW_TRACKING_URI",
                                                      "MLFLOW_MODEL_NAME", "MLFLOW_EXPERIMENT_NAME")})
    record, log = tmp_path / "complete.jsonl", tmp_path / "worker.log"
    wal = home / "warehouse.duckdb.wal"
    rng = random.Random(SESSION)
    kills: list[tuple[str, bool]] = []
    proc = _worker(["--loop", "7,8", "--record", str(record)], env, log)
    try:
        # 1) features: record both complete contents, then kill the moment a warehouse write is open (WAL)
        wait_until(lambda: len(_records(record)) == 2 or proc.poll() is not None, timeout=240,
                   what="two complete materializations")
        assert proc.poll() is None, f"the writer failed before the kill: {log.read_text()[-3000:]}"
        deadline = time.monotonic() + 30
        while not wal.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        kills.append(("features, warehouse write open", wal.exists()))
        _kill(proc)
        records = _records(record)
        rows = _check_warehouse(home, records)
        assert rows["raw_market_data"] > 0 and any(t.startswith("fv_") for t in rows)
        assert _check_publications(home / "online") == 1 and _check_publications(home / "readmodels") >= 1
        # 2) features again, killed at a random moment
        proc = _worker(["--loop", "8,7"], env, log)
        time.sleep(rng.uniform(2.0, 6.0))
        kills.append(("features, random moment", wal.exists()))
        _kill(proc)
        _check_warehouse(home, records)
        _check_publications(home / "online")
        # 3) training, killed while it logs to MLflow
        client = stores.mlflow_client(settings)
        proc = _worker(["--selection", "train"], env, log)
        wait_until(lambda: client.get_experiment_by_name(experiment) is not None or proc.poll() is not None,
                   timeout=120, what="the training run to start")
        time.sleep(rng.uniform(0.5, 3.0))
        kills.append(("training", proc.poll() is None))
        _kill(proc)
    finally:
        if proc.poll() is None:
            _kill(proc)
    assert kills[0][1], "the first kill did not land during a warehouse write (no WAL seen within 30 s)"
    _check_registry_after_kill(client, settings, model)

    # the same runs again: green; every table is the complete content of the configured seed; a gated version
    rerun = subprocess.run([sys.executable, "-m", WORKER, "--selection", "all"], cwd=PROJECT_ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    seed = yaml.safe_load(config.read_text())["data"]["seed"]
    assert table_digests(home / "warehouse.duckdb") == records[seed]
    _check_publications(home / "online")
    latest = max(client.search_model_versions(f"name='{model}'"), key=lambda v: int(v.version))
    latest = client.get_model_version(model, latest.version)
    assert latest.tags["evaluation.passed"] == "true" and "challenger" in latest.aliases
    _check_registry_after_kill(client, settings, model)
    print(f"kills (what, mid-write): {kills}")


def _check_registry_after_kill(client, settings, model: str) -> None:
    """Whatever the kill left (a RUNNING MLflow run, a version without its gate tags) cannot be promoted."""
    from mlflow.exceptions import MlflowException

    from mlops_assets.models.promotion import PromotionRefused, promote

    try:
        versions = client.search_model_versions(f"name='{model}'")
    except MlflowException:
        versions = []
    store = stores_governance(settings)
    for found in versions:
        mv = client.get_model_version(model, found.version)
        assert "production" not in (mv.aliases or [])
        if mv.tags.get("evaluation.passed") != "true":
            with pytest.raises(PromotionRefused):
                promote(client, store, model, mv.version, alias="production", actor="alice",
                        compliance_required=False)
    store.close()


def stores_governance(settings):
    from mlops_assets import stores

    return stores.governance_store(settings)
def test_four_runs_at_once_on_one_warehouse_never_fail_on_the_duckdb_lock(tmp_path: Path) -> None:
    """Four processes materialize the feature group against the same MLOPS_HOME at the same time, each with
    its own ephemeral Dagster instance (so no pool serialises them): the warehouse's lock handling must."""
    from mlops_assets_tests.production.materialize_worker import table_digests

    home = tmp_path / "home"
    env = child_env(MLOPS_HOME=str(home), MLOPS_CONFIG=str(write_config(tmp_path / "config.yaml")), DAGSTER_HOME=None)
    record = tmp_path / "runs.jsonl"
    logs = [tmp_path / f"run{i}.log" for i in range(4)]
    procs = [_worker(["--selection", "features", "--record", str(record)], env, log) for log in logs]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                _kill(p)
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0, 0, 0], "a run failed: " + " | ".join(o[-1500:] for o, c in zip(outputs, codes) if c)
    assert not any("lock" in o.lower() and "STEP FAILED" in o for o in outputs)
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(runs) == 4
    assert max(r["started"] for r in runs) < min(r["finished"] for r in runs), "the four runs did not overlap"
    final = table_digests(home / "warehouse.duckdb")
    assert all(r["tables"] == final for r in runs) and "raw_market_data" in final


def test_serving_starts_without_its_model_store_and_becomes_ready_when_it_is_reachable(stack, tmp_path: Path) -> None:
    import shutil
    from urllib.parse import urlparse

    from mlops_assets_tests.production.helpers import TcpForwarder, free_port, predict, ready_state, uvicorn_server

    home = tmp_path / "home"
    shutil.copytree(stack.home / "online", home / "online")
    closed = free_port()  # nothing listens here yet
    env = child_env(MLOPS_HOME=str(home), MLOPS_CONFIG=str(stack.config), MLFLOW_TRACKING_URI=f"http://127.0.0.1:{closed}",
                    MLFLOW_MODEL_NAME=stack.model_name, MLFLOW_MODEL_STAGE="production", MLOPS_GOVERNANCE_URL=None,
                    DAGSTER_HOME=None)
    serving_version = str(stack.client().get_model_version_by_alias(stack.model_name, "production").version)
    with uvicorn_server("serving.inference.main:app", env, tmp_path / "serving.log") as server:
        wait_until(lambda: ready_state(server.url)[0] == 503, timeout=120, what="the app answering not ready")
        time.sleep(2 * stack.settings.serving.poll_seconds + 1.0)  # several failed polls
        status, state = ready_state(server.url)
        assert status == 503 and state["problems"], state
        assert predict(server.url).status_code == 503
        assert server.alive(), "the app died while its model store was unreachable"
        target = urlparse(stack.services.mlflow_url)
        started = time.monotonic()
        with TcpForwarder(closed, (target.hostname, target.port)):
            wait_until(lambda: ready_state(server.url)[0] == 200, timeout=120, what="ready once the store answers")
            became_ready = time.monotonic() - started
            answer = predict(server.url)
            assert answer.status_code == 200 and answer.json()["model_version"] == serving_version
        assert server.alive()
    print(f"ready {became_ready:.1f}s after the model store became reachable")


def test_governance_bypass_attempts_are_refused_or_detected(stack, services, tmp_path: Path) -> None:
    """On the Postgres governance store: promotion without approval and self-approval are refused; an audit row
    edited, deleted, or cut off the end with raw SQL (even with its hash recomputed) is detected."""
    from mlops_assets.governance.audit import entry_hash
    from mlops_assets.governance.keys import load_or_create_key
    from mlops_assets.governance.records import GovernanceError
    from mlops_assets.governance.store import GovernanceStore
    from mlops_assets.models.promotion import PromotionRefused, approve, promote
    from mlops_assets_tests.production.helpers import fresh_database, pg_query

    client = stack.client()
    name = f"bypass_{SESSION}"
    source = client.get_model_version(stack.model_name, stack.versions[0])
    client.create_registered_model(name)
    tags = {**source.tags, "registered_by": "mallory"}
    version = str(client.create_model_version(name, source.source, run_id=source.run_id, tags=tags,
                                              model_id=source.source.rsplit("/", 1)[-1]).version)
    with fresh_database(services, "bypass_t") as url:
        store = GovernanceStore(url, load_or_create_key(tmp_path / "audit.key"), anchor_path=tmp_path / "audit.head")
        try:
            from mlops_assets.models.gates import record_evaluation

            record_evaluation(client, store, name, version, "test_auc", 0.7, 0.5)  # the gate, recorded in the store
            with pytest.raises(PromotionRefused, match="not approved"):
                promote(client, store, name, version, alias="production", actor="mallory", compliance_required=False)
            with pytest.raises(PromotionRefused, match="reviewer_is_not_registerer"):
                approve(client, store, name, version, reviewer="mallory", compliance_required=False)
            with pytest.raises(GovernanceError, match="may not approve"):
                store.approve("model", name, version, actor="mallory", owner="mallory")
            assert client.get_registered_model(name).aliases.get("production") is None
            approve(client, store, name, version, reviewer="alice", compliance_required=False)
            promote(client, store, name, version, alias="production", actor="alice", compliance_required=False)
            assert store.verify_audit().ok

            rows = pg_query(url, "SELECT seq, actor, hash FROM audit_log ORDER BY seq")
            approved_seq = pg_query(url, "SELECT seq FROM audit_log WHERE action = 'decision.approved'")[0][0]
            # an edited row
            pg_query(url, "UPDATE audit_log SET actor = 'mallory' WHERE seq = %s", (approved_seq,))
            bad = store.verify_audit()
            assert not bad.ok and bad.first_bad_seq == approved_seq and "edited" in bad.reason
            # ... with its hash recomputed (no key for the HMAC)
            row = pg_query(url, "SELECT seq, ts, actor, action, subject_kind, subject_id, details, prev_hash "
                                "FROM audit_log WHERE seq = %s", (approved_seq,))[0]
            seq, ts, actor, action, kind, subject, details, prev = row
            forged = entry_hash(seq, ts.replace(tzinfo=dt_utc()), actor, action, kind, subject, details, prev)
            pg_query(url, "UPDATE audit_log SET hash = %s WHERE seq = %s", (forged, approved_seq))
            bad = store.verify_audit()
            assert not bad.ok and bad.first_bad_seq == approved_seq and "HMAC" in bad.reason
            original = dict((s, (a, h)) for s, a, h in rows)[approved_seq]
            pg_query(url, "UPDATE audit_log SET actor = %s, hash = %s WHERE seq = %s", (*original, approved_seq))
            assert store.verify_audit().ok
            # a deleted row in the middle, then the last row (the chain alone would still verify: the anchor)
            middle = pg_query(url, "SELECT * FROM audit_log WHERE seq = %s", (approved_seq,))
            pg_query(url, "DELETE FROM audit_log WHERE seq = %s", (approved_seq,))
            bad = store.verify_audit()
            assert not bad.ok and "missing" in bad.reason
            columns = [c for (c,) in pg_query(url, "SELECT column_name FROM information_schema.columns WHERE "
                                                   "table_name = 'audit_log' ORDER BY ordinal_position")]
            pg_query(url, f"INSERT INTO audit_log ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
                     tuple(json_or_value(v) for v in middle[0]))
            assert store.verify_audit().ok
            last = max(s for s, _, _ in rows)
            pg_query(url, "DELETE FROM audit_log WHERE seq = %s", (last,))
            bad = store.verify_audit()
            assert not bad.ok and "truncated" in bad.reason
        finally:
            store.close()


def dt_utc():

    return UTC


def json_or_value(value):
    from psycopg2.extras import Json

    return Json(value) if isinstance(value, (dict, list)) else value



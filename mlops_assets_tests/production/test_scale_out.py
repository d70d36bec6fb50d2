"""The scale-out configuration on real servers: Dagster history in Postgres (from dagster.prod.yaml), the
registry on an MLflow tracking server with a Postgres backend, the governance store on Postgres, and the
inference app with two uvicorn workers that swap versions within a poll interval after a promotion.
Switching to these stores is configuration only: environment variables and a config file."""

from __future__ import annotations

import pytest

from mlops_assets_tests.production.helpers import pg_query

pytestmark = pytest.mark.xdist_group("production")


def test_dagster_runs_and_events_are_in_postgres(stack) -> None:
    rows = dict(pg_query(stack.dagster_url, "SELECT run_id, status FROM runs"))
    for what, run_id in stack.run_ids.items():
        assert run_id in rows, f"the {what} run is not in the Postgres run storage"
    assert all(rows[stack.run_ids[k]] == "SUCCESS" for k in ("features", "train1", "train2"))
    materialized = {r[0] for r in pg_query(
        stack.dagster_url, "SELECT DISTINCT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")}
    assert '["trained_model"]' in materialized and '["raw_market_data"]' in materialized


def test_dagster_instance_config_is_the_shipped_scale_out_file(stack, monkeypatch) -> None:
    from mlops_assets_tests.production.conftest import prod_instance

    monkeypatch.setenv("DAGSTER_PG_URL", stack.dagster_url)
    instance = prod_instance(stack.dagster_home)
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 1  # the duckdb_warehouse pool
        assert config.run_queue_config.max_concurrent_runs > 1
        limited = {(t["key"], t.get("value")): t["limit"] for t in config.run_queue_config.tag_concurrency_limits}
        assert limited[("dagster/job_name", "retrain_job")] == 1
        assert instance.run_monitoring_enabled
        assert {r.run_id for r in instance.get_runs()} >= set(stack.run_ids.values())
    finally:
        instance.dispose()


def test_registry_lives_on_the_tracking_server_with_lineage(stack) -> None:
    client = stack.client()
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{stack.model_name}'")}
    assert sorted(versions) == sorted(stack.versions)
    for i, version in enumerate(stack.versions):
        mv = client.get_model_version(stack.model_name, version)
        assert mv.tags["lineage.dagster_run_id"] == stack.run_ids[f"train{i + 1}"]
        assert mv.tags["evaluation.passed"] == "true" and mv.tags["registered_by"] == "dagster"
    assert client.get_model_version_by_alias(stack.model_name, "production").version == stack.versions[0]
    # the server's own backend holds them: MLflow's tables in Postgres
    stored = pg_query(stack.services.mlflow_backend_url,
                      "SELECT version FROM model_versions WHERE name = %s ORDER BY version", (stack.model_name,))
    assert [str(v) for (v,) in stored] == sorted(stack.versions, key=int)
    runs = client.search_runs([client.get_experiment_by_name(stack.experiment).experiment_id])
    assert {r.data.tags.get("lineage.dagster_run_id") for r in runs} >= {stack.run_ids["train1"], stack.run_ids["train2"]}


def test_model_artifacts_are_stored_through_the_tracking_server(stack) -> None:
    """On a cluster the Dagster run pod, the serving pods and the MLflow UI share no disk: the artifacts of a
    run must go to the server's artifact store (mlflow-artifacts:/ proxied to --artifacts-destination), not to
    the MLOPS_HOME of whichever process trained the model."""
    client = stack.client()
    experiment = client.get_experiment_by_name(stack.experiment)
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), (
        f"experiment {stack.experiment!r} stores artifacts at {experiment.artifact_location!r}, a local path of the "
        "training process: with MLFLOW_TRACKING_URI on a server, trained_model must not pass artifact_location "
        "(defs/models.py: pass it only for a sqlite:/// tracking URI; ensure_experiment already does so)")
    stored = list(stack.services.mlflow_artifacts.rglob("MLmodel"))
    assert stored, "no model was written to the server's artifact destination"


def test_governance_decisions_and_hash_chained_audit_are_in_postgres(stack) -> None:
    store = stack.store()
    try:
        assert store._engine.dialect.name == "postgresql"
        verification = store.verify_audit()
        assert verification.ok, verification.reason
        deployments = store.list_deployments(stack.model_name, alias="production")
        assert deployments and deployments[-1].version == stack.versions[0]
    finally:
        store.close()
    actions = [a for (a,) in pg_query(stack.governance_url, "SELECT action FROM audit_log ORDER BY seq")]
    assert "decision.approved" in actions and "deployment.promotion" in actions
    subjects = {s for (s,) in pg_query(stack.governance_url, "SELECT subject_id FROM audit_log")}
    assert f"{stack.model_name}/{stack.versions[0]}" in subjects
    (chained,) = pg_query(stack.governance_url, "SELECT count(*) FROM audit_log a JOIN audit_log b "
                                                "ON b.seq = a.seq + 1 WHERE b.prev_hash = a.hash")[0]
    assert chained == len(actions) - 1


def test_two_workers_answer_alike_and_swap_within_a_poll_after_promotion(stack, tmp_path) -> None:
    import time

    from mlops_assets.models.promotion import approve, promote
    from mlops_assets_tests.production.helpers import child_env, predict, ready_state, uvicorn_server, wait_until, \
        worker_of

    poll = stack.settings.serving.poll_seconds
    (tmp_path / "prom").mkdir()
    env = child_env(**stack.env, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    client, store = stack.client(), stack.store()
    v1 = str(client.get_model_version_by_alias(stack.model_name, "production").version)
    (v2,) = [v for v in stack.versions if v != v1]
    with uvicorn_server("serving.inference.main:app", env, tmp_path / "inference.log", workers=2) as server:
        wait_until(lambda: ready_state(server.url)[0] == 200, timeout=180, what="a ready worker")
        answers: list[dict] = []

        def both_workers_ready() -> bool:
            r = predict(server.url)
            assert r.status_code in (200, 503), r.text  # 503 only while the second worker still loads
            if r.status_code == 200:
                answers.append(r.json())
            return len({worker_of(a) for a in answers}) == 2

        wait_until(both_workers_ready, timeout=180, interval=0.02, what="answers from both workers")
        assert {a["model_version"] for a in answers} == {v1}, "the workers disagree on the production version"

        if store.state("model", stack.model_name, v2) is None:
            approve(client, store, stack.model_name, v2, reviewer="bob", compliance_required=False)
        promoted_at = time.monotonic()
        promote(client, store, stack.model_name, v2, alias="production", actor="bob", reason="swap test",
                compliance_required=False)
        swapped: dict[str, float] = {}
        after: list[dict] = []

        def both_swapped() -> bool:
            r = predict(server.url)
            assert r.status_code == 200, f"a request failed during the swap: {r.status_code} {r.text}"
            body = r.json()
            after.append(body)
            if body["model_version"] == v2:
                swapped.setdefault(worker_of(body), time.monotonic() - promoted_at)
            return len(swapped) == 2

        wait_until(both_swapped, timeout=60, interval=0.01, what="both workers serving the promoted version")
        settle = [predict(server.url).json() for _ in range(30)]
        assert {a["model_version"] for a in settle} == {v2}
        assert {a["variant"] for a in settle} == {"production"}
        # one poll to notice the alias, plus loading the new version from the tracking server
        assert max(swapped.values()) < poll + 3.0, f"swap took {swapped} s with a {poll} s poll interval"
        assert server.alive()
    store.close()
    print(f"swap seconds per worker after promotion: {swapped} (poll {poll} s)")

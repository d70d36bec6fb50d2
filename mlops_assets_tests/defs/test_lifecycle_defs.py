"""The model lifecycle through Dagster: train → gate → evaluate (partition) → compliance → staging,
then approval → sensor → promotion; a version failing compliance never reaches staging; drift
requests exactly one retraining run per episode."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.defs.models import MODEL_VERSIONS
from mlops_assets_tests.defs.conftest import build, write_config

pytestmark = pytest.mark.xdist_group("dagster_lifecycle")


def _run_demo_job(defs: dg.Definitions, instance: dg.DagsterInstance) -> str:
    selection = dg.AssetSelection.groups("ingestion", "features") | dg.AssetSelection.assets("trained_model")
    result = dg.materialize([*defs.assets, *(defs.asset_checks or [])], resources=defs.resources,
                            selection=selection, instance=instance, raise_on_error=False)
    mats = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    return str(mats["trained_model"].materialization.metadata["model_version"].value)


def _evaluate(defs: dg.Definitions, instance: dg.DagsterInstance, version: str) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions(MODEL_VERSIONS.name, [version])
    return defs.resolve_job_def("evaluate_model_job").execute_in_process(
        instance=instance, partition_key=version, raise_on_error=False)


# The wiring test is about the flow, not model quality (the demo's 50 x 1000 data shows the model
# beating the baselines; the model tests check it on planted signal): thresholds a tiny model meets.
PERMISSIVE = {"model": {"gate_threshold": 0.0},
              "evaluation": {"metric_margin_over_baseline": -1.0, "fairness_dp_limit": 1.0,
                             "fairness_eo_limit": 1.0, "candidate_drift_limit": 1.0, "max_drawdown_limit": 1.0,
                             "metric_ci_margin_over_baseline": -1.0, "min_deflated_sharpe": 0.0}}


def test_version_goes_from_training_to_production_through_gates_and_approval(instance, small_home: Path,
                                                                              monkeypatch) -> None:
    from mlops_assets import stores
    from mlops_assets.defs.models import approval_sensor
    from mlops_assets.models import promotion
    from mlops_assets.settings import get_settings

    monkeypatch.setenv("MLOPS_CONFIG", str(write_config(small_home, PERMISSIVE)))
    get_settings.cache_clear()
    defs = build(small_home)
    version = _run_demo_job(defs, instance)
    s = get_settings()
    client = stores.mlflow_client(s)
    mv = client.get_model_version(s.model.name, version)
    assert mv.tags["evaluation.passed"] in ("true", "false")
    assert "challenger" in mv.aliases
    assert mv.tags["lineage.dagster_run_id"] and mv.tags["registered_by"] == "dagster"

    # the sensor that reacts to a new version: a partition and one evaluation run
    sensor = defs.resolve_sensor_def("model_version_sensor")
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as ctx:
        out = sensor(ctx)  # the daemon applies the partition request before the run request
    assert [r.partition_key for r in out.run_requests] == [version]
    assert out.dynamic_partitions_requests[0].partition_keys == [version]

    evaluation = _evaluate(defs, instance, version)
    checks = {e.check_name: e.passed for e in evaluation.get_asset_check_evaluations()}
    mv = client.get_model_version(s.model.name, version)
    gates_passed = checks["compliance_gate"] and mv.tags["evaluation.passed"] == "true"
    assert ("staging" in mv.aliases) == gates_passed
    assert mv.tags["compliance.passed"] == ("true" if checks["compliance_gate"] else "false")
    report_dir = small_home / "reports" / "evaluation" / s.model.name / version
    assert (report_dir / "compliance.json").exists() and (report_dir / "evaluation_report.md").exists()
    meta = next(iter(evaluation.get_asset_materialization_events())).materialization.metadata
    assert meta["skill_mode"].value == "walk_forward" and "plot_walk_forward" in meta and "skill_by_fold" in meta
    assert 0.0 <= meta["deflated_sharpe"].value <= 1.0 and meta["n_trials"].value >= 1
    compliance = (report_dir / "compliance.json").read_text()
    assert '"metric_ci_vs_baseline"' in compliance and '"deflated_sharpe"' in compliance
    if not gates_passed:
        pytest.fail(f"the tiny demo model did not pass its gates: {checks}, tags {mv.tags}")

    store = stores.governance_store(s)
    with pytest.raises(promotion.PromotionRefused, match="reviewer_is_not_registerer"):
        promotion.approve(client, store, s.model.name, version, reviewer="dagster", compliance_required=True)
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as ctx:
        assert isinstance(approval_sensor(ctx), dg.SkipReason)  # no approval → no promotion
    promotion.approve(client, store, s.model.name, version, reviewer="alice", compliance_required=True)
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as ctx:
        requests = approval_sensor(ctx)
    assert len(requests) == 1
    promoted = defs.resolve_job_def("promote_model_job").execute_in_process(
        instance=instance, run_config=requests[0].run_config, raise_on_error=False)
    assert promoted.success
    assert str(client.get_model_version_by_alias(s.model.name, "production").version) == version
    assert store.verify_audit().ok
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as ctx:
        assert isinstance(approval_sensor(ctx), dg.SkipReason)  # the approval was consumed


def test_imported_version_is_evaluated_staged_and_approved(instance, small_home: Path, monkeypatch) -> None:
    """A version imported by URI (``mlops import-model``) has no evaluation gate from training: its
    evaluation records one (test metric vs model.gate_threshold, in the governance store), so it is
    staged and can be approved and promoted; the promotion records the approval and the deployment."""
    from mlops_assets import stores
    from mlops_assets.defs.models import approval_sensor
    from mlops_assets.models import promotion
    from mlops_assets.models.gates import GATE_EVALUATION
    from mlops_assets.models.registration import import_external_model
    from mlops_assets.settings import get_settings

    monkeypatch.setenv("MLOPS_CONFIG", str(write_config(small_home, PERMISSIVE)))
    get_settings.cache_clear()
    defs = build(small_home)
    trained = _run_demo_job(defs, instance)
    s = get_settings()
    client, store = stores.mlflow_client(s), stores.governance_store(s)
    imported = import_external_model(client, f"models:/{s.model.name}/{trained}", s.model.name, "alice",
                                     challenger_alias=s.model.challenger_alias)
    version = str(imported.version)
    assert version != trained and client.get_model_version(s.model.name, version).tags["source"] == "imported"
    assert GATE_EVALUATION not in store.gate_results(s.model.name, version)  # never went through training

    evaluation = _evaluate(defs, instance, version)
    assert evaluation.success, [e.message for e in evaluation.all_events if e.is_failure]
    gate = store.gate_results(s.model.name, version)[GATE_EVALUATION]
    assert gate.passed and gate.thresholds == {"test_roc_auc": 0.0} and gate.actor == "dagster"
    meta = next(iter(evaluation.get_asset_materialization_events())).materialization.metadata
    assert meta["evaluation_gate"].value.startswith("recorded by this evaluation: test_roc_auc=")
    assert "staging" in client.get_model_version(s.model.name, version).aliases
    # a second evaluation keeps the record it made (never replaced)
    assert _evaluate(defs, instance, version).success
    assert store.gate_results(s.model.name, version)[GATE_EVALUATION].id == gate.id

    with pytest.raises(promotion.PromotionRefused, match="reviewer_is_not_registerer"):
        promotion.approve(client, store, s.model.name, version, reviewer="alice", compliance_required=True)
    decision = promotion.approve(client, store, s.model.name, version, reviewer="bob", compliance_required=True,
                                 comment="imported baseline reviewed")
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as ctx:
        requests = approval_sensor(ctx)
    assert len(requests) == 1 and requests[0].tags["decision_id"] == str(decision.id)
    promoted = defs.resolve_job_def("promote_model_job").execute_in_process(
        instance=instance, run_config=requests[0].run_config, raise_on_error=False)
    assert promoted.success
    assert str(client.get_model_version_by_alias(s.model.name, "production").version) == version
    meta = next(iter(promoted.get_asset_materialization_events())).materialization.metadata
    deployment = store.list_deployments(s.model.name, alias="production", limit=1)[0]
    assert meta["approval_decision_id"].value == decision.id and meta["approved_by"].value == "bob"
    assert meta["approval_comment"].value == "imported baseline reviewed" and meta["waivers"].value == {}
    assert meta["registered_by"].value == "alice" and meta["deployment_id"].value == deployment.id
    assert store.verify_audit().ok


def test_served_predictions_follow_the_prediction_log(instance, small_home: Path) -> None:
    """New closed segments -> one run of served_predictions_job; an unchanged log -> no run; the asset
    shows rows and latency percentiles per model version."""
    import numpy as np

    from mlops_assets.defs.monitoring import served_predictions_sensor
    from mlops_assets.monitoring.served import write_segment
    from mlops_assets.settings import get_settings
    from mlops_assets_tests.monitoring.test_served_summary import segment

    defs = build(small_home)
    log_dir = get_settings().serving_log_dir

    def tick(cursor: str | None):
        with dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor) as ctx:
            return served_predictions_sensor(ctx), ctx.cursor

    result, cursor = tick(None)
    assert isinstance(result, dg.SkipReason)  # nothing served yet
    write_segment(segment("3", [5.0, 7.0, 9.0, 30.0]), log_dir, "pred-w1-1.parquet")
    write_segment(segment("4", [2.0, 4.0], first_request=10), log_dir, "pred-w1-2.parquet")
    request, cursor = tick(cursor)
    assert isinstance(request, dg.RunRequest) and request.run_key
    assert isinstance(tick(cursor)[0], dg.SkipReason)  # unchanged log: no run
    run = defs.resolve_job_def("served_predictions_job").execute_in_process(instance=instance)
    assert run.success
    meta = next(iter(run.get_asset_materialization_events())).materialization.metadata
    assert meta["dagster/row_count"].value == 6 and meta["model_versions"].value == ["4", "3"]
    latency = meta["latency_ms_by_version"].value
    assert latency["3"]["rows"] == 4 and np.isclose(latency["3"]["latency_p95_ms"], np.percentile([5, 7, 9, 30], 95))
    assert np.isclose(latency["4"]["latency_p50_ms"], 3.0)
    write_segment(segment("4", [8.0], first_request=20), log_dir, "pred-w2-1.parquet")
    again, _ = tick(cursor)
    assert isinstance(again, dg.RunRequest) and again.run_key != request.run_key


def test_version_failing_compliance_never_reaches_staging(instance, small_home: Path, monkeypatch) -> None:
    from mlops_assets import stores
    from mlops_assets.settings import get_settings

    # a drawdown limit no strategy meets: compliance must fail
    monkeypatch.setenv("MLOPS_CONFIG", str(write_config(small_home, {"evaluation": {"max_drawdown_limit": 1e-9}})))
    get_settings.cache_clear()
    defs = build(small_home)
    version = _run_demo_job(defs, instance)
    evaluation = _evaluate(defs, instance, version)
    checks = {e.check_name: e for e in evaluation.get_asset_check_evaluations()}
    assert not checks["compliance_gate"].passed
    assert "drawdown" in checks["compliance_gate"].description
    s = get_settings()
    mv = stores.mlflow_client(s).get_model_version(s.model.name, version)
    assert "staging" not in mv.aliases and mv.tags["compliance.passed"] == "false"


def test_drift_requests_one_retraining_run_per_episode(instance, small_home: Path) -> None:
    from mlops_assets import stores
    from mlops_assets.defs.monitoring import drift_report, drift_sensor
    from mlops_assets.settings import get_settings

    defs = build(small_home)
    store = stores.governance_store(get_settings())

    def report(share: float, when: dt.datetime) -> None:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=drift_report.key,
            metadata={"share_drifted": share, "drifted_columns": dg.MetadataValue.json(["ret_5d"] if share else []),
                      "measured_at": when.isoformat()}))

    def tick(cursor: str | None):
        with dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor) as ctx:
            result = drift_sensor(ctx)
            return (result if isinstance(result, list) else []), ctx.cursor

    t0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    report(0.9, t0)
    runs, cursor = tick(None)
    assert len(runs) == 1 and runs[0].tags["trigger"] == "drift"
    runs, cursor = tick(cursor)            # same report again: nothing
    assert runs == []
    report(0.95, t0 + dt.timedelta(hours=2))  # still the same episode
    runs, cursor = tick(cursor)
    assert runs == []
    events = store.list_drift_events(source="drift_report")
    assert len(events) == 1 and events[0].action_taken == "retraining requested"
    # another service posts a drift event (management API): the same episode and cooldown rules hold
    store.record_drift_event(source="pricing-service", features=["vol_20d"], drifted_share=0.8, severity="high")
    runs, cursor = tick(cursor)
    assert runs == []  # the episode is still open
    report(0.1, t0 + dt.timedelta(hours=3))  # the episode ends (resolved, a state of its own)
    runs, cursor = tick(cursor)
    assert runs == [] and store.list_drift_events(source="drift_report")[0].details["resolved_at"]
    store.record_drift_event(source="pricing-service", features=["vol_20d"], drifted_share=0.8, severity="high")
    runs, cursor = tick(cursor)  # posted now, long after the cooldown: a new episode, once
    assert len(runs) == 1
    runs, cursor = tick(cursor)
    assert runs == []


def _market_with_injected_drift(path: Path, days: int = 80) -> Path:
    """Synthetic market whose last ``days`` days move four times as violently (a volatility shock)."""
    import polars as pl

    from mlops_assets.data.synthetic import generate_market_data

    df = generate_market_data(n_symbols=12, n_days=420, seed=7)
    last = df["date"].unique().sort()[-days]
    ret = (pl.col("close") / pl.col("close").shift(1) - 1).over("symbol").fill_null(0.0)
    shocked = pl.when(pl.col("date") >= last).then(1 + 4 * ret).otherwise(1 + ret)
    df = df.with_columns((pl.col("close").first().over("symbol") * shocked.cum_prod().over("symbol")).alias("new"))
    scale = pl.col("new") / pl.col("close")
    df = df.with_columns([(pl.col(c) * scale).alias(c) for c in ("open", "high", "low", "close")]).drop("new")
    df.write_parquet(path)
    return path


def test_injected_drift_starts_one_retraining_run(instance, small_home: Path, monkeypatch) -> None:
    from mlops_assets.defs.monitoring import drift_sensor
    from mlops_assets.settings import get_settings

    monkeypatch.setenv("DATA_LOADER_TYPE", "local")
    monkeypatch.setenv("DATA_SOURCE_PATH", str(_market_with_injected_drift(small_home.parent / "shocked.parquet")))
    get_settings.cache_clear()
    defs = build(small_home)
    graph = defs.resolve_asset_graph()
    partitioned = [key for key in graph.get_all_asset_keys() if graph.get(key).partitions_def is not None]
    selection = dg.AssetSelection.groups("ingestion", "features", "monitoring") - dg.AssetSelection.assets(
        *partitioned)  # live_performance (per day) has its own schedule
    result = dg.materialize([*defs.assets, *(defs.asset_checks or [])], resources=defs.resources,
                            selection=selection, instance=instance, raise_on_error=False)
    assert result.success
    report = next(e for e in result.get_asset_materialization_events() if e.asset_key.path == ["drift_report"])
    share = report.materialization.metadata["share_drifted"].value
    assert share >= get_settings().monitoring.drift_share_threshold
    assert "vol_20d" in report.materialization.metadata["drifted_columns"].value
    assert Path(report.materialization.metadata["html_report"].value).exists()
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as ctx:
        runs = drift_sensor(ctx)
        cursor = ctx.cursor
    assert len(runs) == 1 and runs[0].tags["trigger"] == "drift"
    with dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor) as ctx:
        assert isinstance(drift_sensor(ctx), dg.SkipReason)  # the same episode asks once

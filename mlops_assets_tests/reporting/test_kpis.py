"""Platform KPIs: exact figures on constructed facts, and collection from a real MLflow registry and store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from mlflow import MlflowClient

from mlops_assets.reporting.kpis import (KPI_SCHEMA, GovernanceFacts, ModelVersionFacts,
                                          collect_governance_facts, collect_model_versions, compute_kpis,
                                          missing_metadata)
from mlops_assets.governance.store import GovernanceStore
from mlops_assets.models import tags as T

pytest_plugins = ["mlops_assets_tests.conftest_llm"]

T0 = datetime(2026, 1, 5, tzinfo=UTC)
COMPLETE = {T.TAG_REGISTERED_BY: "dagster", T.TAG_TASK_TYPE: "binary", T.TAG_EVALUATION_PASSED: "true",
            T.TAG_EVALUATION_METRIC: "test_auc", T.TAG_EVALUATION_VALUE: "0.61",
            T.TAG_FEATURE_VIEWS: json.dumps({"price_features": "1.0.0"})}


def _version(name: str, version: int, day: float, features: list[str], **tags: str) -> ModelVersionFacts:
    all_tags = {**COMPLETE, T.TAG_FEATURES: json.dumps(features), **tags}
    return ModelVersionFacts(name, str(version), T0 + timedelta(days=day), all_tags, evaluations=1,
                             explained=version % 2 == 1)


def _catalog() -> pl.DataFrame:
    return pl.DataFrame({
        "view": ["price_features", "price_features", "volume_features"],
        "feature": ["return_1d", "rsi_14", "volume_ratio_20d"],
        "created_at": [T0 - timedelta(days=2), T0 - timedelta(days=1), T0 + timedelta(days=10)],
    }, schema={"view": pl.String, "feature": pl.String, "created_at": pl.Datetime("us", "UTC")})


def test_kpis_from_constructed_facts() -> None:
    versions = [
        _version("direction", 1, 0, ["return_1d", "rsi_14"]),
        _version("direction", 2, 7, ["return_1d", "rsi_14"]),
        _version("direction", 3, 21, ["return_1d", "volume_ratio_20d"], **{T.TAG_EVALUATION_PASSED: "false"}),
        _version("vol", 1, 3, ["private_signal"], **{T.TAG_COMPLIANCE_PASSED: "false"}),
        # no lineage or evaluation tags
        ModelVersionFacts("direction", "4", T0 + timedelta(days=22), {T.TAG_TASK_TYPE: "binary"}),
        # an LLM chain: out of scope of the tabular measures
        ModelVersionFacts("narrative_llm", "1", T0, {T.TAG_TASK_TYPE: "llm", T.TAG_WRAPPER: "llm"}),
    ]
    governance = GovernanceFacts(prompt_lead_times_h=[2.0, 30.0, 4.0], model_lead_times_h=[],
                                 rejections=2, failed_prompt_evaluations=1)
    usage = pl.DataFrame({"calls": [90, 10], "succeeded": [88, 5], "flagged": [1, 3],
                          "latency_p95_ms": [800.0, 1500.0]})
    as_of = T0 + timedelta(days=24)
    df = compute_kpis(versions, _catalog(), governance, usage, retrain_period_days=7, as_of=as_of)
    assert df.schema == pl.Schema(KPI_SCHEMA) and df["as_of"].unique().to_list() == [as_of]
    kpi = {r["kpi"]: r["value"] for r in df.iter_rows(named=True)}

    assert kpi["models_using_shared_features"] == 1                   # "vol" uses no catalog feature
    assert kpi["share_versions_using_shared_features"] == pytest.approx(3 / 5)
    # return_1d: -2d -> day 0 = 2 days; rsi_14: 1 day; volume_ratio_20d: day 10 -> day 21 = 11 days
    assert kpi["feature_time_to_first_use"] == pytest.approx(2.0)
    assert kpi["share_versions_complete_metadata"] == pytest.approx(4 / 5)
    assert kpi["evaluations_per_release"] == pytest.approx(4 / 5)
    assert kpi["share_releases_with_explanations"] == pytest.approx(3 / 5)  # direction 1 and 3, vol 1
    # direction gaps 7, 14, 1 days (limit 10.5): 2 kept; vol's open gap of 21 days is overdue -> 2 of 4
    assert kpi["retraining_cadence_kept"] == pytest.approx(2 / 4)
    assert kpi["retraining_median_gap"] == pytest.approx(7.0)
    assert kpi["prompt_approval_lead_time"] == pytest.approx(4.0)
    assert kpi["model_approval_lead_time"] is None
    assert kpi["policy_violations_caught"] == 2 + 1 + 1 + 1
    assert kpi["llm_calls"] == 100 and kpi["llm_success_rate"] == pytest.approx(0.93)
    assert kpi["llm_flagged_share"] == pytest.approx(0.04) and kpi["llm_worst_latency_p95"] == 1500.0
    assert missing_metadata({T.TAG_TASK_TYPE: "binary"}) == [T.TAG_REGISTERED_BY, T.TAG_EVALUATION_PASSED,
                                                            T.TAG_EVALUATION_METRIC, T.TAG_EVALUATION_VALUE,
                                                            "lineage"]
    empty = compute_kpis([], None, GovernanceFacts(), None, retrain_period_days=7)
    assert empty.filter(pl.col("kpi") == "share_versions_complete_metadata")["value"].to_list() == [None]
    with pytest.raises(ValueError, match="retrain_period_days"):
        compute_kpis([], None, GovernanceFacts(), retrain_period_days=0)


def test_collection_from_a_real_registry_and_store(llm_tracking_uri: str, tmp_path: Path) -> None:
    client = MlflowClient(llm_tracking_uri)
    name = "kpi_collect_model"
    client.create_registered_model(name)
    experiment = client.create_experiment("kpi-collect", artifact_location=str(tmp_path / "artifacts"))
    for version, (evaluations, explained) in enumerate([(2, True), (0, False)], start=1):
        run_id = client.create_run(experiment).info.run_id
        for step in range(evaluations):
            client.log_metric(run_id, "eval_auc", 0.6 + step / 100, step=step)
        if evaluations:
            client.log_text(run_id, "# report", f"evaluation/v{version}/evaluation_report.md")
        if explained:
            client.log_text(run_id, "{}", f"evaluation/v{version}/explanation/shap_values.json")
        client.set_terminated(run_id)
        client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags=dict(COMPLETE))
    facts = {f.version: f for f in collect_model_versions(client, [name])}
    assert (facts["1"].evaluations, facts["1"].explained) == (2, True)
    assert (facts["2"].evaluations, facts["2"].explained) == (0, False)
    assert facts["1"].tags[T.TAG_REGISTERED_BY] == "dagster" and facts["1"].created_at.tzinfo is not None

    store = GovernanceStore(f"sqlite:///{tmp_path / 'gov.db'}", b"k" * 32)
    store.submit("prompt", "p", "1.0.0", actor="alice")
    store.approve("prompt", "p", "1.0.0", actor="bob", owner="alice")
    store.submit("model", name, "2", actor="dagster")
    store.reject("model", name, "2", actor="risk", comment="drawdown")
    for passed in (False, False, True):  # the same failing content evaluated twice counts once
        store.append_audit("ci", "prompt.evaluated", "prompt", "p/1.1.0",
                           {"content_hash": "bad" if not passed else "good", "passed": passed})
    facts_gov = collect_governance_facts(store)
    assert len(facts_gov.prompt_lead_times_h) == 1 and 0 <= facts_gov.prompt_lead_times_h[0] < 0.1
    assert facts_gov.model_lead_times_h == [] and facts_gov.rejections == 1
    assert facts_gov.failed_prompt_evaluations == 1

"""Prompt and platform assets through Dagster: the library sensor, registration + evaluation per template
partition with blocking checks, and the usage summary and KPI history in the warehouse."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mlops_assets.prompts.library import content_hash, load_template
from mlops_assets_tests.defs.conftest import build
from mlops_assets_tests.fake_openai import FAKE_API_KEY
from mlops_assets_tests.prompts.test_workflow import template_data, write_template

pytest_plugins = ["mlops_assets_tests.conftest_llm"]

LIBRARY = Path(__file__).resolve().parents[2] / "prompts"
SHIPPED = ["market_narrative", "risk_summary", "signal_explanation"]
OFFLINE = {"use_llm": False}


@pytest.fixture()
def prompts_dir(small_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                llm_tracking_uri: str) -> Path:
    """A copy of the library as ``prompts_dir``; the session's MLflow store (fresh prompt ids per test)."""
    import os

    from mlops_assets.settings import get_settings

    prompts = tmp_path / "prompts"
    shutil.copytree(LIBRARY, prompts)
    config_path = Path(os.environ["MLOPS_CONFIG"])
    config = yaml.safe_load(config_path.read_text())
    config_path.write_text(yaml.safe_dump({**config, "prompts_dir": str(prompts)}))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", llm_tracking_uri)
    get_settings.cache_clear()
    assert get_settings().prompts_dir == prompts
    return prompts


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def("prompt_library_sensor")
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources) as context:
        return sensor(context)


def test_sensor_requests_one_evaluation_run_per_changed_template(prompts_dir: Path, instance) -> None:
    defs = build(prompts_dir)
    first = _tick(defs, instance, None)
    assert sorted(r.partition_key for r in first.run_requests) == SHIPPED
    assert first.dynamic_partitions_requests[0].partition_keys == SHIPPED
    instance.add_dynamic_partitions("prompt_templates", SHIPPED)  # what the daemon does with the request

    quiet = _tick(defs, instance, first.cursor)
    assert quiet.run_requests == [] and not quiet.dynamic_partitions_requests

    # a comment in one file (same template content) and a real change in another
    narrative = prompts_dir / "market_narrative.yaml"
    narrative.write_text("# reviewed\n" + narrative.read_text())
    risk = prompts_dir / "risk_summary.yaml"
    risk.write_text(risk.read_text().replace("version: 1.0.0", "version: 1.1.0")
                    .replace("In at most five sentences", "In at most four sentences"))
    changed = _tick(defs, instance, first.cursor)
    digest = content_hash(load_template(risk))
    assert [(r.partition_key, r.run_key) for r in changed.run_requests] == [
        ("risk_summary", f"risk_summary:{digest}")]
    assert defs.resolve_sensor_def("prompt_library_sensor").job_name == "prompt_evaluation_job"
    assert not changed.dynamic_partitions_requests

    # a new template gets its partition and one run; a broken file is skipped, not fatal
    write_template(prompts_dir, template_data("fx_commentary"))
    (prompts_dir / "broken.yaml").write_text("id: [\n")
    added = _tick(defs, instance, changed.cursor)
    assert [r.partition_key for r in added.run_requests] == ["fx_commentary"]
    assert added.dynamic_partitions_requests[0].partition_keys == ["fx_commentary"]


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_registration_and_evaluation_of_one_template_partition(prompts_dir: Path, instance, monkeypatch,
                                                               fake_openai) -> None:
    from mlops_assets import stores
    from mlops_assets.prompts import records as R
    from mlops_assets.settings import get_settings

    tid = "defs_fx_note"
    write_template(prompts_dir, template_data(tid))
    instance.add_dynamic_partitions("prompt_templates", [tid])
    defs = build(prompts_dir)
    job = defs.resolve_job_def("prompt_evaluation_job")
    offline = job.execute_in_process(instance=instance, partition_key=tid, raise_on_error=False,
                                     run_config={"ops": {"prompt_evaluations": {"config": OFFLINE}}})
    assert offline.success
    assert _checks(offline) == {"template_valid": True, "static_checks": True, "toxicity": True,
                                "groundedness": True, "golden_quality": True}
    registered = _metadata(offline, "prompt_templates")
    assert (registered["version"], registered["state"]) == ("1.0.0", "IN_REVIEW")
    assert registered["submitted_now"] is True
    assert registered["diff_vs_production"].strip("`\ndif") == "no production version yet"
    assert "- spot: 1.080" in registered["rendered_sample"]
    evaluated = _metadata(offline, "prompt_evaluations")
    assert evaluated["passed"] and not evaluated["model_checks"]

    store = stores.governance_store(get_settings())
    assert store.state("prompt", tid, "1.0.0").value == "IN_REVIEW"
    recorded = R.latest_evaluation(store, tid, "1.0.0")
    assert recorded is not None and recorded.actor == "dagster"
    assert recorded.mlflow_run_id == evaluated["mlflow_run_id"]

    # with the LLM backend (a real openai client against the local fake server): the golden set runs
    # through the model, and its restated figures miss the required "EURUSD": golden_quality blocks
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    get_settings.cache_clear()
    online = build(prompts_dir).resolve_job_def("prompt_evaluation_job").execute_in_process(
        instance=instance, partition_key=tid, raise_on_error=False)
    checks = _checks(online)
    assert checks["golden_quality"] is False and checks["toxicity"] and checks["groundedness"]
    evaluated = _metadata(online, "prompt_evaluations")
    assert evaluated["model_checks"] and "contains_rate" in evaluated["blocking_failures"]
    assert any(r["path"] == "/v1/chat/completions" for r in fake_openai.requests)
    assert _metadata(online, "prompt_templates")["submitted_now"] is False  # same content: no new submission
    assert not R.latest_evaluation(store, tid, "1.0.0").passed
    assert store.verify_audit().ok


def test_usage_summary_and_kpi_history(prompts_dir: Path, instance) -> None:
    from mlops_assets import stores
    from mlops_assets.prompts.usage import UsageLogger, UsageRecord, usage_log_dir
    from mlops_assets.settings import get_settings

    s = get_settings()
    with UsageLogger(usage_log_dir(s.serving_log_dir)) as logger:
        for i in range(20):
            logger.log(UsageRecord.from_answer({
                "prompt_id": "market_narrative", "prompt_version": "1.0.0", "blocked": i == 0,
                "flags": ["toxic"] if i == 0 else [], "latency_ms": 100.0 + i,
                "usage": {"prompt_tokens": 50, "completion_tokens": 20}}))
    defs = build(prompts_dir)
    selection = dg.AssetSelection.assets("llm_usage_summary", "platform_kpis")
    for _ in range(2):
        result = dg.materialize([*defs.assets, *(defs.asset_checks or [])], resources=defs.resources,
                                selection=selection, instance=instance, raise_on_error=False)
        assert result.success
    wh = stores.warehouse(s)
    summary = wh.read_table("llm_usage_summary").to_dicts()
    assert [(r["template_id"], r["calls"], r["flagged"]) for r in summary] == [("market_narrative", 20, 1)]
    history = wh.read_table("platform_kpis_history")
    assert history["as_of"].n_unique() == 2
    per_kpi = history.group_by("kpi").len()
    assert per_kpi["len"].unique().to_list() == [2]
    latest = history.sort("as_of").filter(history["as_of"] == history["as_of"].max())
    values = dict(zip(latest["kpi"].to_list(), latest["value"].to_list()))
    assert values["llm_calls"] == 20 and values["llm_success_rate"] == pytest.approx(19 / 20)
    metadata = _metadata(result, "platform_kpis")
    assert metadata["history_points"] == 2 and metadata["values"]["llm_calls"] == 20
    assert metadata["trend"].startswith("![KPI trend](data:image/png;base64,")
    assert len(metadata["trend"]) < 100_000


def test_a_fresh_sensor_skips_templates_whose_content_was_already_evaluated(prompts_dir: Path,
                                                                            instance) -> None:
    """`make dev` after `make demo`: the sensor starts with no cursor, but the demo already evaluated the
    library's content; only templates never evaluated (or changed since) get a run."""
    defs = build(prompts_dir)
    instance.add_dynamic_partitions("prompt_templates", SHIPPED)
    demo_run = defs.resolve_job_def("prompt_evaluation_job").execute_in_process(
        instance=instance, partition_key="risk_summary", raise_on_error=False,
        run_config={"ops": {"prompt_evaluations": {"config": OFFLINE}}})
    assert demo_run.success
    sensor = defs.resolve_sensor_def("prompt_library_sensor")
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
        first = sensor(context)
    assert sorted(r.partition_key for r in first.run_requests) == ["market_narrative", "signal_explanation"]

    # the same template edited after the demo is evaluated again
    risk = prompts_dir / "risk_summary.yaml"
    risk.write_text(risk.read_text().replace("In at most five sentences", "In at most four sentences"))
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources,
                                   cursor=first.cursor) as context:
        changed = sensor(context)
    assert [(r.partition_key, r.run_key) for r in changed.run_requests] == [
        ("risk_summary", f"risk_summary:{content_hash(load_template(risk))}")]


def test_llm_chain_asset_and_the_demo_step(prompts_dir: Path, instance, monkeypatch: pytest.MonkeyPatch,
                                           fake_openai) -> None:
    """The demo's last step: without a key it says what is missing; with one it waits for the prompt's
    approval (the asset refuses), then deploys the chain; the KPIs are materialized every time."""
    import os

    from mlops_assets import stores
    from mlops_assets.defs.platform import demo_llm_chain_and_kpis
    from mlops_assets.prompts.workflow import submit_prompt
    from mlops_assets.prompts.approval import approve_prompt
    from mlops_assets.settings import get_settings

    tid, chain = "defs_chain_note", "defs_chain_llm"
    write_template(prompts_dir, template_data(tid))
    config_path = Path(os.environ["MLOPS_CONFIG"])
    config = yaml.safe_load(config_path.read_text())
    config_path.write_text(yaml.safe_dump({**config, "llm": {"llm_model_name": chain}}))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    get_settings.cache_clear()

    def step() -> tuple[int, list[str]]:
        lines: list[str] = []
        code = demo_llm_chain_and_kpis(build(prompts_dir), instance, lines.append, template_id=tid)
        return code, lines

    code, lines = step()
    assert code == 0 and "OPENAI_API_KEY (setting llm.api_key) is not set" in lines[2]
    assert lines[-1].startswith("platform KPIs: ") and "platform_kpis_history" in lines[-1]

    monkeypatch.setenv("OPENAI_API_KEY", FAKE_API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    get_settings.cache_clear()
    s = get_settings()
    submit_prompt(s, tid, "1.0.0", actor="alice")
    code, lines = step()
    assert code == 0 and f"prompt {tid} 1.0.0 is IN_REVIEW" in lines[2]
    assert f"mlops prompts approve {tid} 1.0.0" in lines[2]
    refused = build(prompts_dir).resolve_job_def("llm_chain_job").execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"llm_chain": {"config": {"template_id": tid}}}})
    assert not refused.success
    (failure,) = refused.get_step_failure_events()
    assert "not APPROVED" in failure.step_failure_data.user_failure_data.description

    approve_prompt(s, tid, "1.0.0", reviewer="bob", comment="reviewed")
    code, lines = step()
    assert code == 0, lines
    assert f"{chain}@production serves chain version 1 with prompt {tid} 1.0.0" in lines[2]
    client = stores.mlflow_client(s)
    assert {k: str(v) for k, v in client.get_registered_model(chain).aliases.items()} == {"production": "1"}
    event = instance.get_latest_materialization_event(dg.AssetKey("llm_chain"))
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert (metadata["chain_version"], metadata["prompt"]) == ("1", f"{tid} 1.0.0")
    assert metadata["registered_now"] is True
    assert FAKE_API_KEY not in str(metadata)
    kpis = stores.warehouse(s).read_table("platform_kpis_history")
    assert kpis["as_of"].n_unique() == 3  # one point per demo step

"""LangGraphWrapper end to end: real MLflow (SQLite) prompt registry and model, real openai client
against the local OpenAI-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from openai import OpenAI

from mlops_assets.prompts.chat import LLMConfigError, client_from_env
from mlops_assets.prompts.registry import set_production_alias, sync_prompt
from mlops_assets.prompts.library import load_library
from mlops_assets.llm.chain import (
    FeatureNotFoundError,
    LangGraphWrapper,
    LLMWrapperError,
    format_features,
    format_number,
)
from mlops_assets.llm.registry import log_llm_model
from mlops_assets.models.wrapper import load_wrapper
from mlops_assets_tests.fake_openai import FAKE_API_KEY

pytest_plugins = ["mlops_assets_tests.conftest_llm"]

LIBRARY = Path(__file__).resolve().parents[2] / "prompts"
FEATURES = {
    "AAPL": {"symbol": "AAPL", "date": "2024-05-02", "close": 187.42, "return_1d": 0.0131,
             "volatility_20d": 0.241, "rsi_14": 61.8, "volume_ratio_20d": 1.45},
}


@pytest.fixture(scope="module")
def registry(llm_tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The shared SQLite MLflow store with market_narrative 1.0.0 approved and in production."""
    root = tmp_path_factory.mktemp("llm_artifacts")
    uri = llm_tracking_uri
    template = {t.id: t for t in load_library(LIBRARY)}["market_narrative"]
    name, version, _ = sync_prompt(uri, template, "APPROVED")
    set_production_alias(uri, name, version)
    return {"uri": uri, "template": template, "artifacts": str(root / "artifacts")}


@pytest.fixture(scope="module")
def logged_chain(registry: dict):
    """The chain logged and registered once for the module (toxicity threshold 0.4)."""
    return log_llm_model(registry["uri"], "narrative-llm", "market_narrative",
                         artifact_location=registry["artifacts"], config={"toxicity_threshold": 0.4})


def _wrapper(registry: dict, openai_client: OpenAI, **config) -> LangGraphWrapper:
    return LangGraphWrapper(config, feature_lookup=FEATURES.get, llm_client=openai_client,
                            tracking_uri=registry["uri"])


def test_predict_runs_the_graph_end_to_end(registry, openai_client, fake_openai) -> None:
    answer = _wrapper(registry, openai_client).predict({"symbol": "AAPL"})
    assert answer["output"] == ("The close was 187.42. The return_1d was 0.0131. The rsi_14 was 61.8. "
                                "The volatility_20d was 0.241. The volume_ratio_20d was 1.45.")
    assert (answer["prompt_id"], answer["prompt_version"], answer["prompt_mlflow_version"]) == \
        ("market_narrative", "1.0.0", 1)
    assert answer["model"] == "gpt-4o-mini" and answer["flags"] == [] and not answer["blocked"]
    usage = answer["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert answer["latency_ms"] >= answer["llm_latency_ms"] > 0
    assert answer["checks"]["toxicity"]["scorer"] == "alt-profanity-check"
    request = fake_openai.requests[-1]
    assert request["headers"]["authorization"] == f"Bearer {FAKE_API_KEY}"
    body = request["body"]
    assert body["model"] == "gpt-4o-mini" and body["max_tokens"] == 220 and body["temperature"] == 0.0
    prompt = body["messages"][-1]["content"]
    assert "narrative for AAPL as of 2024-05-02" in prompt and "- rsi_14: 61.8" in prompt
    assert "{{" not in prompt


def test_hallucinated_number_is_flagged_and_withheld(registry, openai_client, fake_openai) -> None:
    fake_openai.config.mode = "hallucinate"
    answer = _wrapper(registry, openai_client).predict("AAPL")
    assert answer["blocked"] and answer["output"] is None and answer["flags"] == ["ungrounded_numbers"]
    assert answer["checks"]["numeric_groundedness"]["unsupported"] == ["282.13"]  # 187.42 * 1.5 + 1
    shown = _wrapper(registry, openai_client, block_on_flags=False).predict("AAPL")
    assert not shown["blocked"] and "282.13" in shown["output"]


def test_toxic_output_uses_moderation_or_falls_back(registry, openai_client, fake_openai) -> None:
    fake_openai.config.mode = "toxic"
    moderated = _wrapper(registry, openai_client, use_moderation=True).predict("AAPL")
    assert moderated["flags"] == ["toxic"]
    assert moderated["checks"]["toxicity"]["scorer"] == "openai-moderation"
    fake_openai.config.moderation_enabled = False
    fallback = _wrapper(registry, openai_client, use_moderation=True).predict("AAPL")
    assert fallback["flags"] == ["toxic"] and fallback["output"] is None
    assert fallback["checks"]["toxicity"]["scorer"] == "alt-profanity-check"
    assert "NotFoundError 404" in fallback["checks"]["toxicity"]["fallback_reason"]


def test_request_errors_are_named(registry, openai_client) -> None:
    wrapper = _wrapper(registry, openai_client)
    with pytest.raises(FeatureNotFoundError, match="'MSFT'"):
        wrapper.predict("MSFT")
    with pytest.raises(LLMWrapperError, match="symbol"):
        wrapper.predict({"symbol": " "})
    no_lookup = LangGraphWrapper(llm_client=openai_client, tracking_uri=registry["uri"])
    with pytest.raises(LLMWrapperError, match="feature_lookup"):
        no_lookup.predict("AAPL")
    inline = no_lookup.predict({"symbol": "MSFT", "features": {"close": 395.15, "date": "2024-08-05"}})
    assert inline["output"] == "The close was 395.15." and inline["flags"] == []
    with pytest.raises(NotImplementedError, match="prompt"):
        wrapper.train()


def test_client_from_env_requires_the_key(registry, fake_openai) -> None:
    with pytest.raises(LLMConfigError, match="OPENAI_API_KEY"):
        client_from_env({})
    env = {"OPENAI_API_KEY": FAKE_API_KEY, "OPENAI_BASE_URL": fake_openai.base_url}
    wrapper = LangGraphWrapper(feature_lookup=FEATURES.get, tracking_uri=registry["uri"], environ=env)
    assert wrapper.predict("AAPL")["flags"] == []
    assert FAKE_API_KEY not in repr(wrapper)


def test_logged_chain_loads_refreshes_and_never_stores_the_key(
    registry, logged_chain, openai_client, fake_openai
) -> None:
    uri, logged = registry["uri"], logged_chain
    client = MlflowClient(uri)
    version = client.get_model_version("narrative-llm", logged.version)
    assert version.tags["wrapper"] == "llm" and version.tags["llm.prompt_id"] == "market_narrative"
    assert str(client.get_model_version_by_alias("narrative-llm", "challenger").version) == logged.version

    wrapper = load_wrapper(logged.model_uri, client, feature_lookup=FEATURES.get, llm_client=openai_client,
                           tracking_uri=uri)
    assert isinstance(wrapper, LangGraphWrapper) and wrapper.config.toxicity_threshold == 0.4
    assert wrapper.predict("AAPL")["prompt_mlflow_version"] == 1
    assert wrapper.refresh() is False

    # a new approved prompt version in production is picked up by refresh(), no reload
    template = registry["template"]
    edited = template.template.replace("four", "three")
    v2 = template.model_copy(update={"version": "1.1.0", "template": edited})
    _, new_version, _ = sync_prompt(uri, v2, "APPROVED")
    set_production_alias(uri, "market_narrative", new_version)
    assert wrapper.refresh() is True
    answer = wrapper.predict("AAPL")
    assert (answer["prompt_mlflow_version"], answer["prompt_version"]) == (new_version, "1.1.0")
    assert "at most three short sentences" in fake_openai.requests[-1]["body"]["messages"][-1]["content"]
    set_production_alias(uri, "market_narrative", 1)  # leave production as the other tests expect

    run = client.get_run(logged.run_id)
    stored = json.dumps([run.data.params, run.data.tags, version.tags])
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{logged.run_id}/", tracking_uri=uri)
    stored += "".join(p.read_text(errors="ignore") for p in Path(local).rglob("*") if p.is_file())
    artifacts = Path(registry["artifacts"]).rglob("*")
    stored += "".join(p.read_text(errors="ignore") for p in artifacts if p.is_file())
    # the logged model's own files (MLflow 3 keeps them with the logged model, wherever its experiment puts them)
    logged_model = client.get_logged_model(version.model_id or version.source.removeprefix("models:/"))
    model_files = mlflow.artifacts.download_artifacts(artifact_uri=logged_model.artifact_location)
    stored += "".join(p.read_text(errors="ignore") for p in Path(model_files).rglob("*") if p.is_file())
    assert "set_model(LLMChainModel())" in stored and "toxicity_threshold: 0.4" in stored  # we read it all
    assert FAKE_API_KEY not in stored


def test_plain_pyfunc_serves_requests_that_carry_features(
    registry, logged_chain, fake_openai, monkeypatch
) -> None:
    """What `mlflow models serve` would run: no lookup, key and backend from the environment."""
    logged = logged_chain
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    mlflow.set_tracking_uri(registry["uri"])
    try:
        model = mlflow.pyfunc.load_model(logged.model_uri)
        answers = model.predict([{"symbol": "MSFT", "features": {"close": 395.15, "date": "2024-08-05"}}])
    finally:
        mlflow.set_tracking_uri(None)
    assert len(answers) == 1 and answers[0]["output"] == "The close was 395.15."
    assert answers[0]["prompt_id"] == "market_narrative" and answers[0]["flags"] == []


def test_evaluate_logs_golden_metrics_to_the_active_run(registry, openai_client, tmp_path) -> None:
    wrapper = _wrapper(registry, openai_client)
    cases = [c.model_dump() for c in registry["template"].golden_set]
    mlflow.set_tracking_uri(registry["uri"])
    try:
        with mlflow.start_run() as run:
            metrics = wrapper.evaluate(cases, {"prefix": "golden"})
    finally:
        mlflow.set_tracking_uri(None)
    assert metrics["golden.n_cases"] == 3 and 0 < metrics["golden.rouge_l"] < 1
    assert metrics["golden.total_tokens"] > 0 and metrics["golden.toxicity_max"] < 0.5
    logged = MlflowClient(registry["uri"]).get_run(run.info.run_id)
    assert logged.data.metrics["golden.rouge_l"] == pytest.approx(metrics["golden.rouge_l"])
    assert logged.data.tags["llm.prompt_id"] == "market_narrative"
    with pytest.raises(LLMWrapperError, match="empty"):
        wrapper.evaluate([])


def test_feature_formatting_is_readable_by_the_numeric_check() -> None:
    assert [format_number(v) for v in (187.42, 0.0131, 1234567.0, 3.0, -0.000123456789, 0.0)] == \
        ["187.42", "0.0131", "1234567", "3", "-0.000123457", "0"]
    row = {"symbol": "X", "date": "2024-01-02", "b": 2.5, "a": None, "c": "up"}
    assert format_features(row) == "- b: 2.5\n- c: up"

"""``/invoke`` as a new user gets it: the inference app says what is missing, ``mlops prompts deploy-chain``
refuses an unapproved prompt, then (after a reviewer approves) registers the LangGraph chain and moves its
serving alias through the governed path, and ``/invoke`` answers (real registry, governance store, uvicorn,
and the real openai client against the local OpenAI-compatible server)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from mlops_assets.cli import app
from mlops_assets.settings import PROJECT_ROOT, get_settings, load_settings
from mlops_assets_tests.fake_openai import FAKE_API_KEY
from mlops_assets_tests.serving.conftest import ThreadedServer, World, wait_ready, wait_until

pytest_plugins = ["mlops_assets_tests.conftest_llm"]
pytestmark = pytest.mark.xdist_group("serving")

TEMPLATE = "deploy_narrative"  # a copy of market_narrative under its own id: the session registry is shared
CHAIN = "deploy_chain_llm"
runner = CliRunner()


def _config(world: World, home: Path, prompts: Path, **llm: str) -> Path:
    config = yaml.safe_load(world.config_for(home).read_text())
    config["prompts_dir"] = str(prompts)
    config["llm"] = {"llm_model_name": CHAIN, **llm}
    path = home / f"config-{len(llm)}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _cli(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_deploy_chain_from_refusal_to_an_answer(world: World, tmp_path: Path, fake_openai, embedder,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_assets import stores
    from serving.inference.main import create_app

    prompts = tmp_path / "prompts"
    prompts.mkdir()
    source = (PROJECT_ROOT / "prompts" / "market_narrative.yaml").read_text()
    (prompts / f"{TEMPLATE}.yaml").write_text(source.replace("id: market_narrative", f"id: {TEMPLATE}"))
    home = tmp_path / "home"
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MLOPS_HOME", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    config = _config(world, home, prompts)
    monkeypatch.setenv("MLOPS_CONFIG", str(config))
    get_settings.cache_clear()
    settings = get_settings()
    world.write_snapshot(settings.online_dir)

    # 1. no key and no chain: /ready (still ready: the tabular model serves) and /invoke say what is missing
    with ThreadedServer(create_app(settings)) as server:
        ready = wait_ready(server.url)
        problems = " ".join(ready["llm_problems"])
        assert ready["llm"] is None and "OPENAI_API_KEY is not set (setting llm.api_key)" in problems
        assert "mlops prompts deploy-chain TEMPLATE_ID" in problems and CHAIN in problems
        r = httpx.post(f"{server.url}/invoke", json={"symbol": "AAA"})
        assert r.status_code == 503
        assert "OPENAI_API_KEY" in r.json()["detail"] and "mlops prompts deploy-chain" in r.json()["detail"]

    # 2. the prompt is not approved: refused with what to do, and nothing registered
    code, out = _cli("prompts", "deploy-chain", TEMPLATE, "--by", "carol")
    assert code != 0 and "not APPROVED" in out and f"mlops prompts approve {TEMPLATE} 1.0.0" in out
    client = stores.mlflow_client(settings)
    assert not client.search_model_versions(f"name = '{CHAIN}'")

    # 3. submitted by one person, approved by another, then deployed; a second deploy changes nothing
    code, out = _cli("prompts", "submit", TEMPLATE, "--by", "alice", "--offline")
    assert code == 0, out
    code, out = _cli("prompts", "approve", TEMPLATE, "1.0.0", "--by", "bob", "--comment", "reviewed")
    assert code == 0, out
    code, out = _cli("prompts", "deploy-chain", TEMPLATE, "--by", "carol")
    assert code == 0, out
    assert f"{CHAIN}@production now serves chain version 1 with prompt {TEMPLATE} 1.0.0" in out
    assert "OPENAI_API_KEY (setting llm.api_key) is not set" in out  # the note for the serving side
    code, out = _cli("prompts", "deploy-chain", TEMPLATE, "--by", "carol")
    assert code == 0 and "already served chain version 1" in out
    assert len(client.search_model_versions(f"name = '{CHAIN}'")) == 1
    tags = client.get_model_version(CHAIN, "1").tags
    assert (tags["llm.prompt_id"], tags["llm.prompt_version"], tags["wrapper"]) == (TEMPLATE, "1.0.0", "llm")
    store = stores.governance_store(settings)
    (deployment,) = store.list_deployments(CHAIN, alias="production")
    assert deployment.actor == "carol" and deployment.version == "1"
    assert deployment.checklist["prompt"]["approved_by"] == "bob"
    assert deployment.checklist["prompt"]["state"] == "APPROVED"
    assert store.verify_audit().ok  # the move is in the hash-chained audit log

    # 4. with a key and the local OpenAI-compatible server: /invoke answers through the deployed chain
    keyed = load_settings(env={}, config_path=_config(world, home, prompts, api_key=FAKE_API_KEY,
                                                       base_url=fake_openai.base_url))
    with ThreadedServer(create_app(keyed)) as server:
        ready = wait_until(lambda: (r := httpx.get(f"{server.url}/ready").json())["llm"] and r, timeout=60)
        assert ready["llm"] == {"name": CHAIN, "version": "1", "alias": "production"}
        assert ready["llm_problems"] == []
        r = httpx.post(f"{server.url}/invoke", json={"symbol": "AAA"}, timeout=60)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert (answer["prompt_id"], answer["prompt_version"], answer["model_version"]) == (TEMPLATE, "1.0.0", "1")
        assert answer["output"] and FAKE_API_KEY not in json.dumps(answer)
    get_settings.cache_clear()

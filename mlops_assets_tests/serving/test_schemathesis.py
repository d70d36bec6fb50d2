"""Property-based fuzzing of both apps' OpenAPI documents with schemathesis (CLI ``st run`` against
the live servers): no request, however malformed, may produce a server error, and every answer must
match the document (status code declared, content type declared, body valid against the declared
schema, ``Allow`` on 405).

``/invoke`` is fuzzed with a registered LLM chain whose provider is the local OpenAI-compatible
fake, so its real validation runs. The management API is fuzzed with an admin key, so the write
routes run their real validation and governance rules; Dagster is a local fake endpoint.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mlops_assets_tests.serving.conftest import (
    KEYS,
    FakeDagster,
    ThreadedServer,
    World,
    copy_version,
    wait_ready,
    wait_until,
)

from mlops_assets_tests.serving.test_invoke import serving_chain

pytest_plugins = ["mlops_assets_tests.conftest_llm"]
pytestmark = pytest.mark.xdist_group("serving")
ST = str(Path(sys.executable).with_name("st"))
ADMIN_KEY = next(key for key, entry in KEYS.items() if entry["role"] == "admin")
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance", "unsupported_method",
          "allow_header_conformance")


def _fuzz(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [ST, "run", f"{url}/openapi.json", "--checks", ",".join(CHECKS), "--max-examples", "5",
           "--generation-deterministic", "--phases", "examples,coverage,fuzzing", "--request-timeout", "30",
           "--max-failures", "20", "--max-time", "120", *extra]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)


def _assert_clean(result: subprocess.CompletedProcess, min_operations: int) -> dict[str, int]:
    """Exit 0 (no check failed) over at least ``min_operations`` operations; the figures of the run."""
    text = result.stdout
    failures = text[text.find("FAILURES"):text.find("WARNINGS")] if "FAILURES" in text else ""
    short = "\n".join(line[:300] for line in (failures or text).splitlines())  # bodies can be huge
    assert result.returncode == 0, short[-12000:] + result.stderr[-2000:]
    figures = {"tested": _number(text, r"Tested:\s+(\d+)"), "cases": _number(text, r"(\d+) generated")}
    assert figures["tested"] >= min_operations and figures["cases"] > 0, text[-4000:]
    return figures


def _number(text: str, pattern: str) -> int:
    found = re.search(pattern, text)
    return int(found.group(1)) if found else 0


def test_inference_app_conforms_to_its_document(world: World, tmp_path: Path, fake_openai,
                                                monkeypatch: pytest.MonkeyPatch,
                                                request: pytest.FixtureRequest) -> None:
    from serving.inference.main import create_app

    settings = serving_chain(world, tmp_path, fake_openai, monkeypatch, request)
    with ThreadedServer(create_app(settings)) as server:
        wait_ready(server.url)
        wait_until(lambda: httpx.get(f"{server.url}/ready").json()["llm"], timeout=60)
        result = _fuzz(server.url, tmp_path, "--header", f"X-API-Key: {ADMIN_KEY}")
        assert httpx.get(f"{server.url}/health").status_code == 200  # still up after the run
    figures = _assert_clean(result, min_operations=5)
    print("inference app:", figures)


def test_management_api_conforms_to_its_document(world: World, tmp_path: Path) -> None:
    from serving.management.main import create_app

    dagster = FakeDagster()
    settings = world.settings_for(tmp_path / "home", dagster_graphql_url=dagster.url)
    copy_version(world, settings.model.name, world.v1)
    try:
        with ThreadedServer(create_app(settings)) as server:
            result = _fuzz(server.url, tmp_path, "--header", f"X-API-Key: {ADMIN_KEY}")
    finally:
        dagster.server.shutdown()
    figures = _assert_clean(result, min_operations=40)
    print("management API:", figures)

"""Inputs an adversarial client sends, on real servers: none reaches a 500 or writes anything, and
each error's status follows its type (``mlops_assets.errors``), with one body shape.

Covers: deep nesting on ``/predict``, huge version numbers on the management API, rejecting a
prompt nobody wrote, a client that disconnects mid-body on ``/invoke``, and the type-to-status map.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_assets import stores
from mlops_assets.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from mlops_assets.settings import Settings
from mlops_assets_tests.serving.conftest import (
    KEYS,
    FakeDagster,
    ThreadedServer,
    World,
    copy_version,
    wait_until,
)

pytestmark = pytest.mark.xdist_group("serving")
ADMIN = {"X-API-Key": next(k for k, v in KEYS.items() if v["role"] == "admin")}
HUGE = "99999999999999999999"


def _nested(depth: int, leaf: str = "1.0", kind: str = "list") -> str:
    if kind == "list":
        return "[" * depth + leaf + "]" * depth
    return '{"a":' * depth + leaf + "}" * depth


@pytest.mark.parametrize("kind", ["list", "object"])
def test_predict_refuses_deep_nesting_with_a_422_that_says_so(world: World, inference_server, kind: str) -> None:
    url = inference_server.url
    body = '{"features": {"f0": ' + _nested(1000, kind=kind) + "}}"
    r = httpx.post(f"{url}/predict", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 422, r.text
    items = {tuple(i["loc"]): i for i in r.json()["detail"]}
    deep = items[("body", "features", "f0")]
    assert deep["type"] == "too_deep" and "nested more than 32 levels" in deep["msg"]
    # a shallow wrong value is still named as what it is, and the batch form is checked the same way
    r = httpx.post(f"{url}/predict", json={"instances": [{"features": {"f0": [[1.0]]}}]}, timeout=30)
    assert r.status_code == 422 and "a list of 1 items" in r.text
    big = '{"features": {"f0": ' + "9" * 5000 + "}}"  # an integer with more digits than str() allows
    r = httpx.post(f"{url}/predict", content=big, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 422, r.text
    assert httpx.get(f"{url}/health").status_code == 200


def _counts(url: str, endpoint: str) -> dict[str, float]:
    """{status: requests} of one endpoint from the app's Prometheus text."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        if family.name == "mlops_serving_requests":
            for s in family.samples:
                if s.name.endswith("_total") and s.labels.get("endpoint") == endpoint:
                    out[s.labels["status"]] = out.get(s.labels["status"], 0) + s.value
    return out


def _disconnect_mid_body(url: str, path: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     "Content-Length: 5000\r\n\r\n".encode() + b'{"symbol": "AA')


@pytest.mark.parametrize("path", ["/invoke", "/predict"])
def test_a_client_disconnect_is_its_own_outcome_not_a_server_error(world: World, inference_server,
                                                                   path: str) -> None:
    url = inference_server.url
    _disconnect_mid_body(url, path)
    counts = wait_until(lambda: (c := _counts(url, path)).get("499") and c, timeout=20)
    assert counts.get("499") == 1 and not any(status.startswith("5") for status in counts), counts


# --- the management API ---------------------------------------------------------------------------


@dataclass
class Api:
    url: str
    settings: Settings
    version: str


@pytest.fixture(scope="module")
def api(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    from serving.management.main import create_app

    dagster = FakeDagster()
    settings = world.settings_for(tmp_path_factory.mktemp("hostile_home"), dagster_graphql_url=dagster.url)
    settings.ensure_dirs()
    version = copy_version(world, settings.model.name, world.v1)
    try:
        with ThreadedServer(create_app(settings)) as server:
            yield Api(server.url, settings, version)
    finally:
        dagster.server.shutdown()


def test_huge_version_numbers_are_422_naming_the_field(api: Api) -> None:
    name = api.settings.model.name
    base = f"{api.url}/api/v1/ml"
    r = httpx.post(f"{base}/evaluation/runs", json={"version": HUGE}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "version"], r.text
    r = httpx.post(f"{base}/lifecycle/models/{name}/rollback", json={"to_version": HUGE, "reason": "x"},
                   headers=ADMIN)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "to_version"], r.text
    r = httpx.get(f"{base}/lifecycle/models/{name}/compare", params={"versions": [api.version, HUGE]})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "versions" and HUGE[:9] in r.json()["reasons"][0]
    r = httpx.get(f"{base}/lifecycle/models/{name}/{HUGE}")
    assert r.status_code == 422, r.text
    # the largest number allowed still reaches the store and is an honest 404
    r = httpx.get(f"{base}/lifecycle/models/{name}/compare", params={"versions": [api.version, "999999999"]})
    assert r.status_code == 404, r.text


def test_rejecting_a_prompt_nobody_wrote_is_404_and_writes_nothing(api: Api) -> None:
    store = stores.governance_store(api.settings)
    audit_before = len(store.list_audit(None))
    base = f"{api.url}/api/v1/prompt-governance/templates"
    for template_id in ("made_up_template", "ignore_previous_instructions"):
        r = httpx.post(f"{base}/{template_id}/1.0.0/reject", json={"reason": "fuzz"}, headers=ADMIN)
        assert r.status_code == 404, r.text
        assert r.json()["field"] == "template_id" and template_id in r.json()["detail"]
        assert store.latest_decision("prompt", template_id, "1.0.0") is None
    assert len(store.list_audit(None)) == audit_before
    # a real template in the library can still be rejected (and that is recorded)
    r = httpx.post(f"{base}/market_narrative/1.0.0/reject", json={"reason": "tone"}, headers=ADMIN)
    assert r.status_code in (200, 409), r.text  # 409: the library holds another version of it


def test_405_lists_every_method_of_the_path(api: Api) -> None:
    r = httpx.request("OPTIONS", f"{api.url}/api/v1/ml/lifecycle/drift-events")
    assert r.status_code == 405
    assert {"GET", "POST"} <= {m.strip() for m in r.headers["allow"].split(",")}
    assert r.json() == {"detail": "Method Not Allowed"}


# --- the type -> status map ----------------------------------------------------------------------


def test_status_and_body_follow_the_error_type_not_its_text() -> None:
    from mlops_assets.prompts.library import PromptLibraryError
    from mlops_assets.governance.records import GovernanceError
    from mlops_assets.models.promotion import PromotionRefused
    from mlops_assets.models.registry import RegistryError
    from serving.errors import error_body, status_of

    cases = [
        (InvalidInput("x", "not found"), 422),  # the words "not found" do not make it a 404
        (FieldError("x", "bad", "do y"), 422),
        (NotFound("template_id", "no such thing"), 404),
        (Conflict("state", "refused"), 409),
        (Forbidden("role", "viewer"), 403),
        (GovernanceError("no template here", field="template_id"), 409),
        (PromotionRefused("approve", "m", "1", ["gate failed", "no approval"]), 409),
        (RegistryError("alias", "unknown"), 422),
        (PromptLibraryError("not found", file="a.yaml"), 422),
    ]
    for exc, status in cases:
        assert status_of(exc) == status, (exc, status)
        body = error_body(exc)
        assert body["detail"] == str(exc) and body["reasons"], body
    refused = error_body(PromotionRefused("approve", "m", "1", ["gate failed", "no approval"]))
    assert refused["field"] == "version" and refused["reasons"] == ["gate failed", "no approval"]
    assert error_body(FieldError("x", "bad", "do y"))["hint"] == "do y"


def test_every_error_status_in_both_documents_has_the_one_error_shape(world: World, tmp_path: Path) -> None:
    from serving.management.main import create_app as create_api
    from serving.inference.main import create_app as create_inference

    settings = world.settings_for(tmp_path / "home")
    for app in (create_api(settings), create_inference(settings, start_background=False)):
        doc = app.openapi()
        for path, operations in doc["paths"].items():
            for method, operation in operations.items():
                for status, response in operation["responses"].items():
                    if status.startswith(("4", "5")) and path != "/ready":
                        schema = response["content"]["application/json"]["schema"]
                        assert schema == {"$ref": "#/components/schemas/ErrorMessage"}, (method, path, status)

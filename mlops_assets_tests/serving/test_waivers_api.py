"""Governed exceptions through the management API on a real uvicorn: a waiver is role-checked,
recorded in the audit log, shown in the version's view of its compliance; a critical check refuses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlops_assets.models import gates as G
from mlops_assets.models import promotion
from mlops_assets_tests.models.governed import compliance_report
from mlops_assets_tests.serving import test_management_api as tm
from mlops_assets_tests.serving.conftest import ThreadedServer, World, copy_version

pytestmark = pytest.mark.xdist_group("serving")
NAME = "waiver_model"  # its own registered model: the other API tests count their versions
WHY = "regime change after the rate decision; retrain is scheduled"


@pytest.fixture(scope="module")
def mgmt(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tm.Mgmt]:
    """The management API on a real uvicorn, its own MLOPS_HOME, compliance required."""
    from serving.management.main import create_app

    settings = world.settings_for(tmp_path_factory.mktemp("waiver_home"))
    settings = settings.model_copy(update={"evaluation": settings.evaluation.model_copy(
        update={"compliance_required": True})})
    settings.ensure_dirs()
    with ThreadedServer(create_app(settings)) as server:
        yield tm.Mgmt(server.url, settings, world.client(), None)  # type: ignore[arg-type]


def test_waiver_is_role_checked_audited_and_shown(mgmt: tm.Mgmt, world: World) -> None:
    version = copy_version(world, NAME, world.v1)
    store = tm._store(mgmt)
    G.record_evaluation(mgmt.client, store, NAME, version, "test_auc", 0.7, 0.5)
    G.record_compliance(mgmt.client, store, NAME, version, compliance_report({"drift_share": 0.62}))
    path = f"/api/v1/ml/lifecycle/models/{NAME}/{version}"
    waiver = {"waivers": [{"check": "drift_share", "reason": WHY}]}
    with tm._api(mgmt) as api:
        r = api.post(f"{path}/approve", headers=tm.APPROVER)
        assert r.status_code == 409 and "check 'drift_share' failed" in r.json()["detail"]
        assert api.post(f"{path}/approve", headers=tm.VIEWER, json=waiver).status_code == 403
        r = api.post(f"{path}/approve", headers=tm.APPROVER,
                     json={"waivers": [{"check": "evaluation", "reason": "close enough"}]})
        assert r.status_code == 409 and "'evaluation' is critical and cannot be waived" in r.json()["detail"]
        r = api.post(f"{path}/approve", headers=tm.APPROVER, json={"comment": "known regime change", **waiver})
        assert r.status_code == 200, r.text
        assert r.json()["waivers"] == {"drift_share": WHY} and r.json()["decision"]["waivers"] == {"drift_share": WHY}
        view = api.get(path).json()
        assert view["waivers"]["waivers"] == {"drift_share": WHY} and view["waivers"]["approved_by"] == "bob"
        assert view["gates"]["compliance_passed"] is True  # cleared by the waiver
        assert view["gate_results"]["compliance"]["failed"] == ["drift_share"]
        assert view["gate_results"]["compliance"]["values"]["drift_share"] == 0.62
        audit = api.get("/api/v1/audit", params={"subject_id": f"{NAME}/{version}"}).json()["items"]
        approved = [e for e in audit if e["action"] == "decision.approved"]
        assert approved[0]["actor"] == "bob" and approved[0]["details"]["waivers"] == {"drift_share": WHY}
    # the one alias mover sees the waiver in the store
    deployment = promotion.promote(mgmt.client, store, NAME, version, alias="production",
                                   actor="sensor", compliance_required=True)
    assert deployment.checklist["waivers"] == {"drift_share": WHY}

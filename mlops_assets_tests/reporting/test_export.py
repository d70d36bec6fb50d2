"""The audit export bundle: complete, verifiable (folder and zip), and caught when edited afterwards."""

from __future__ import annotations

import hashlib
import json
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from mlops_assets import stores
from mlops_assets.governance.audit import entry_hash
from mlops_assets.reporting.export import AUDIT_LOG, MANIFEST, bundle_summary, export_bundle, verify_bundle
from mlops_assets.prompts.workflow import submit_prompt
from mlops_assets.prompts.approval import approve_prompt
from mlops_assets.settings import Settings
from mlops_assets_tests.prompts.test_workflow import make_settings, template_data, write_template

pytest_plugins = ["mlops_assets_tests.conftest_llm"]


@pytest.fixture()
def bundle(tmp_path: Path, llm_tracking_uri: str, embedder) -> tuple[Settings, Path]:
    settings = make_settings(tmp_path, llm_tracking_uri)
    write_template(settings.prompts_dir, template_data("export_note"))
    submit_prompt(settings, "export_note", "1.0.0", actor="alice", embedder=embedder)
    approve_prompt(settings, "export_note", "1.0.0", reviewer="bob", comment="fine")
    store = stores.governance_store(settings)
    store.record_deployment(name="market_direction", alias="production", version="3", previous_version="2",
                            actor="bob", reason="approved")
    report = settings.reports_dir / "evaluation" / "market_direction" / "3"
    report.mkdir(parents=True)
    (report / "compliance.json").write_text('{"passed": true}')
    return settings, export_bundle(settings, tmp_path / "out", actor="auditor-export")


def test_bundle_holds_the_evidence_and_verifies(bundle: tuple[Settings, Path]) -> None:
    settings, root = bundle
    assert verify_bundle(root) == (True, [])
    assert verify_bundle(root.with_suffix(".zip")) == (True, [])
    manifest = json.loads((root / MANIFEST).read_text())
    assert {"audit/verification.json", "decisions/decisions.json", "deployments/models.json",
            "deployments/prompts.json", "prompts/evaluations.json", "prompts/submissions.json",
            "policies/model_gate.json", "policies/compliance_policy.json", "policies/prompt_policy.json",
            "policies/approvals.json",
            "reports/evaluation/market_direction/3/compliance.json"} <= set(manifest["files"])
    decisions = json.loads((root / "decisions/decisions.json").read_text())
    assert [(d["kind"], d["name"], d["state"]) for d in decisions] == [("prompt", "export_note", "APPROVED")]
    assert [h["state"] for h in decisions[0]["history"]] == ["IN_REVIEW", "APPROVED"]
    evaluations = json.loads((root / "prompts/evaluations.json").read_text())
    assert evaluations[0]["template_id"] == "export_note" and evaluations[0]["passed"]
    assert json.loads((root / "deployments/models.json").read_text())[0]["version"] == "3"
    prompt_moves = json.loads((root / "deployments/prompts.json").read_text())
    assert [(m["template_id"], m["version"], m["kind"]) for m in prompt_moves] == [("export_note", "1.0.0",
                                                                                     "promotion")]
    policy = json.loads((root / "policies/prompt_policy.json").read_text())
    assert policy["high"]["max_toxicity"] < policy["low"]["max_toxicity"]
    rules = json.loads((root / "policies/approvals.json").read_text())
    assert "reviewer_is_not_owner" in rules["prompt"]["requires"]
    lines = (root / AUDIT_LOG).read_text().splitlines()
    assert len(lines) == manifest["audit_head"]["seq"]
    assert json.loads(lines[-1])["hash"] == manifest["audit_head"]["hash"]
    assert bundle_summary(root.with_suffix(".zip"))["files"] == len(manifest["files"])
    # the export itself is on the record, and the store's chain still verifies
    store = stores.governance_store(settings)
    (exported,) = store.list_audit(limit=1, action="audit.exported")
    assert exported.subject_id == root.name and exported.actor == "auditor-export"
    assert exported.details["manifest_sha256"] and store.verify_audit().ok


def test_edits_after_export_are_caught(bundle: tuple[Settings, Path]) -> None:
    _, root = bundle
    report = root / "reports/evaluation/market_direction/3/compliance.json"
    report.write_text('{"passed": false}')
    (root / "notes.txt").write_text("added later")
    ok, problems = verify_bundle(root)
    assert not ok
    assert "reports/evaluation/market_direction/3/compliance.json does not match its sha256" in problems[0]
    assert any("notes.txt is not listed" in p for p in problems)

    # rewriting an audit entry and its manifest hash still breaks the chain
    log_path = root / AUDIT_LOG
    lines = log_path.read_text().splitlines()
    entry = json.loads(lines[0])
    entry["actor"] = "mallory"
    lines[0] = json.dumps(entry, sort_keys=True)
    log_path.write_text("\n".join(lines) + "\n")
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["files"][AUDIT_LOG] = {"sha256": hashlib.sha256(log_path.read_bytes()).hexdigest(),
                                    "bytes": log_path.stat().st_size}
    (root / MANIFEST).write_text(json.dumps(manifest))
    _, problems = verify_bundle(root)
    assert f"{AUDIT_LOG}: entry seq 1 does not match its hash (edited)" in problems
    # ...and recomputing that entry's hash breaks the link of the next one
    entry["hash"] = entry_hash(entry["seq"], datetime.fromisoformat(entry["ts"]),
                               entry["actor"], entry["action"], entry["subject_kind"], entry["subject_id"],
                               entry["details"], entry["prev_hash"])
    lines[0] = json.dumps(entry, sort_keys=True)
    log_path.write_text("\n".join(lines) + "\n")
    manifest["files"][AUDIT_LOG] = {"sha256": hashlib.sha256(log_path.read_bytes()).hexdigest(),
                                    "bytes": log_path.stat().st_size}
    (root / MANIFEST).write_text(json.dumps(manifest))
    _, problems = verify_bundle(root)
    assert f"{AUDIT_LOG}: entry seq 2 does not link to entry 1" in problems

    # the zip is checked the same way
    zipped = root.with_suffix(".zip")
    tampered = zipped.with_name("tampered.zip")
    with zipfile.ZipFile(zipped) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, b"{}" if name.endswith("policies/model_gate.json") else data)
    ok, problems = verify_bundle(tampered)
    assert not ok and problems == ["policies/model_gate.json does not match its sha256 in the manifest "
                                   "(changed after export)"]
    assert verify_bundle(root.parent / "missing") == (False, [f"{root.parent / 'missing'} does not exist"])


def test_governance_doc_states_the_thresholds_in_force() -> None:
    """docs/governance.md is what reviewers read: its threshold table must match the prompt policy."""
    from mlops_assets.prompts.policy import PromptPolicy, RiskThresholds

    doc = (Path(__file__).resolve().parents[2] / "docs" / "governance.md").read_text()
    policy = PromptPolicy()
    for name in RiskThresholds.model_fields:
        if name == "advisory":
            continue
        row = f"| `{name}` | " + " | ".join(str(getattr(policy.for_level(level), name))
                                           for level in ("low", "medium", "high")) + " |"
        assert row in doc, f"docs/governance.md is out of date for {name}: expected {row}"
    for level in ("low", "medium", "high"):
        assert f"**{level}** — {', '.join(policy.for_level(level).advisory)}" in " ".join(doc.split())

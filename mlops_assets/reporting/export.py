"""The audit evidence bundle: one folder (and the same as a .zip) an auditor can take away and check.

:func:`export_bundle` writes ``audit-bundle-<UTC stamp>/``:

* ``audit/audit_log.jsonl`` (every entry, oldest first) and ``audit/verification.json`` (the
  store's own verification with the HMAC key, at export time);
* ``decisions/decisions.json`` (full decision history of every model and prompt version);
* ``deployments/models.json`` and ``deployments/prompts.json`` (every alias move), ``drift/events.json``;
* ``reports/evaluation/...`` (the evaluation and compliance reports, copied as written);
* ``prompts/evaluations.json``, ``prompts/submissions.json`` (the exact content of every submitted
  version) and ``prompts/status.json``;
* ``policies/*.json``: model gate thresholds, the compliance policy, the prompt policy per risk
  level, and who may approve what;
* ``manifest.json``: sha256 and size of every other file, and the audit head at export.

The export itself is recorded in the audit log (``audit.exported`` with the manifest's sha256).
:func:`verify_bundle` re-checks a folder or zip without the HMAC key: every file against the
manifest, no file added, and the audit log's hash chain (each entry's hash recomputed, the links,
the head named by the manifest).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_assets.prompts import records as R
from mlops_assets.governance.audit import GENESIS_HASH, entry_hash, format_ts
from mlops_assets.prompts.policy import PromptPolicy
from mlops_assets.prompts.records import split_subject
from mlops_assets.prompts.workflow import ApprovalPolicy

if TYPE_CHECKING:
    from mlops_assets.evaluation.compliance import CompliancePolicy
    from mlops_assets.governance.store import GovernanceStore
    from mlops_assets.settings import Settings

BUNDLE_FORMAT = "mlops-audit-bundle/1"
BUNDLE_PREFIX = "audit-bundle-"
MANIFEST = "manifest.json"
AUDIT_LOG = "audit/audit_log.jsonl"


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compliance_policy_from(settings: Settings) -> CompliancePolicy:
    """The compliance policy the evaluation assets apply (built from ``settings.evaluation``)."""
    from mlops_assets.evaluation.configured import compliance_policy

    return compliance_policy(settings)


def approval_rules(settings: Settings, approval: ApprovalPolicy) -> dict[str, Any]:
    """Who may approve what, as data (the rules the code enforces; docs/governance.md explains them)."""
    return {
        "four_eyes": "an approval is refused when the reviewer is the owner/registerer of the subject",
        "model": {
            "approve": "any reviewer except the version's `registered_by`",
            "requires": ["version_exists", "not_archived", "not_rejected", "evaluation_passed",
                         *(["compliance_passed"] if settings.evaluation.compliance_required else []),
                         "reviewer_is_not_registerer"],
            "production": f"alias `{settings.model.production_alias}` moves only to an APPROVED version "
                          "whose gates are re-checked at the move (approval sensor or `mlops models promote`)",
            "rollback": "only to a version that served the alias before and is not rejected or archived; "
                        "a reason is required",
            "reject": "anyone, including the registerer (withdrawing needs no second pair of eyes)",
        },
        "prompt": {
            "approve": "any reviewer except the template's `owner` and the person who submitted the version",
            "requires": ["in_review", "content_unchanged_since_submission", "evaluation_passed",
                         "reviewer_is_not_owner", "reviewer_is_not_submitter"],
            "model_checks_required_for_risk_levels": list(approval.model_checks_required_for),
            "production": "approval moves `prompts:/<id>@production` to the approved content",
            "rollback": "only to a version still APPROVED that served production before; "
                        "a reason is required",
            "reject": "anyone; a rejected production prompt is refused by the LLM wrapper at once",
        },
    }


def _decisions(store: GovernanceStore) -> list[dict[str, Any]]:
    subjects = sorted({(e.subject_kind, e.subject_id) for e in R.iter_audit(store)
                       if e.action.startswith("decision.") and e.subject_kind in ("model", "prompt")})
    out = []
    for kind, subject in subjects:
        name, version = split_subject(subject)
        history = store.decision_history(kind, name, version)
        if history:
            out.append({"kind": kind, "name": name, "version": version, "state": history[-1].state.value,
                        "history": [d.to_dict() for d in history]})
    return out


def _files(settings: Settings, store: GovernanceStore, prompt_policy: PromptPolicy, approval: ApprovalPolicy,
           compliance: CompliancePolicy) -> dict[str, str]:
    from mlops_assets.prompts.status import prompt_status

    entries = store.list_audit(limit=None, newest_first=False)
    verification = store.verify_audit()
    return {
        AUDIT_LOG: "".join(json.dumps(e.to_dict(), sort_keys=True) + "\n" for e in entries),
        "audit/verification.json": _json(verification.to_dict()),
        "decisions/decisions.json": _json(_decisions(store)),
        "deployments/models.json": _json([d.to_dict() for d in store.list_deployments(limit=None)]),
        "deployments/prompts.json": _json([d.to_dict() for d in R.deployments(store)]),
        "drift/events.json": _json([d.to_dict() for d in store.list_drift_events(limit=None)]),
        "prompts/evaluations.json": _json([e.to_dict() for e in R.evaluations(store)]),
        "prompts/submissions.json": _json([s.to_dict(with_template=True) for s in R.submissions(store)]),
        "prompts/status.json": _json(prompt_status(settings)),
        "policies/model_gate.json": _json({"metric": settings.model.gate_metric,
                                           "threshold": settings.model.gate_threshold,
                                           "compliance_required": settings.evaluation.compliance_required}),
        "policies/compliance_policy.json": _json(compliance.model_dump(mode="json")),
        "policies/prompt_policy.json": _json(prompt_policy.model_dump(mode="json")),
        "policies/approvals.json": _json(approval_rules(settings, approval)),
    }


def export_bundle(settings: Settings, out_dir: str | Path, *, actor: str = "mlops",
                  prompt_policy: PromptPolicy | None = None, approval_policy: ApprovalPolicy | None = None,
                  compliance_policy: CompliancePolicy | None = None, now: datetime | None = None) -> Path:
    """Write the bundle folder and ``<folder>.zip`` under ``out_dir``; returns the folder."""
    from mlops_assets import stores

    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    root = Path(out_dir) / f"{BUNDLE_PREFIX}{stamp:%Y%m%dT%H%M%SZ}"
    if root.exists() or root.with_suffix(".zip").exists():
        raise FileExistsError(f"{root} already exists; choose another --out directory or wait a second")
    store = stores.governance_store(settings)
    try:
        files = _files(settings, store, prompt_policy or PromptPolicy(), approval_policy or ApprovalPolicy(),
                       compliance_policy or compliance_policy_from(settings))
        head = store.audit_head()
        root.mkdir(parents=True)
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text, encoding="utf-8")
        reports = settings.reports_dir / "evaluation"
        if reports.is_dir():
            shutil.copytree(reports, root / "reports" / "evaluation")
        listed = sorted(p for p in root.rglob("*") if p.is_file())
        manifest = {
            "format": BUNDLE_FORMAT, "created_at": format_ts(stamp), "created_by": actor,
            "audit_head": {"seq": head.seq, "hash": head.hash} if head else None,
            "audit_verified_at_export": json.loads(files["audit/verification.json"])["ok"],
            "files": {p.relative_to(root).as_posix(): {"sha256": _sha256(p.read_bytes()),
                                                       "bytes": p.stat().st_size} for p in listed},
        }
        manifest_text = _json(manifest)
        (root / MANIFEST).write_text(manifest_text, encoding="utf-8")
        _zip(root)
        store.append_audit(actor, "audit.exported", "audit", root.name,
                           {"manifest_sha256": _sha256(manifest_text.encode()), "files": len(listed),
                            "audit_head_seq": head.seq if head else None})
    finally:
        store.close()
    return root


def _zip(root: Path) -> Path:
    target = root.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            archive.write(path, f"{root.name}/{path.relative_to(root).as_posix()}")
    return target


# --- verification -----------------------------------------------------------------------------------


def _read_bundle(path: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file in a bundle folder or zip."""
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1 or any("/" not in n for n in names):
            raise ValueError(f"{path}: a bundle zip holds one top-level folder")
        return {n.split("/", 1)[1]: archive.read(n) for n in names}


def _chain_problems(lines: Iterable[str], head: dict[str, Any] | None) -> list[str]:
    prev, expected, last = GENESIS_HASH, 1, None
    for number, line in enumerate(lines, start=1):
        try:
            e = json.loads(line)
            ts = datetime.fromisoformat(e["ts"])
            digest = entry_hash(e["seq"], ts, e["actor"], e["action"], e["subject_kind"], e["subject_id"],
                                e["details"], e["prev_hash"])
        except (ValueError, KeyError, TypeError) as exc:
            return [f"{AUDIT_LOG} line {number} is not an audit entry ({exc})"]
        if e["seq"] != expected:
            return [f"{AUDIT_LOG}: entry seq {expected} is missing (found seq {e['seq']})"]
        if digest != e["hash"]:
            return [f"{AUDIT_LOG}: entry seq {e['seq']} does not match its hash (edited)"]
        if e["prev_hash"] != prev:
            return [f"{AUDIT_LOG}: entry seq {e['seq']} does not link to entry {expected - 1}"]
        prev, expected, last = e["hash"], expected + 1, e
    if head is not None and (last is None or last["seq"] != head["seq"] or last["hash"] != head["hash"]):
        return [f"{AUDIT_LOG}: the last entry is not the audit head recorded in the manifest "
                f"(seq {head['seq']})"]
    return []


def verify_bundle(path: str | Path) -> tuple[bool, list[str]]:
    """Check a bundle folder or zip (see the module doc); returns ``(ok, problems)``."""
    path = Path(path)
    if not path.exists():
        return False, [f"{path} does not exist"]
    try:
        files = _read_bundle(path)
        manifest = json.loads(files.pop(MANIFEST))
        listed: dict[str, dict[str, Any]] = manifest["files"]
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        return False, [f"{path}: no readable {MANIFEST} ({type(exc).__name__}: {exc})"]
    problems = []
    if manifest.get("format") != BUNDLE_FORMAT:
        problems.append(f"{MANIFEST}: format {manifest.get('format')!r} is not {BUNDLE_FORMAT!r}")
    for rel, meta in sorted(listed.items()):
        if rel not in files:
            problems.append(f"{rel} is listed in the manifest but missing")
        elif _sha256(files[rel]) != meta.get("sha256") or len(files[rel]) != meta.get("bytes"):
            problems.append(f"{rel} does not match its sha256 in the manifest (changed after export)")
    problems += [f"{rel} is not listed in the manifest (added after export)"
                 for rel in sorted(set(files) - set(listed))]
    if AUDIT_LOG in files:
        problems += _chain_problems(files[AUDIT_LOG].decode("utf-8").splitlines(), manifest.get("audit_head"))
    else:
        problems.append(f"{AUDIT_LOG} is missing")
    if manifest.get("audit_verified_at_export") is not True:
        problems.append("the audit log did not verify with its key at export (see audit/verification.json)")
    return not problems, problems


def bundle_summary(path: str | Path) -> dict[str, Any]:
    """The manifest's header (for the CLI): format, created_at, audit head, number of files."""
    manifest = json.loads(_read_bundle(Path(path))[MANIFEST])
    return {k: manifest.get(k) for k in ("format", "created_at", "created_by", "audit_head")} | {
        "files": len(manifest.get("files", {}))}


__all__ = ["BUNDLE_FORMAT", "approval_rules", "bundle_summary", "compliance_policy_from", "export_bundle",
           "verify_bundle"]

"""What the prompt workflow records beyond decisions: submissions, evaluations, production moves.

The governance store's ``decisions`` table holds each template version's state (kind ``prompt``,
name = template id, version = semantic version). Everything else approval depends on is written
as an entry of the store's hash-chained, HMAC'd audit log (subject ``prompt:<id>/<version>``), so
the evidence is tamper-evident and no new table is needed:

* ``prompt.submitted``: the content hash and the full template as submitted (so an old version
  can be diffed, re-registered or shown to an auditor after the file moved on);
* ``prompt.evaluated``: the outcome of one evaluation of one content hash (passed, the failed
  blocking checks, whether the golden set went through the model, the MLflow run);
* ``prompt.production_moved``: the ``production`` alias moved (``kind`` promotion or rollback).

This module names those entries, writes them and reads them back, and finds template files in
the library. It opens nothing itself except through :func:`open_stores`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from mlops_assets.governance.audit import AuditEntry, format_ts
from mlops_assets.prompts.policy import PromptEvaluation
from mlops_assets.prompts.library import (
    TEMPLATE_SUFFIXES,
    PromptLibraryError,
    PromptTemplate,
    content_hash,
    load_template,
    parse_template,
    template_files,
)
from mlops_assets.errors import NotFound

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops_assets.governance.store import GovernanceStore
    from mlops_assets.settings import Settings

KIND = "prompt"
ACTION_SUBMITTED = "prompt.submitted"
ACTION_EVALUATED = "prompt.evaluated"
ACTION_PRODUCTION = "prompt.production_moved"
_PAGE = 200


def subject_id(template_id: str, version: str) -> str:
    return f"{template_id}/{version}"


def split_subject(subject: str) -> tuple[str, str]:
    name, _, version = subject.rpartition("/")
    return name, version


class Stores(NamedTuple):
    """The stores one workflow call works on."""

    settings: Settings
    store: GovernanceStore
    client: MlflowClient


@contextmanager
def open_stores(settings: Settings) -> Iterator[Stores]:
    """The governance store and MLflow client of ``settings``; the store is closed afterwards."""
    from mlops_assets import stores

    store = stores.governance_store(settings)
    try:
        yield Stores(settings, store, stores.mlflow_client(settings))
    finally:
        store.close()


# --- records ---------------------------------------------------------------------------------


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else format_ts(ts)


@dataclass(frozen=True)
class SubmissionRecord:
    """One submission of a template version: who, when, and exactly what content."""

    template_id: str
    version: str
    content_hash: str
    owner: str
    risk_level: str
    actor: str
    ts: datetime
    audit_seq: int
    mlflow_version: int | None
    template: dict[str, Any] = field(repr=False)

    def to_template(self) -> PromptTemplate:
        """The template as submitted (its content hash equals :attr:`content_hash`)."""
        return parse_template(self.template, source=f"audit log entry {self.audit_seq}")

    def to_dict(self, with_template: bool = False) -> dict[str, Any]:
        out = asdict(self)
        out["ts"] = _iso(self.ts)
        if not with_template:
            out.pop("template")
        return out


@dataclass(frozen=True)
class EvaluationRecord:
    """The recorded outcome of one evaluation of one content hash."""

    template_id: str
    version: str
    content_hash: str
    passed: bool
    blocking_failures: list[str]
    model_checks: bool
    risk_level: str
    mlflow_run_id: str | None
    actor: str
    ts: datetime
    audit_seq: int
    checks: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ts"] = _iso(self.ts)
        return out


@dataclass(frozen=True)
class PromptDeployment:
    """A move of a prompt's ``production`` alias (``kind``: promotion or rollback)."""

    template_id: str
    alias: str
    version: str
    mlflow_version: int
    content_hash: str
    previous_version: str | None
    previous_mlflow_version: int | None
    kind: str
    actor: str
    reason: str | None
    ts: datetime
    audit_seq: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ts"] = _iso(self.ts)
        return out


def _submission(entry: AuditEntry) -> SubmissionRecord:
    d = entry.details
    template_id, version = split_subject(entry.subject_id)
    return SubmissionRecord(template_id, version, d["content_hash"], d.get("owner", ""),
                            d.get("risk_level", ""), entry.actor, entry.ts, entry.seq,
                            d.get("mlflow_version"), d.get("template", {}))


def _evaluation(entry: AuditEntry) -> EvaluationRecord:
    d = entry.details
    template_id, version = split_subject(entry.subject_id)
    return EvaluationRecord(template_id, version, d["content_hash"], bool(d["passed"]),
                            list(d.get("blocking_failures", [])), bool(d.get("model_checks", False)),
                            d.get("risk_level", ""), d.get("mlflow_run_id"), entry.actor, entry.ts, entry.seq,
                            list(d.get("checks", [])))


def _deployment(entry: AuditEntry) -> PromptDeployment:
    d = entry.details
    return PromptDeployment(d["template_id"], d["alias"], d["version"], int(d["mlflow_version"]),
                            d["content_hash"], d.get("previous_version"), d.get("previous_mlflow_version"),
                            d["kind"], entry.actor, d.get("reason"), entry.ts, entry.seq)


# --- writing -----------------------------------------------------------------------------------


def record_submission(store: GovernanceStore, template: PromptTemplate, *, actor: str,
                      mlflow_version: int | None = None, comment: str | None = None) -> SubmissionRecord:
    details = {"content_hash": content_hash(template), "owner": template.owner,
               "risk_level": template.risk_level, "mlflow_version": mlflow_version, "comment": comment,
               "file": Path(template.source).name if template.source else None,
               "template": template.model_dump(mode="json")}
    entry = store.append_audit(actor, ACTION_SUBMITTED, KIND, subject_id(template.id, template.version),
                               details)
    return _submission(entry)


def record_evaluation(store: GovernanceStore, evaluation: PromptEvaluation, *, actor: str,
                      mlflow_run_id: str | None) -> EvaluationRecord:
    details = {
        "content_hash": evaluation.content_hash, "passed": evaluation.passed,
        "blocking_failures": [c.name for c in evaluation.blocking_failures],
        "model_checks": bool(evaluation.cases), "risk_level": evaluation.risk_level,
        "mlflow_run_id": mlflow_run_id, "scorers": dict(evaluation.scorers),
        "checks": [{"name": c.name, "passed": c.passed, "blocking": c.blocking} for c in evaluation.checks],
    }
    entry = store.append_audit(actor, ACTION_EVALUATED, KIND,
                               subject_id(evaluation.template_id, evaluation.version), details)
    return _evaluation(entry)


def record_deployment(store: GovernanceStore, *, template_id: str, version: str, mlflow_version: int,
                      content_hash: str, previous_version: str | None, previous_mlflow_version: int | None,
                      kind: str, actor: str, reason: str | None, alias: str) -> PromptDeployment:
    details = {"template_id": template_id, "alias": alias, "version": version,
               "mlflow_version": int(mlflow_version), "content_hash": content_hash,
               "previous_version": previous_version, "previous_mlflow_version": previous_mlflow_version,
               "kind": kind, "reason": reason}
    entry = store.append_audit(actor, ACTION_PRODUCTION, KIND, subject_id(template_id, version), details)
    return _deployment(entry)


# --- reading -----------------------------------------------------------------------------------


def iter_audit(store: GovernanceStore, **filters: Any) -> Iterator[AuditEntry]:
    """Audit entries matching ``filters`` (see ``GovernanceStore.list_audit``), newest first, paged."""
    offset = 0
    while True:
        page = store.list_audit(limit=_PAGE, offset=offset, **filters)
        yield from page
        if len(page) < _PAGE:
            return
        offset += _PAGE


def latest_submission(store: GovernanceStore, template_id: str, version: str) -> SubmissionRecord | None:
    found = store.list_audit(limit=1, subject_kind=KIND, subject_id=subject_id(template_id, version),
                             action=ACTION_SUBMITTED)
    return _submission(found[0]) if found else None


def submissions(store: GovernanceStore, template_id: str | None = None) -> list[SubmissionRecord]:
    """Every submission (of one template, or all), newest first."""
    records = (_submission(e) for e in iter_audit(store, subject_kind=KIND, action=ACTION_SUBMITTED))
    return [r for r in records if template_id is None or r.template_id == template_id]


def evaluations(store: GovernanceStore, template_id: str | None = None,
                version: str | None = None) -> list[EvaluationRecord]:
    """Recorded evaluations, newest first (of one version, one template, or all)."""
    filters: dict[str, Any] = {"subject_kind": KIND, "action": ACTION_EVALUATED}
    if template_id is not None and version is not None:
        filters["subject_id"] = subject_id(template_id, version)
    records = (_evaluation(e) for e in iter_audit(store, **filters))
    return [r for r in records if template_id is None or r.template_id == template_id]


def latest_evaluation(store: GovernanceStore, template_id: str, version: str,
                      content_hash: str | None = None) -> EvaluationRecord | None:
    """The newest evaluation of that version (of that exact content, when ``content_hash`` is given)."""
    for entry in iter_audit(store, subject_kind=KIND, subject_id=subject_id(template_id, version),
                            action=ACTION_EVALUATED):
        if content_hash is None or entry.details.get("content_hash") == content_hash:
            return _evaluation(entry)
    return None


def deployments(store: GovernanceStore, template_id: str | None = None) -> list[PromptDeployment]:
    """Moves of the production alias (of one template, or all), newest first."""
    records = (_deployment(e) for e in iter_audit(store, subject_kind=KIND, action=ACTION_PRODUCTION))
    return [r for r in records if template_id is None or r.template_id == template_id]


# --- the library ---------------------------------------------------------------------------------


def find_template(directory: str | Path, template_id: str) -> PromptTemplate:
    """The template with ``template_id`` in the library (``<id>.yaml`` first, then any file)."""
    directory = Path(directory)
    for suffix in TEMPLATE_SUFFIXES:
        path = directory / f"{template_id}{suffix}"
        if path.is_file():
            template = load_template(path)
            if template.id == template_id:
                return template
    for path in template_files(directory):
        try:
            template = load_template(path)
        except PromptLibraryError:
            continue
        if template.id == template_id:
            return template
    raise NotFound("template_id", f"no prompt template with id {template_id!r} in the prompt library",
                   hint="check the id (`mlops prompts list`) or the prompts_dir setting")


@dataclass(frozen=True)
class LibraryScan:
    """Content hash and file of every loadable template, and a line per file that did not load."""

    hashes: dict[str, str]
    files: dict[str, str]
    problems: list[str]


def scan_library(directory: str | Path) -> LibraryScan:
    """Fingerprint the library: template id -> content hash (a broken file is reported, not raised)."""
    hashes: dict[str, str] = {}
    files: dict[str, str] = {}
    problems: list[str] = []
    try:
        paths = template_files(directory)
    except PromptLibraryError as exc:
        return LibraryScan({}, {}, [str(exc)])
    for path in paths:
        try:
            template = load_template(path)
        except PromptLibraryError as exc:
            problems.append(str(exc))
            continue
        if template.id in hashes:
            problems.append(f"{path}: id {template.id!r} is already used by {files[template.id]}; skipped")
            continue
        hashes[template.id] = content_hash(template)
        files[template.id] = path.name
    return LibraryScan(hashes, files, problems)


def changed_templates(previous: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """Ids that are new in ``current`` or whose content hash differs from ``previous``, sorted."""
    return sorted(tid for tid, digest in current.items() if previous.get(tid) != digest)

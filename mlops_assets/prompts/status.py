"""Read-only views of the prompt workflow: status of every template version, diffs, the production template.

``prompt_status`` joins the library files, the governance store (decisions, submissions,
evaluations, production moves) and the MLflow prompt registry (versions, the ``production``
alias) into one row per template version. ``diff_prompt`` shows what changed between two versions:
the library file for the version it holds, the submitted content (from the audit log) for others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_assets.prompts import records as R
from mlops_assets.prompts.records import KIND, Stores, find_template, open_stores, split_subject
from mlops_assets.prompts.registry import (RegisteredPrompt, current_alias_version,
                                                     get_prompt_version, list_prompt_versions)
from mlops_assets.prompts.library import (PromptLibraryError, PromptTemplate, content_hash, diff_templates,
                                             load_template, template_files)
from mlops_assets.governance.records import GovernanceError
from mlops_assets.models.tags import ALIAS_PRODUCTION

if TYPE_CHECKING:
    from mlops_assets.settings import Settings


def _library(settings: Settings) -> dict[str, PromptTemplate]:
    """Loadable templates of the library by id (broken files are left to ``mlops prompts check``)."""
    out: dict[str, PromptTemplate] = {}
    try:
        paths = template_files(settings.prompts_dir)
    except PromptLibraryError:
        return out
    for path in paths:
        try:
            template = load_template(path)
        except PromptLibraryError:
            continue
        out.setdefault(template.id, template)
    return out


def template_at(s: Stores, template_id: str, version: str) -> PromptTemplate:
    """``template_id`` at ``version``: the library file if it holds that version, else what was submitted."""
    try:
        current = find_template(s.settings.prompts_dir, template_id)
    except (GovernanceError, PromptLibraryError):
        current = None
    if current is not None and current.version == str(version):
        return current
    submission = R.latest_submission(s.store, template_id, str(version))
    if submission is None:
        raise GovernanceError(f"prompt {template_id} version {version} is not in the library and was never "
                              "submitted, so its content is unknown", field="version")
    return submission.to_template()


def diff_prompt(settings: Settings, template_id: str, v1: str, v2: str) -> str:
    """Unified diff of the template text from ``v1`` to ``v2``, then every other field that changed."""
    with open_stores(settings) as s:
        return diff_templates(template_at(s, template_id, v1), template_at(s, template_id, v2))


def production_prompt(s: Stores, template_id: str, alias: str = ALIAS_PRODUCTION) -> RegisteredPrompt | None:
    version = current_alias_version(s.client, template_id, alias)
    return None if version is None else get_prompt_version(s.client, template_id, version)


def production_template(s: Stores, template_id: str, alias: str = ALIAS_PRODUCTION) -> PromptTemplate | None:
    """The full template ``production`` serves (from its submission record), or None when there is none."""
    prod = production_prompt(s, template_id, alias)
    if prod is None:
        return None
    for submission in R.submissions(s.store, template_id):
        if submission.content_hash == prod.content_hash:
            return submission.to_template()
    return None


def _versions(s: Stores, library: dict[str, PromptTemplate]) -> dict[str, dict[str, list[RegisteredPrompt]]]:
    """template id -> semantic version -> its MLflow versions (possibly none)."""
    out: dict[str, dict[str, list[RegisteredPrompt]]] = {}
    for template in library.values():
        out.setdefault(template.id, {}).setdefault(template.version, [])
    for entry in R.iter_audit(s.store, subject_kind=KIND):
        template_id, version = split_subject(entry.subject_id)
        out.setdefault(template_id, {}).setdefault(version, [])
    for template_id, versions in out.items():
        for registered in list_prompt_versions(s.client, template_id):
            if registered.semver:
                versions.setdefault(registered.semver, []).append(registered)
    return out


def _semver_key(version: str) -> tuple:
    core = version.split("+")[0].split("-")[0].split(".")
    return tuple(int(p) if p.isdigit() else 0 for p in core), version


def prompt_status(settings: Settings) -> list[dict[str, Any]]:
    """One row per template version: state, production?, content hashes, MLflow versions, last evaluation."""
    library = _library(settings)
    rows = []
    with open_stores(settings) as s:
        for template_id, versions in sorted(_versions(s, library).items()):
            prod = production_prompt(s, template_id)
            for version in sorted(versions, key=_semver_key):
                file_template = library.get(template_id)
                in_library = file_template is not None and file_template.version == version
                file_hash = content_hash(file_template) if in_library and file_template else None
                decision = s.store.latest_decision(KIND, template_id, version)
                submission = R.latest_submission(s.store, template_id, version)
                digest = submission.content_hash if submission else file_hash
                evaluation = R.latest_evaluation(s.store, template_id, version, digest) if digest else None
                registered = versions[version]
                rows.append({
                    "template_id": template_id,
                    "version": version,
                    "state": decision.state.value if decision else None,
                    "production": prod is not None and prod.semver == version and
                                  (submission is None or prod.content_hash == submission.content_hash),
                    "in_library": in_library,
                    "owner": (file_template.owner if in_library and file_template
                              else submission.owner if submission else None),
                    "risk_level": (file_template.risk_level if in_library and file_template
                                   else submission.risk_level if submission else None),
                    "content_hash": file_hash,
                    "submitted_content_hash": submission.content_hash if submission else None,
                    "content_changed_since_submission": bool(in_library and submission and
                                                              file_hash != submission.content_hash),
                    "mlflow_versions": [r.mlflow_version for r in registered],
                    "decided_by": decision.actor if decision else None,
                    "decided_at": decision.ts.isoformat() if decision else None,
                    "last_evaluation": None if evaluation is None else {
                        "passed": evaluation.passed, "blocking_failures": evaluation.blocking_failures,
                        "model_checks": evaluation.model_checks, "mlflow_run_id": evaluation.mlflow_run_id,
                        "ts": evaluation.ts.isoformat()},
                })
    return rows
